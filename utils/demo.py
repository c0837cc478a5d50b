"""The demo: a tiny model learns to sort digits ascending, through every method family, on CPU.

    bash script/demo.sh [--output_dir DIR] [--quick] [--seed N]      (or: python -m utils.demo ...)

Nothing is downloaded: a tokenizer and a small Qwen2-style model are built on the spot (fixed seeds). The
SFT demonstrations come from a sloppy annotator who sorts half of the lists the wrong way round; the rule
(`score`) gives 1 for ascending, 0.5 for descending. Each stage runs through `main_train.main(argv)`, exactly
as the command line would, and is judged here, greedy, on held-out prompts that no stage trains on:

  SFT (base -> sft), Reward model (sft -> reward), DPO (sft -> dpo), GRPO with the rule as reward
  (dpo -> grpo): accuracy on held-out prompts (reward model: pairwise accuracy on held-out pairs, the
  right answer vs the SFT model's usual mistake); GKD, grpo (teacher) into a smaller fresh student:
  held-out KL(teacher || student) per answer token.

It prints one table, writes DIR/report.md (table, the `python main_train.py ...` command of every stage,
PNG curves from utils/evaluation/plots.py) and DIR/results.json. A stage that crashes, or whose metric does not move
by MIN_GAIN (above the run-to-run noise measured over seeds), is FAILED and the exit code is 1.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python utils/demo.py` as well as `python -m utils.demo`
    sys.path.insert(0, ROOT)

# The task and its held-out measurements; answer_of, score (and sort_reward below) stay importable from here.
from utils.toy.demo_task import (LIST_LENGTH, MAX_NEW_TOKENS, answer_of, demonstration, divergence,  # noqa: E402
                             pairwise_accuracy, preference_pairs, quality, score, split_prompts, win_rate,
                             write_jsonl)
from utils.core.errors import CommandParser, run_command  # noqa: E402

# Smallest held-out improvement that counts, per stage: above the spread measured over seeds (README, "Demo").
MIN_GAIN = {"SFT": 0.10, "Reward": 0.15, "DPO": 0.05, "GRPO": 0.05, "GKD": 2.0}


@dataclass(frozen=True)
class Settings:
    hidden: int; layers: int  # noqa: E702 - policy size (the GKD teacher)
    student_hidden: int; student_layers: int  # noqa: E702 - the smaller GKD student
    sft_rows: int; sft_steps: int; rm_steps: int; dpo_steps: int; grpo_steps: int; gkd_steps: int  # noqa: E702
    pair_prompts: int  # prompts sampled from the SFT model to build preference pairs
    heldout: int  # held-out prompts (never trained on)


FULL = Settings(hidden=128, layers=2, student_hidden=64, student_layers=2, sft_rows=6000, sft_steps=800,
                pair_prompts=1200, rm_steps=100, dpo_steps=100, grpo_steps=60, gkd_steps=150, heldout=500)
QUICK = Settings(hidden=128, layers=2, student_hidden=64, student_layers=2, sft_rows=4000, sft_steps=500,
                 pair_prompts=600, rm_steps=60, dpo_steps=60, grpo_steps=30, gkd_steps=80, heldout=300)


def sort_reward(prompts, completions, **_columns) -> list[float]:
    """GRPO reward function (`--reward_funcs utils.demo:sort_reward`): the rule on each completion."""
    return [score(p, c) for p, c in zip(prompts, completions)]


# ------------------------------------------------------------------------------------------ stages
@dataclass
class Stage:
    name: str
    metric: str
    before: float | None = None
    after: float | None = None
    status: str = "not run"
    seconds: float = 0.0
    command: str = ""
    output_dir: str = ""
    lower_is_better: bool = False
    note: str = ""
    win_rate: dict | None = None  # over the model the stage started from, under the rule (utils/evaluation/run.py)
    eval_command: str = ""

    @property
    def gain(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.before - self.after if self.lower_is_better else self.after - self.before

    def judge(self) -> None:
        ok = self.gain is not None and self.gain >= MIN_GAIN[self.name]
        self.status = "ok" if ok else f"FAILED (gain below {MIN_GAIN[self.name]})"


def train(stage: Stage, argv: list[str]) -> bool:
    """One stage through the real entry point; a crash or a non-zero exit marks the stage FAILED."""
    import main_train

    argv = [str(a) for a in argv]
    stage.command = "python main_train.py " + shlex.join(argv)
    stage.output_dir = argv[argv.index("--output_dir") + 1]
    print(f"\n=== {stage.name}: {stage.command}\n", flush=True)
    start = time.time()
    try:
        code = main_train.main(argv)
    except Exception:  # noqa: BLE001 - shown, and the stage is reported as failed rather than skipped
        traceback.print_exc()
        code = "an exception"
    stage.seconds = time.time() - start
    gc.collect()
    if code != 0:
        stage.status = f"FAILED (main_train exited with {code})"
        return False
    return True


def run_pipeline(out: str, s: Settings, seed: int) -> list[Stage]:
    from utils.toy.tiny_model import build_model, build_tokenizer

    data = os.path.join(out, "data")
    os.makedirs(data, exist_ok=True)
    path = {k: os.path.join(out, k) for k in ("base", "student_base", "sft", "reward", "dpo", "grpo", "gkd")}
    tokenizer = build_tokenizer(512, seed=0)
    for key, hidden, layers in (("base", s.hidden, s.layers), ("student_base", s.student_hidden, s.student_layers)):
        build_model(tokenizer, hidden_size=hidden, num_layers=layers, seed=seed).save_pretrained(path[key])
        tokenizer.save_pretrained(path[key])
    train_prompts, heldout = split_prompts(s.sft_rows + s.pair_prompts, s.heldout, seed)
    sft_prompts, pair_prompts = train_prompts[:s.sft_rows], train_prompts[s.sft_rows:]
    rng = random.Random(seed)
    files = {
        "sft": write_jsonl(os.path.join(data, "sft.jsonl"),
                           [{"prompt": p, "completion": demonstration(p, rng)} for p in sft_prompts]),
        "gkd": write_jsonl(os.path.join(data, "gkd.jsonl"), [{"prompt": p, "completion": answer_of(p)}
                                                             for p in sft_prompts]),
        "prompts": write_jsonl(os.path.join(data, "prompts.jsonl"), [{"prompt": p} for p in pair_prompts]),
        "heldout": write_jsonl(os.path.join(data, "heldout.jsonl"),
                               [{"prompt": p, "answer": answer_of(p)} for p in heldout]),
    }
    # No checkpoints (the final model is saved), no recomputation: fast on 2 CPU cores.
    common = ["--train_mode", "full", "--save_strategy", "no", "--gradient_checkpointing", "false", "--seed", seed,
              "--disable_tqdm", "false"]
    short = ["--max_length", 64]  # prompt + answer are under 40 tokens
    task = "accuracy (exactly sorted ascending)"
    sft, dpo, grpo = Stage("SFT", task), Stage("DPO", task), Stage("GRPO", task)
    rm = Stage("Reward", "pairwise accuracy (right > wrong answer)")
    gkd = Stage("GKD", "KL(teacher ‖ student) per answer token", lower_is_better=True)
    stages = [sft, rm, dpo, grpo, gkd]

    def judge_policy(stage: Stage, model_dir: str, start: str) -> None:
        reward, stage.after = quality(model_dir, heldout)
        stage.note = f"mean rule reward {stage.note}{reward:.2f}"
        stage.judge()
        compare(stage, model_dir, start)

    def compare(stage: Stage, model_dir: str, start: str) -> None:
        stage.win_rate, stage.eval_command = win_rate(model_dir, start, files["heldout"],
                                                      os.path.join(out, "eval", stage.name.lower()), seed)

    reward, sft.before = quality(path["base"], heldout)
    sft.note = f"{reward:.2f} -> "
    if train(sft, ["--rlhf_type", "SFT", "--model_name_or_path", path["base"], "--train_data_path", files["sft"],
                   "--output_dir", path["sft"], "--max_steps", s.sft_steps, "--per_device_train_batch_size", 32,
                   "--learning_rate", 3e-3, "--lr_scheduler_type", "cosine", "--warmup_steps", 10,
                   "--assistant_only_loss", "false", *common, *short]):  # our default suits chat data only
        judge_policy(sft, path["sft"], path["base"])
    if sft.after is None:
        for st in stages[1:]:
            st.status = "FAILED (not run: needs the SFT model)"
        return stages
    policy = path["sft"]

    # Preference pairs: the right answer against the SFT model's own usual mistake, on prompts SFT never saw; the
    # held-out pairs come from the held-out prompts.
    pairs = preference_pairs(policy, pair_prompts, "sampling answers for training pairs")
    held_pairs = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
                  for r in preference_pairs(policy, heldout, "sampling answers for held-out pairs")]
    files["pairs"] = write_jsonl(os.path.join(data, "pairs.jsonl"), pairs)
    files["rm"] = write_jsonl(os.path.join(data, "reward_pairs.jsonl"),
                              [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
                               for r in pairs])
    write_jsonl(os.path.join(data, "reward_pairs_heldout.jsonl"), held_pairs)
    rm.note = f"{len(pairs)} training pairs, {len(held_pairs)} held-out pairs"

    rm.before = pairwise_accuracy(policy, held_pairs, seed)
    if train(rm, ["--rlhf_type", "Reward", "--model_name_or_path", policy, "--train_data_path", files["rm"],
                  "--output_dir", path["reward"], "--max_steps", s.rm_steps, "--per_device_train_batch_size", 32,
                  "--learning_rate", 1e-3, *common, *short]):
        rm.after = pairwise_accuracy(path["reward"], held_pairs, seed)
        rm.judge()

    dpo.before, dpo.note = sft.after, sft.note.split()[-1] + " -> "
    if train(dpo, ["--rlhf_type", "DPO", "--model_name_or_path", policy, "--train_data_path", files["pairs"],
                   "--output_dir", path["dpo"], "--max_steps", s.dpo_steps, "--per_device_train_batch_size", 16,
                   "--learning_rate", 2e-4, "--beta", 0.1, "--warmup_steps", 5, *common, *short]):
        judge_policy(dpo, path["dpo"], policy)
        policy = path["dpo"]

    previous = dpo if policy == path["dpo"] else sft  # GRPO goes on from the last policy that trained
    grpo.before, grpo.note = previous.after, previous.note.split()[-1] + " -> "
    if train(grpo, ["--rlhf_type", "GRPO", "--model_name_or_path", policy, "--train_data_path", files["prompts"],
                    "--output_dir", path["grpo"], "--max_steps", s.grpo_steps, "--per_device_train_batch_size", 64,
                    "--num_generations", 8, "--max_completion_length", MAX_NEW_TOKENS, "--learning_rate", 1e-4,
                    "--warmup_steps", 3, "--temperature", 1.0, "--reward_funcs", "utils.demo:sort_reward", *common]):
        judge_policy(grpo, path["grpo"], policy)
        policy = path["grpo"]

    gkd.before = divergence(path["student_base"], policy, heldout)
    gkd.note = f"teacher {os.path.basename(policy)} ({s.hidden}x{s.layers}), student {s.student_hidden}x{s.student_layers}"
    if train(gkd, ["--rlhf_type", "GKD", "--model_name_or_path", path["student_base"],
                   "--teacher_model_name_or_path", policy, "--train_data_path", files["gkd"],
                   "--output_dir", path["gkd"], "--max_steps", s.gkd_steps, "--per_device_train_batch_size", 32,
                   "--learning_rate", 3e-3, "--lmbda", 0.5, "--beta", 0.5, "--max_new_tokens", MAX_NEW_TOKENS,
                   *common, *short]):
        gkd.after = divergence(path["gkd"], policy, heldout)
        gkd.judge()
        compare(gkd, path["gkd"], path["student_base"])
    return stages


# ------------------------------------------------------------------------------------------ report
def _fmt(x) -> str: return "-" if x is None else f"{x:.3f}"  # noqa: E704


def _win(w) -> str: return "-" if not w else f"{w['mean']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}]"  # noqa: E704


def table(stages: list[Stage]) -> str:
    rows = ["| stage | metric (held-out) | before | after | win rate vs start [95 % CI] | status | train time "
            "| notes |", "|" + "---|" * 8]
    rows += [f"| {s.name} | {s.metric} | {_fmt(s.before)} | {_fmt(s.after)} | {_win(s.win_rate)} | {s.status} | "
             f"{s.seconds:.0f} s | {s.note} |" for s in stages]
    return "\n".join(rows)


def write_report(out: str, stages: list[Stage], settings: Settings, mode: str, seconds: float) -> None:
    from utils.evaluation.plots import plot_run

    lines = [f"# Demo report ({mode}, {seconds:.0f} s)", "", f"Task: sort {LIST_LENGTH[0]}-{LIST_LENGTH[1]} digits "
             "ascending (`sort 7 3 9 1 =` -> ` 1 3 7 9`); half the SFT demonstrations are sorted descending. The "
             "rule gives 1 (ascending), 0.5 (descending), else at most 0.5. Every metric is measured, greedy, on "
             "held-out prompts no stage trained on. Win rate: each stage's model against the model it started from "
             "(GKD: the fresh student), rule reward, 4 samples per held-out prompt from each side at temperature 1, "
             "ties half (utils/evaluation/run.py; its report is in eval/STAGE/).", "", table(stages), "",
             "## Each stage by hand", "", "```bash"]
    lines += [c for s in stages for c in (s.command, s.eval_command) if c] + ["```", "", "## Training curves", ""]
    for s in stages:
        if s.output_dir and os.path.isfile(os.path.join(s.output_dir, "trainer_state.json")):
            try:
                png = plot_run(s.output_dir, os.path.join(out, f"curves_{s.name.lower()}.png"), f"{s.name} training")
                lines.append(f"![{s.name}]({os.path.basename(png)})")
            except (OSError, ValueError) as e:
                lines.append(f"{s.name}: no curve ({e})")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"mode": mode, "seconds": seconds, "settings": asdict(settings), "min_gain": MIN_GAIN,
                   "stages": [dict(asdict(s), gain=s.gain) for s in stages]}, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    return run_command(demo, argv)


def demo(argv: list[str]) -> int:
    p = CommandParser("python -m utils.demo", __doc__, renamed={"output": "output_dir"})  # --output: one release
    p.add_argument("--output_dir", default="runs/demo", help="where models, data, report.md and plots go")
    p.add_argument("--quick", action="store_true", help="smaller settings, same stages (under 3 minutes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", action="store_true", help="the real-model demo instead (utils/toy/demo_real.py): "
                   "SmolLM2-135M-Instruct learns to answer in one sentence (default DIR runs/demo_real)")
    a = p.parse_args(argv)
    if a.real:
        from utils.toy.demo_real import main as real_demo

        import main_train

        return real_demo("runs/demo_real" if a.output_dir == "runs/demo" else a.output_dir, a.seed, main_train.main)
    settings, mode = (QUICK, "quick") if a.quick else (FULL, "full")
    os.makedirs(a.output_dir, exist_ok=True)
    start = time.time()
    try:
        stages = run_pipeline(a.output_dir, settings, a.seed)
    except Exception:  # noqa: BLE001 - a failure outside a stage (data, evaluation) still gets a report
        traceback.print_exc()
        stages = [Stage("pipeline", "-", status="FAILED (see the error above)")]
    seconds = time.time() - start
    write_report(a.output_dir, stages, settings, mode, seconds)
    print(f"\nDemo ({mode}, seed {a.seed}) finished in {seconds:.0f} s; report: {a.output_dir}/report.md\n")
    print(table(stages))
    return 0 if all(s.status == "ok" for s in stages) else 1


if __name__ == "__main__":
    from utils.core.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])  # no stage quantizes: bitsandbytes would only cost time and warn
    sys.exit(main())
