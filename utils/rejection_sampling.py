"""Rejection sampling (best-of-N): TRL has none, so this is ours.

For each prompt of a JSONL file, sample `num_samples` completions from a model (a full model or a
LoRA adapter directory), score them with reward models and/or Python reward functions (the reward
sources of online RL, utils/rewards.py), and write to `output_dir`:

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

from utils.errors import CommandParser, UserError, run_command
from utils.models import DTYPE_HELP, DTYPES
from utils.sample_files import Outputs, print_summary, summarize


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser("python -m utils.rejection_sampling", __doc__)
    p.add_argument("--model_name_or_path", required=True, help="Model to sample from, or a LoRA adapter directory.")
    p.add_argument("--base_model_name_or_path", help="Base of a LoRA adapter (default: the one its config names).")
    p.add_argument("--train_data_path", required=True, help="JSONL of prompts (`prompt`; other columns go to "
                                                            "reward functions).")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--reward_model_path", nargs="*", default=[], help="Reward model(s), each with its own tokenizer.")
    p.add_argument("--reward_funcs", nargs="*", default=[], help="module:function or path/file.py:function.")
    p.add_argument("--reward_weights", nargs="*", type=float, default=None,
                   help="One weight per reward source (models first); score = weighted sum. Default: all 1.")
    p.add_argument("--num_samples", type=int, default=4, help="Completions per prompt (N of best-of-N).")
    p.add_argument("--max_new_tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0, help="0 = off: sample from the whole distribution.")
    p.add_argument("--batch_size", type=int, default=8, help="Prompts per generate call (x num_samples sequences).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min_score", type=float, default=None, help="best.jsonl keeps a prompt only if its best "
                                                                 "score is at least this.")
    p.add_argument("--min_margin", type=float, default=0.0, help="pairs.jsonl keeps a prompt only if best - worst "
                                                                 "is at least this (and above 0).")
    p.add_argument("--max_prompts", type=int, default=None, help="Stop after this many new prompts (resume later).")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help=DTYPE_HELP)
    p.add_argument("--load_in_4bit", action="store_true", help="Load the sampled model in 4-bit NF4.")
    p.add_argument("--trust_remote_code", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="Start over in an output_dir that holds another run.")
    a = p.parse_args(argv)
    if a.num_samples < 1 or a.max_new_tokens < 1 or a.batch_size < 1:
        raise UserError("--num_samples, --max_new_tokens and --batch_size must be at least 1.")
    if a.temperature <= 0:
        raise UserError(f"--temperature must be > 0, got {a.temperature} (sampling is what makes N answers differ).")
    if not (a.reward_model_path or a.reward_funcs):
        raise UserError("No reward source: give --reward_model_path PATH [PATH ...] and/or --reward_funcs "
                        "module:function [...].")
    if not os.path.exists(a.train_data_path):
        raise UserError(f"--train_data_path {a.train_data_path!r} does not exist.")
    from utils.cli import check_paths

    check_paths({"model_name_or_path": a.model_name_or_path, "reward_model_path": a.reward_model_path,
                 "output_dir": a.output_dir})
    return a


# ------------------------------------------------------------------------------------------ model
def model_paths(args) -> tuple[str, str]:
    """(base model, tokenizer) paths. An adapter directory is loaded onto the base its config names; one saved
    by main_train holds the tokenizer it was trained with."""
    path = base = args.model_name_or_path
    adapter_config = os.path.join(path, "adapter_config.json")
    if os.path.isfile(adapter_config):
        with open(adapter_config) as f:
            base = args.base_model_name_or_path or json.load(f).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{adapter_config} names no base model; pass --base_model_name_or_path.")
    return base, path if os.path.isfile(os.path.join(path, "tokenizer_config.json")) else base


def load_policy(args, tokenizer, dtype):
    """The model to sample from (full, 4-bit, or base + LoRA adapter), on the GPU when there is one."""
    import torch

    from utils.models import load_model

    base, _ = model_paths(args)
    model = load_model(base, tokenizer, dtype=dtype, load_in_4bit=args.load_in_4bit,
                       trust_remote_code=args.trust_remote_code)
    if base != args.model_name_or_path:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.model_name_or_path)
    if not args.load_in_4bit and torch.cuda.is_available():
        model.to("cuda")
    return model.eval()


def render(prompt, tokenizer) -> tuple[str, bool]:
    """Prompt text to generate from, and whether special tokens are already in it (a chat template's)."""
    if isinstance(prompt, list):
        if tokenizer.chat_template is None:
            raise UserError("The prompts are conversations but the model's tokenizer has no chat template; use "
                            "plain-string prompts or a tokenizer with a chat template.")
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False), True
    return prompt, False


def sample(model, tokenizer, prompts: list, args, seed: int) -> list[list[str]]:
    """`num_samples` completions (text, cut at the first EOS) for each prompt."""
    import torch

    with torch.no_grad():
        return _sample(model, tokenizer, prompts, args, seed)


def _sample(model, tokenizer, prompts: list, args, seed: int) -> list[list[str]]:
    import torch

    texts = [render(p, tokenizer) for p in prompts]
    templated = texts[0][1]
    enc = tokenizer([t for t, _ in texts], return_tensors="pt", padding=True,
                    add_special_tokens=not templated).to(next(model.parameters()).device)
    torch.manual_seed(seed)
    out = model.generate(**enc, do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                         max_new_tokens=args.max_new_tokens, num_return_sequences=args.num_samples,
                         pad_token_id=tokenizer.pad_token_id)
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [tokenizer.eos_token_id])
    completions = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        completions.append(tokenizer.decode(row[:cut], skip_special_tokens=True))
    n = args.num_samples
    return [completions[i * n:(i + 1) * n] for i in range(len(prompts))]


# ---------------------------------------------------------------------------------------- scoring
def source_names(sources) -> list[str]:
    names = []
    for s in sources:
        name = getattr(s, "__name__", "reward")
        names.append(name if name not in names else f"{name}_{len(names)}")
    return names


def score(sources, names, weights, prompts, completions, columns: dict) -> tuple[list, list[dict]]:
    """Weighted sum of every source (NaN where a source returns None is skipped), and each source's values."""
    per_source = {name: src(prompts=prompts, completions=completions, **columns) for name, src in zip(names, sources)}
    totals, details = [], []
    for i in range(len(completions)):
        values = {name: per_source[name][i] for name in names}
        finite = [w * v for w, v in zip(weights, values.values()) if not math.isnan(v)]
        totals.append(sum(finite) if finite else math.nan)
        details.append({k: (None if math.isnan(v) else v) for k, v in values.items()})
    return totals, details


def _as_completion(text: str, prompt):
    """Conversational prompts keep conversational answers (what SFT / DPO rows and reward functions expect)."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


# ------------------------------------------------------------------------------------------- main
def run(args) -> dict:
    import torch
    from tqdm.auto import tqdm

    from utils.data import load_dataset_checked
    from utils.models import load_tokenizer, resolve_dtype
    from utils.rewards import check_reward_sources

    # Check phase (no weights): the data with the tokenizer, the reward functions, reward-model tokenizers.
    tokenizer = load_tokenizer(model_paths(args)[1], args.trust_remote_code)
    tokenizer.padding_side = "left"  # generation continues the prompts' last tokens
    data = load_dataset_checked(args.train_data_path, "prompt", tokenizer, what="train_data_path")
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
            groups = sample(model, tokenizer, chunk_prompts, args, seed=args.seed * 1_000_003 + chunk)
            n = args.num_samples
            prompts = [p for p in chunk_prompts for _ in range(n)]
            completions = [_as_completion(c, p) for p, g in zip(chunk_prompts, groups) for c in g]
            columns = {c: [v for v in rows[c] for _ in range(n)] for c in extra}
            totals, details = score(sources, names, weights, prompts, completions, columns)
            for k, i in enumerate(idx):
                if i not in wanted:
                    continue
                outputs.add(i, [{"index": i, "sample": j, "prompt": prompts[s], "completion": completions[s],
                                 "score": None if math.isnan(totals[s]) else totals[s], "rewards": details[s]}
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


if __name__ == "__main__":
    from utils.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])
    sys.exit(main())
