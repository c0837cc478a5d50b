"""Rejection sampling (best-of-N): TRL has none, so this is ours.

For each prompt of a JSONL file, sample `num_samples` completions from a model (a full model or a
LoRA adapter directory), score them with reward models and/or Python reward functions (the reward
sources of online RL, utils/model/rewards.py), and write to `output_dir`:

    samples.jsonl   one line per completion: index, sample, prompt, completion, score, rewards
    best.jsonl      prompt + completion, the best completion per prompt   -> --rlhf_type SFT
    pairs.jsonl     prompt / chosen / rejected, best vs worst              -> --rlhf_type DPO
    summary.json    the score distribution (also printed)

    python -m utils.rejection_sampling --model_name_or_path MODEL --train_data_path prompts.jsonl \
        --reward_funcs my_rewards.py:correct --num_samples 8 --max_new_tokens 256 --output_dir runs/rs

Resumable: run the same command again after an interruption. `samples.jsonl` is the record:
whole prompts (all their lines) that reached it are kept, a torn last line or a prompt cut short is
dropped, `best.jsonl` / `pairs.jsonl` are rebuilt from it, and sampling goes on with the rest.
Prompts are sampled in fixed chunks of `batch_size`, each seeded from `seed` and its position, so
the result does not depend on where a run was interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from utils.sampling import generation
from utils.core.errors import CommandParser, UserError, run_command
from utils.model.rewards import as_completion, source_names, weighted_scores
from utils.sampling.sample_files import Outputs, print_summary, summarize


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser("python -m utils.rejection_sampling", __doc__)
    p.add_argument("--model_name_or_path", required=True, help="Model to sample from, or a LoRA adapter directory.")
    p.add_argument("--base_model_name_or_path", help="Base of a LoRA adapter (default: the one its config names).")
    p.add_argument("--train_data_path", required=True, help="JSONL of prompts (`prompt`; other columns go to "
                                                            "reward functions).")
    p.add_argument("--output_dir", required=True)
    generation.add_sampling_args(p, "Completions per prompt (N of best-of-N).", "Load the sampled model in 4-bit NF4.")
    p.add_argument("--min_score", type=float, default=None, help="best.jsonl keeps a prompt only if its best "
                                                                 "score is at least this.")
    p.add_argument("--min_margin", type=float, default=0.0, help="pairs.jsonl keeps a prompt only if best - worst "
                                                                 "is at least this (and above 0).")
    p.add_argument("--max_prompts", type=int, default=None, help="Stop after this many new prompts (resume later).")
    p.add_argument("--overwrite", action="store_true", help="Start over in an output_dir that holds another run.")
    a = p.parse_args(argv)
    generation.check_sampling_args(a, "num_samples", "max_new_tokens", "batch_size")
    if not os.path.exists(a.train_data_path):
        raise UserError(f"--train_data_path {a.train_data_path!r} does not exist.")
    from utils.cli.args import check_paths

    check_paths({"model_name_or_path": a.model_name_or_path, "reward_model_path": a.reward_model_path,
                 "output_dir": a.output_dir, "load_in_4bit": a.load_in_4bit})
    generation.check_adapter_base(a.model_name_or_path, a.base_model_name_or_path, "--model_name_or_path",
                                  "Pass the base with --base_model_name_or_path PATH.")
    return a


# ------------------------------------------------------------------------------------------ model
def model_paths(args) -> tuple[str, str]:
    """(base model, tokenizer) paths (utils/sampling/generation.py)."""
    return generation.model_paths(args.model_name_or_path, args.base_model_name_or_path)


def load_policy(args, tokenizer, dtype):
    """The model to sample from (full, 4-bit, or base + LoRA adapter), on the GPU when there is one."""
    return generation.load_policy(args.model_name_or_path, tokenizer, dtype,
                                  base_override=args.base_model_name_or_path, load_in_4bit=args.load_in_4bit,
                                  trust_remote_code=args.trust_remote_code)


# ------------------------------------------------------------------------------------------- main
def run(args) -> dict:
    import torch
    from tqdm.auto import tqdm

    from utils.data.loading import load_dataset_checked
    from utils.model.dtype import resolve_dtype
    from utils.model.loading import load_tokenizer
    from utils.model.rewards import check_reward_sources

    # Check phase (no weights): the data with the tokenizer, the reward functions, reward-model tokenizers.
    tokenizer = load_tokenizer(model_paths(args)[1], args.trust_remote_code)
    tokenizer.padding_side = "left"  # generation continues the prompts' last tokens
    from utils.model.vision import is_vlm, load_processor

    base, where = model_paths(args)
    processor = load_processor(where, args.trust_remote_code) if is_vlm(base) else None  # prompts with images
    data = load_dataset_checked(args.train_data_path, "prompt", tokenizer, what="train_data_path", processor=processor)
    from utils.cli.vision_checks import refuse_images_for_text_model

    refuse_images_for_text_model(data, processor, base, "train_data_path")
    checked = check_reward_sources(args.reward_model_path, args.reward_funcs, args.reward_weights,
                                   args.trust_remote_code)
    outputs = Outputs(args)
    dtype = resolve_dtype(args.dtype)
    sources = checked.build(dtype)
    names = source_names(sources)
    weights = args.reward_weights or [1.0] * len(sources)
    todo = [i for i in range(len(data)) if i not in outputs.groups]
    if args.max_prompts is not None:
        todo = todo[:args.max_prompts]
    if todo:
        model = load_policy(args, tokenizer, dtype)
        if torch.cuda.is_available():
            sources = [s.to("cuda") if hasattr(s, "to") else s for s in sources]
    extra = [c for c in data.column_names if c != "prompt"]
    bar = tqdm(total=len(todo), unit="prompt", desc="sampling", file=sys.stderr)
    try:
        chunks = sorted({i // args.batch_size for i in todo})
        wanted = set(todo)
        for chunk in chunks:  # a chunk is always the same prompts with the same seed, resumed or not
            idx = list(range(chunk * args.batch_size, min((chunk + 1) * args.batch_size, len(data))))
            rows = data.select(idx)
            chunk_prompts = list(rows["prompt"])
            groups = generation.sample(model, tokenizer, chunk_prompts, args, seed=args.seed * 1_000_003 + chunk,
                                       processor=processor, images=rows["images"] if "images" in extra else None)
            n = args.num_samples
            prompts = [p for p in chunk_prompts for _ in range(n)]
            completions = [as_completion(c, p) for p, g in zip(chunk_prompts, groups) for c in g]
            columns = {c: [v for v in rows[c] for _ in range(n)] for c in extra}
            totals, details = weighted_scores(sources, names, weights, prompts, completions, columns)
            for k, i in enumerate(idx):
                if i not in wanted:
                    continue
                shown = {"images": columns["images"][k * n]} if "images" in columns else {}
                outputs.add(i, [{"index": i, "sample": j, "prompt": prompts[s], "completion": completions[s],
                                 "score": None if math.isnan(totals[s]) else totals[s], "rewards": details[s], **shown}
                                for j, s in enumerate(range(k * n, (k + 1) * n))])
                bar.update(1)
    finally:
        bar.close()
        outputs.close()
    summary = summarize(outputs, len(data))
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print_summary(summary, args.output_dir)
    return summary


def main(argv: list[str] | None = None) -> int:
    return run_command(lambda a: run(parse_args(a)), sys.argv[1:] if argv is None else argv)
