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
import os
import shlex
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `python utils/demo.py` as well as `python -m utils.demo`
    sys.path.insert(0, ROOT)

from utils.toy.demo_report import Stage, table, write_report  # noqa: E402
from utils.toy.demo_setup import (FULL, QUICK, Pairs, Settings, Workspace, build_workspace,  # noqa: E402
                                  write_preference_pairs)
# The task and its held-out measurements (sort_reward below is the GRPO reward, `--reward_funcs utils.demo:...`).
from utils.toy.demo_task import (MAX_NEW_TOKENS, divergence, pairwise_accuracy, quality,  # noqa: E402
                                 score, win_rate)
from utils.core.errors import CommandParser, run_command  # noqa: E402

# Smallest held-out improvement that counts, per stage: above the spread measured over seeds (README, "Demo").
MIN_GAIN = {"SFT": 0.10, "Reward": 0.15, "DPO": 0.05, "GRPO": 0.05, "GKD": 2.0}
TASK = "accuracy (exactly sorted ascending)"
METRIC = {"SFT": TASK, "Reward": "pairwise accuracy (right > wrong answer)", "DPO": TASK, "GRPO": TASK,
          "GKD": "KL(teacher ‖ student) per answer token"}
SHORT = ["--max_length", 64]  # prompt + answer are under 40 tokens


def sort_reward(prompts, completions, **_columns) -> list[float]:
    """GRPO reward function (`--reward_funcs utils.demo:sort_reward`): the rule on each completion."""
    return [score(p, c) for p, c in zip(prompts, completions)]


# ------------------------------------------------------------------------------------------ stages
def new_stage(name: str, status: str = "not run") -> Stage:
    return Stage(name, METRIC[name], status=status, lower_is_better=name == "GKD")


def judge(stage: Stage) -> None:
    """ok when the held-out metric moved the right way by at least MIN_GAIN."""
    ok = stage.gain is not None and stage.gain >= MIN_GAIN[stage.name]
    stage.status = "ok" if ok else f"FAILED (gain below {MIN_GAIN[stage.name]})"


def continuing(name: str, start: Stage) -> Stage:
    """A policy stage that trains `start`'s model: its numbers before are `start`'s after."""
    stage = new_stage(name)
    stage.before, stage.facts["rule_reward_before"] = start.after, start.facts["rule_reward_after"]
    return stage


def train(stage: Stage, argv: list) -> bool:
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


def common_argv(seed: int) -> list:
    """Every stage: no checkpoints (the final model is saved), no recomputation: fast on 2 CPU cores. fp32: at 0.43M
    parameters bf16 is no faster (per-op overhead dominates), and its rounding cost the DPO stage its gain (0.030
    against the 0.05 required, one run on a CPU with AVX512-BF16). The real-model demo keeps the default. A demo run
    again replaces its own earlier models (--overwrite_output_dir)."""
    return ["--train_mode", "full", "--save_strategy", "no", "--gradient_checkpointing", "false", "--seed", seed,
            "--disable_tqdm", "false", "--bf16", "false", "--overwrite_output_dir", "true"]


def judge_policy(stage: Stage, w: Workspace, model_dir: str, start_dir: str) -> None:
    """A trained policy on the held-out prompts (accuracy, mean rule reward), its verdict, its win rate."""
    stage.facts["rule_reward_after"], stage.after = quality(model_dir, w.heldout)
    judge(stage)
    compare(stage, w, model_dir, start_dir)


def compare(stage: Stage, w: Workspace, model_dir: str, start_dir: str) -> None:
    """Win rate of the stage's model over the one it started from (utils/evaluation/run.py, DIR/eval/STAGE/)."""
    stage.win_rate, stage.eval_command = win_rate(model_dir, start_dir, w.files["heldout"],
                                                  os.path.join(w.out, "eval", stage.name.lower()), w.seed)


def run_sft(w: Workspace) -> Stage:
    sft = new_stage("SFT")
    sft.facts["rule_reward_before"], sft.before = quality(w.path["base"], w.heldout)
    if train(sft, ["--rlhf_type", "SFT", "--model_name_or_path", w.path["base"], "--train_data_path", w.files["sft"],
                   "--output_dir", w.path["sft"], "--max_steps", w.settings.sft_steps,
                   "--per_device_train_batch_size", 32, "--learning_rate", 3e-3, "--lr_scheduler_type", "cosine",
                   "--warmup_steps", 10, "--assistant_only_loss", "false",  # our default suits chat data only
                   *common_argv(w.seed), *SHORT]):
        judge_policy(sft, w, w.path["sft"], w.path["base"])
    return sft


def run_reward(w: Workspace, pairs: Pairs) -> Stage:
    rm = new_stage("Reward")
    rm.facts.update(training_pairs=pairs.count, heldout_pairs=len(pairs.heldout))
    rm.before = pairwise_accuracy(w.path["sft"], pairs.heldout, w.seed)
    if train(rm, ["--rlhf_type", "Reward", "--model_name_or_path", w.path["sft"], "--train_data_path",
                  pairs.reward_file, "--output_dir", w.path["reward"], "--max_steps", w.settings.rm_steps,
                  "--per_device_train_batch_size", 32, "--learning_rate", 1e-3, *common_argv(w.seed), *SHORT]):
        rm.after = pairwise_accuracy(w.path["reward"], pairs.heldout, w.seed)
        judge(rm)
    return rm


def run_dpo(w: Workspace, pairs: Pairs, sft: Stage) -> Stage:
    dpo = continuing("DPO", sft)
    if train(dpo, ["--rlhf_type", "DPO", "--model_name_or_path", w.path["sft"], "--train_data_path", pairs.dpo_file,
                   "--output_dir", w.path["dpo"], "--max_steps", w.settings.dpo_steps,
                   "--per_device_train_batch_size", 16, "--learning_rate", 2e-4, "--beta", 0.1, "--warmup_steps", 5,
                   *common_argv(w.seed), *SHORT]):
        judge_policy(dpo, w, w.path["dpo"], w.path["sft"])
    return dpo


def run_grpo(w: Workspace, start: Stage) -> Stage:
    """GRPO with the rule as reward, from `start`: the last policy stage that trained."""
    grpo = continuing("GRPO", start)
    if train(grpo, ["--rlhf_type", "GRPO", "--model_name_or_path", start.output_dir, "--train_data_path",
                    w.files["prompts"], "--output_dir", w.path["grpo"], "--max_steps", w.settings.grpo_steps,
                    "--per_device_train_batch_size", 64, "--num_generations", 8, "--max_completion_length",
                    MAX_NEW_TOKENS, "--learning_rate", 1e-4, "--warmup_steps", 3, "--temperature", 1.0,
                    "--reward_funcs", "utils.demo:sort_reward", *common_argv(w.seed)]):
        judge_policy(grpo, w, w.path["grpo"], start.output_dir)
    return grpo


def run_gkd(w: Workspace, teacher: str) -> Stage:
    """GKD of the `teacher` model into the fresh, smaller student."""
    s, gkd = w.settings, new_stage("GKD")
    gkd.before = divergence(w.path["student_base"], teacher, w.heldout)
    gkd.facts.update(teacher=os.path.basename(teacher), teacher_hidden=s.hidden, teacher_layers=s.layers,
                     student_hidden=s.student_hidden, student_layers=s.student_layers)
    if train(gkd, ["--rlhf_type", "GKD", "--model_name_or_path", w.path["student_base"],
                   "--teacher_model_name_or_path", teacher, "--train_data_path", w.files["gkd"],
                   "--output_dir", w.path["gkd"], "--max_steps", s.gkd_steps, "--per_device_train_batch_size", 32,
                   "--learning_rate", 3e-3, "--lmbda", 0.5, "--beta", 0.5, "--max_new_tokens", MAX_NEW_TOKENS,
                   *common_argv(w.seed), *SHORT]):
        gkd.after = divergence(w.path["gkd"], teacher, w.heldout)
        judge(gkd)
        compare(gkd, w, w.path["gkd"], w.path["student_base"])
    return gkd


def run_pipeline(out: str, s: Settings, seed: int) -> list[Stage]:
    """The five stages in order, each from the model the stage before it left (a stage that did not train is
    skipped over); without an SFT model nothing else runs."""
    w = build_workspace(out, s, seed)
    sft = run_sft(w)
    if not sft.trained:
        return [sft, *(new_stage(name, "FAILED (not run: needs the SFT model)")
                       for name in ("Reward", "DPO", "GRPO", "GKD"))]
    pairs = write_preference_pairs(w, w.path["sft"])
    rm = run_reward(w, pairs)
    dpo = run_dpo(w, pairs, sft)
    start = dpo if dpo.trained else sft  # GRPO goes on from the last policy that trained
    grpo = run_grpo(w, start)
    return [sft, rm, dpo, grpo, run_gkd(w, (grpo if grpo.trained else start).output_dir)]


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
    write_report(a.output_dir, stages, settings, mode, seconds, MIN_GAIN)
    print(f"\nDemo ({mode}, seed {a.seed}) finished in {seconds:.0f} s; report: {a.output_dir}/report.md\n")
    print(table(stages))
    return 0 if all(s.status == "ok" for s in stages) else 1


if __name__ == "__main__":
    from utils.core.imports import hide_unused_bitsandbytes

    hide_unused_bitsandbytes(sys.argv[1:])  # no stage quantizes: bitsandbytes would only cost time and warn
    sys.exit(main())
