"""Evaluate what training bought: a model against the model it started from, on held-out prompts.

    python -m utils.evaluate --model_name_or_path runs/dpo --eval_data_path prompts.jsonl \
        --reward_funcs my_rewards.py:correct --num_samples 4 --max_new_tokens 256 --output_dir runs/dpo_eval
    bash script/eval_run.sh ARGS          # the same through accelerate launch (NPROC processes)

`--model_name_or_path` is a model, or a LoRA adapter directory loaded on its base; `--baseline_model_name_or_path`
defaults to that base (a full model needs it). For each prompt, `--num_samples` completions from each side, with
the same sampling settings and the same seed, scored by the reward sources of online RL (`--reward_model_path`,
each with its own tokenizer; `--reward_funcs`; `--reward_weights`). Reported, with 95 % intervals (percentile
bootstrap over prompts, `--bootstrap` resamples, seeded): mean reward of each side; the win rate of the model over
the baseline (per prompt, the mean over all model x baseline sample pairs, a tie counting half); the per-token
KL(model || baseline) on the model's samples; completion lengths and the share that hit `--max_new_tokens`
without EOS; for preference files (`prompt`, `chosen`, `rejected`) also the reward sources' pairwise accuracy and
the model's implied DPO reward accuracy (`--beta`). Writes eval.json, eval_samples.jsonl and report.md (with
rewards.png) to `--output_dir` and prints the table.

Several processes each take a contiguous share of the prompt batches and rank 0 writes what all gathered: each
batch of `--batch_size` prompts is sampled with the seed of its first prompt, so the numbers equal a one-process
run's. `main_train.py ... --evaluate_after true --eval_prompts_path FILE` runs this on the final model against
the starting model and writes it to OUTPUT_DIR/eval.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from utils.sampling import generation
from utils.sampling.tool_loop import check_tools
from utils.cli.vision_checks import refuse_images_for_text_model
from utils.core.errors import CommandParser, UserError, run_command


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = CommandParser("python -m utils.evaluate", __doc__)
    p.add_argument("--model_name_or_path", required=True, help="The trained model, or a LoRA adapter directory.")
    p.add_argument("--base_model_name_or_path", help="Base of a LoRA adapter (default: the one its config names).")
    p.add_argument("--baseline_model_name_or_path", help="The model to compare with (default: the base the "
                                                         "adapter was trained from; required for full models).")
    p.add_argument("--eval_data_path", required=True, help="Prompts (`prompt`; other columns go to reward "
                                                           "functions), or preference rows (prompt/chosen/rejected).")
    p.add_argument("--output_dir", required=True)
    generation.add_sampling_args(p, "Completions per prompt from each side.", "Load both models in 4-bit NF4.")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta of the implied reward (preference data).")
    p.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the 95 %% intervals.")
    p.add_argument("--tools", nargs="*", default=[], help="Tools both sides may call while they answer, as "
                                                          "`module:function` or `path/file.py:function` (docs/agents.md).")
    p.add_argument("--max_tool_calling_iterations", type=int, default=4,
                   help="With --tools: rounds of tool calls per sample; each turn gets --max_new_tokens.")
    p.add_argument("--tool_timeout", type=float, default=30.0, help="With --tools: seconds a call may run.")
    a = p.parse_args(argv)
    generation.check_sampling_args(a, "num_samples", "max_new_tokens", "batch_size", "bootstrap",
                                   "max_tool_calling_iterations")
    if a.tool_timeout <= 0:
        raise UserError(f"--tool_timeout must be > 0 seconds, got {a.tool_timeout}.")
    if a.beta <= 0:
        raise UserError(f"--beta must be > 0, got {a.beta}.")
    return a


# ------------------------------------------------------------------------------------ check phase
@dataclass
class Side:
    path: str
    base: str | None  # an adapter's base given explicitly (else the one its config names)
    tokenizer: object
    processor: object = None  # a vision-language model's: its prompts are sampled with their images


@dataclass
class Plan:
    """Everything checked (no weights read): what run() needs."""

    args: argparse.Namespace
    model: Side
    baseline: Side
    data: object  # datasets.Dataset of prompt rows
    preference: bool  # rows also have chosen / rejected
    rewards: object  # utils.model.rewards.RewardSources
    same_vocab: bool  # KL and implied rewards need one tokenizer
    tools: list | None = None  # --tools, imported and checked (utils/sampling/tool_loop.py calls them)
    images: bool = False  # the prompts have images (vision-language models)

    @property
    def kl(self) -> bool:
        """The KL is computed: one vocabulary, and completions the model wrote alone (no tool results in them), from
        prompts without images (the log-probs are scored on text alone)."""
        return self.same_vocab and not self.tools and not self.images


def check(a: argparse.Namespace, model_tokenizer=None, baseline_tokenizer=None, rewards=None,
          what: str = "eval_data_path") -> Plan:
    """Paths, adapter bases, every data row, tokenizers, reward sources. `model_tokenizer` given: the model is
    still to be trained (main_train --evaluate_after), so its path is not checked. `what`: the data's flag."""
    from utils.cli.args import check_paths
    from utils.model.checks import check_model_dir
    from utils.model.loading import load_tokenizer
    from utils.model.rewards import check_reward_sources

    trc = a.trust_remote_code
    check_paths({"reward_model_path": a.reward_model_path, "output_dir": a.output_dir,
                 **({} if model_tokenizer else {"model_name_or_path": a.model_name_or_path,
                                                "load_in_4bit": a.load_in_4bit})})
    for flag in ("base_model_name_or_path", "baseline_model_name_or_path"):
        if getattr(a, flag):
            check_model_dir(getattr(a, flag), f"--{flag}")
    base = None
    if model_tokenizer is None:
        generation.check_adapter_base(a.model_name_or_path, a.base_model_name_or_path, "--model_name_or_path",
                                      "Pass the base with --base_model_name_or_path PATH.")
        base = generation.adapter_base(a.model_name_or_path, a.base_model_name_or_path)
    baseline = a.baseline_model_name_or_path or base
    if baseline is None:
        raise UserError(f"--baseline_model_name_or_path is required: --model_name_or_path {a.model_name_or_path!r} "
                        "is a full model (no adapter_config.json), so there is no base it was trained from to compare "
                        "with; pass the model its training started from.")
    generation.check_adapter_base(baseline, None, "--baseline_model_name_or_path",
                                  "Merge it into a full model first (python -m utils.merge).")
    model_tokenizer = model_tokenizer or load_tokenizer(generation.model_paths(a.model_name_or_path, base)[1], trc)
    baseline_tokenizer = baseline_tokenizer or load_tokenizer(generation.model_paths(baseline)[1], trc)
    processors = [_processor(p, trc) for p in ((a.model_name_or_path, base), (baseline, None))]
    data, preference = _load(a.eval_data_path, model_tokenizer, what, processors[0])
    if not _same_tokenizer(model_tokenizer, baseline_tokenizer):  # the baseline's chat template renders them too
        _load(a.eval_data_path, baseline_tokenizer, what, processors[1])
    for side, processor in zip((base or a.model_name_or_path, baseline), processors):
        refuse_images_for_text_model(data, processor, side, what)
    rewards = rewards or check_reward_sources(a.reward_model_path, a.reward_funcs, a.reward_weights, trc)
    same_vocab = model_tokenizer.get_vocab() == baseline_tokenizer.get_vocab()
    return Plan(a, Side(a.model_name_or_path, a.base_model_name_or_path, model_tokenizer, processors[0]),
                Side(baseline, None, baseline_tokenizer, processors[1]), data, preference, rewards, same_vocab,
                check_tools(a, preference, data, model_tokenizer, baseline_tokenizer),
                "images" in data.column_names and any(data["images"]))


def _processor(paths: tuple, trust_remote_code: bool):
    """A vision-language model's processor (from beside an adapter when saved there), else None."""
    from utils.model.vision import is_vlm, load_processor

    path, base = paths
    base, where = generation.model_paths(path, base)
    return load_processor(where, trust_remote_code) if is_vlm(base) else None


def _load(path: str, tokenizer, what: str, processor=None):
    """(dataset, whether it holds preference pairs): prompt rows, or preference rows (their prompts are sampled
    from; chosen / rejected give the pairwise accuracies), checked as such."""
    from utils.data.loading import check_rows, prepare
    from utils.data.formats import DataOptions

    options, not_prompts = DataOptions(), None
    try:  # read once without the tokenizer; rendered and counted once, as what it turned out to be
        rows = check_rows(path, "prompt", what, options)
    except UserError as e:  # perhaps a preference format without a `prompt` field of its own
        rows, not_prompts = None, e
    if rows is not None and not {"chosen", "rejected"} <= set(rows.columns):
        return prepare(path, "prompt", tokenizer, what, options, rows=rows, processor=processor)[1], False
    try:
        return prepare(path, "preference", tokenizer, what, options, processor=processor)[1], True
    except UserError:
        if not_prompts is not None:
            raise not_prompts from None
        raise


def _same_tokenizer(a, b) -> bool:
    return a is b or (a.get_vocab() == b.get_vocab() and a.chat_template == b.chat_template)


# -------------------------------------------------------------------------------------- build phase
def _world() -> tuple[int, int]:
    """(rank, world size): the process group of a training run, or one started here under accelerate launch."""
    import torch
    import torch.distributed as dist

    from utils.core.distributed import launched

    if dist.is_available() and not dist.is_initialized() and launched() and int(os.environ["WORLD_SIZE"]) > 1:
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(records: list, error: str | None, world: int) -> list:
    """Every process's records, in prompt order, on every process; a mistake on any process stops all of them."""
    if world > 1:
        import torch.distributed as dist

        parts = [None] * world
        dist.all_gather_object(parts, (records, error))
        error = next((e for _, e in parts if e), None)
        records = [r for part, _ in parts for r in part]
    if error:
        raise UserError(error)
    return sorted(records, key=lambda r: r["index"])


def run(plan: Plan) -> dict:
    """Sample, score, gather; rank 0 writes the files and prints the table. Returns eval.json's content."""
    import torch

    from utils.evaluation import sides as eval_side
    from utils.evaluation.report import write_outputs
    from utils.evaluation.stats import summarize

    a = plan.args
    rank, world = _world()
    n, bs = len(plan.data), a.batch_size
    chunks = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
    mine = chunks[rank * len(chunks) // world:(rank + 1) * len(chunks) // world]
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else None
    records, error = [], None
    try:
        records = eval_side.evaluate_chunks(plan, mine, device)
    except UserError as e:
        error = str(e)
    records = _gather(records, error, world)
    summary = summarize(records, a, plan)
    result = {"model": a.model_name_or_path, "baseline": plan.baseline.path, "settings": settings(a, plan),
              "results": summary}
    if rank == 0:
        write_outputs(a.output_dir, records, result)
    return result


def settings(a, plan: Plan) -> dict:
    keys = ("base_model_name_or_path", "eval_data_path", "reward_model_path", "reward_funcs", "reward_weights",
            "num_samples", "max_new_tokens", "temperature", "top_p", "top_k", "batch_size", "seed", "beta",
            "bootstrap", "dtype", "load_in_4bit")
    return {**{k: getattr(a, k) for k in keys}, "prompts": len(plan.data), "preference_data": plan.preference}


def evaluate(argv: list[str]) -> dict:
    """The command's work: check, then run (the demo and tests call this)."""
    return run(check(parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    code = run_command(evaluate, sys.argv[1:] if argv is None else argv)
    from utils.core.distributed import end_processes

    end_processes()
    return code


# --------------------------------------------------------------------------------- after training
def check_after_training(method, common, config, tokenizer, rewards=None) -> Plan:
    """main_train's check phase with --evaluate_after true: the final model (output_dir, written later) against the
    starting model, on --eval_prompts_path; sampling as the method samples where it has settings for it."""
    if not common.eval_prompts_path:
        raise UserError("--evaluate_after true needs --eval_prompts_path FILE: the held-out prompts on which the "
                        "final model is compared with the starting model.")
    if not common.evaluate_after:
        raise UserError(f"--eval_prompts_path {common.eval_prompts_path!r} is read only by the evaluation after "
                        "training: add --evaluate_after true, or leave the path out.")
    if method.head != "causal":
        raise UserError(f"--evaluate_after compares a policy with its start by sampling from both; {method.name} "
                        "trains a reward model, which does not generate. Leave --evaluate_after off.")
    max_new = getattr(config, "max_completion_length", None) or getattr(config, "max_new_tokens", None) or 128
    argv = ["--model_name_or_path", config.output_dir, "--baseline_model_name_or_path", common.model_name_or_path,
            "--eval_data_path", common.eval_prompts_path, "--output_dir", os.path.join(config.output_dir, "eval"),
            "--max_new_tokens", max_new, "--temperature", getattr(config, "temperature", None) or 1.0,
            "--seed", config.seed,
            "--dtype", common.dtype, "--reward_model_path", *common.reward_model_path,
            "--reward_funcs", *common.reward_funcs]
    if getattr(config, "reward_weights", None):
        argv += ["--reward_weights", *config.reward_weights]
    if common.tools and not any(t.endswith(".json") for t in common.tools):  # functions: both sides may call them
        argv += ["--tools", *common.tools, "--tool_timeout", common.tool_timeout]
        if getattr(config, "max_tool_calling_iterations", None):
            argv += ["--max_tool_calling_iterations", config.max_tool_calling_iterations]
    if method.data == "preference" and getattr(config, "beta", 0) > 0:
        argv += ["--beta", config.beta]
    if config.trust_remote_code:
        argv.append("--trust_remote_code")
    if common.train_mode == "qlora":
        argv.append("--load_in_4bit")
    a = parse_args([str(x) for x in argv])
    a.base_model_name_or_path = None if common.train_mode == "full" else common.model_name_or_path
    return check(a, tokenizer, tokenizer, rewards, what="eval_prompts_path")


def run_after_training(plan: Plan) -> int:
    """Once the final model is saved: the evaluation into output_dir/eval; exit code 2 and a message on a mistake
    only a running evaluation can see (a reward function that fails; the files are written last, so none are)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # rank 0 has written the final model
    try:
        run(plan)
    except UserError as e:
        print(f"error: evaluation after training (the trained model is saved): {e}", file=sys.stderr)
        return 2
    return 0
