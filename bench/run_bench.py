"""Wrapper vs bare TRL, our defaults vs TRL's, our PPO vs TRL 1.11's: interleaved runs, one JSON line each.

    .venv/bin/python bench/run_bench.py                 # both sizes, every method, 2 rounds (~25 min)
    .venv/bin/python bench/run_bench.py --quick         # 3.5M model, DPO + DPO-LoRA + PPO, 1 round
    .venv/bin/python bench/run_bench.py --methods DPO KTO --sizes 3.5M --rounds 3
    .venv/bin/python bench/run_bench.py --sizes vlm --methods VLM-SFT VLM-DPO --variants wrapper bare-same \
        --steps 8 --warmup 2 --rounds 2 --results bench/out/results-vlm.jsonl   # a 24M SmolVLM-shaped model, LoRA
    .venv/bin/python bench/run_bench.py --sizes smollm2 --methods SFT-LoRA DPO-LoRA Reward-LoRA GRPO-LoRA PPO \
        --steps 6 --warmup 2 --ppo_updates 2 --results bench/out/results-smollm2.jsonl   # the real 135M model

Variants per method and size, run back to back in a rotating order (A B C, B C A, ...) so that drift of
the machine (another job on the 2 cores) hits every variant alike:
  wrapper    main_train.py with the job flags (bench/jobs.py) and our defaults (rlhf_args/)
  bare-same  bench/bare_trl.py, TRL trainer called directly, with the values our defaults resolve to
  bare-trl   bench/bare_trl.py with TRL's defaults (bf16 off, or TRL refuses to start on a CPU)
  ppo-ours / ppo-trl111   our PPO and TRL 1.11's (bench/ppo_trl111.py in bench/.venv-trl111), same settings
  "wrapper:FLAGS"  an ablation, e.g. --variants wrapper "wrapper:--gradient_checkpointing true" bare-trl

Each run goes through bench/timed.py (step-end timestamps, peak RSS). Reported per run: seconds per step =
median step time after `--warmup` steps (PPO: per rollout + its num_ppo_epochs optimizer steps), tokens per
step (policy tokens of the batch, prompt + completion(s), from the data), tokens/s, peak RSS, start-up
(launch to train begin), and MFU = model FLOPs/s over the fp32 matmul peak measured by this process, at
this thread count, between runs. Model FLOPs per token = 6 x N + 12 x layers x hidden x T (PaLM, App. B:
N = parameters that multiply, all but the input embedding; T = sequence length; forward + backward only,
no credit for recomputation, reference or generation work). Online methods (RLOO, GRPO, PPO) spend most
of a step sampling, so their MFU is a lower bound of little meaning. gen_share = the part of a step's wall time
spent inside `generate` (bench/timed.py). At the real size ("smollm2") PPO runs LoRA with the Python reward of
GRPO (critic: the policy's frozen weights with its own adapter) and has no TRL 1.11 counterpart.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs  # noqa: E402
from jobs import ENV, OUT, ROOT  # noqa: E402

PY = sys.executable
PY111 = str(ROOT / "bench" / ".venv-trl111" / "bin" / "python")
PPO = dict(updates=4, epochs=4)  # PPO: rollouts timed (after one warm-up rollout), optimizer steps per rollout


def matmul_peak(threads: int, seconds: float = 1.5) -> float:
    """fp32 GFLOP/s of a 1024^3 matmul, best of 3 windows: the CPU's attainable dense peak right now."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(3):
        t, k = time.perf_counter(), 0
        while time.perf_counter() - t < seconds / 3:
            torch.matmul(a, b)
            k += 1
        best = max(best, 2 * 1024 ** 3 * k / (time.perf_counter() - t) / 1e9)
    return best


def command(variant: str, method: str, size: str, steps: int, out: Path) -> list[str]:
    timed = [str(ROOT / "bench" / "timed.py"), str(out / "timing.json")]
    if variant.startswith("ppo"):
        m = jobs.model_path(size)
        n = PPO["updates"] + 1
        data = str(jobs.data_dir(size) / "prompt.jsonl")
        if size == jobs.REAL:
            reward, mode = ["--reward_funcs", "bench/rewards.py:word_reward"], "lora"
        else:
            reward, mode = ["--reward_model_path", m + "-rm"], "full"
        if variant == "ppo-trl111":
            return [PY111, *timed, str(ROOT / "bench" / "ppo_trl111.py"), "--model", m, "--reward_model", m + "-rm",
                    "--data", str(OUT / "data" / "prompt.jsonl"), "--output_dir", str(out / "run"), "--updates",
                    str(n), "--response_length", str(jobs.COMPLETION_TOKENS), "--num_ppo_epochs", str(PPO["epochs"]),
                    "--gradient_checkpointing", "false"]
        return [PY, *timed, str(ROOT / "main_train.py"), "--rlhf_type", "PPO", "--train_mode", mode,
                "--model_name_or_path", m, *reward, "--train_data_path", data, "--output_dir", str(out / "run"),
                "--per_device_train_batch_size", str(jobs.BATCH), "--max_steps", str(n * PPO["epochs"]),
                "--num_ppo_epochs", str(PPO["epochs"]), "--max_new_tokens", str(jobs.completion_tokens(size)),
                "--learning_rate", "1e-5", "--seed", "0",
                "--save_strategy", "no", "--disable_tqdm", "true", "--gradient_checkpointing", "false",
                *variant.partition(":")[2].split()]  # "ppo-ours:FLAGS": an ablation
    flags = jobs.job_flags(method, size, steps, out / "run")
    if variant.startswith("wrapper"):  # "wrapper" or an ablation "wrapper:--flag value ..." (one default undone)
        return [PY, *timed, str(ROOT / "main_train.py"), *flags, *variant.partition(":")[2].split()]
    return [PY, *timed, str(ROOT / "bench" / "bare_trl.py"), "--defaults", variant.split("-")[1], *flags,
            *jobs.bare_flags(method)]


def run_one(variant, method, size, steps, warmup, peak, threads, round_) -> dict:
    out = OUT / "runs" / f"{method}-{size}-{variant.replace(':', '').replace(' ', '').replace('--', '-')}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # A fresh datasets cache per run: tokenized data and precomputed reference log-probs are never reused from an
    # earlier run, so every run pays its full start-up.
    env = dict(ENV, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_DATASETS_CACHE=str(out / "cache"))
    launch = time.time()
    proc = subprocess.run(command(variant, method, size, steps, out), cwd=ROOT, env=env, capture_output=True,
                          text=True)
    (out / "log.txt").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    row = dict(method=method if not variant.startswith("ppo") else "PPO", size=size, variant=variant, round=round_,
               batch=jobs.BATCH, threads=threads, rc=proc.returncode, load=os.getloadavg()[0],
               wall_s=round(time.time() - launch, 2), matmul_peak_gflops=round(peak, 1))
    try:
        t = json.loads((out / "timing.json").read_text())
    except OSError:
        return row
    if proc.returncode != 0 or t["train_begin"] is None:
        return row
    ends = t["step_ends"]
    every = PPO["epochs"] if variant.startswith("ppo-ours") else 1  # ours: an update is epochs optimizer steps
    marks = [t["train_begin"]] + ends[every - 1::every]
    skip = warmup if not variant.startswith("ppo") else 1
    times = [b - a for a, b in zip(marks, marks[1:])][skip:]
    sec = statistics.median(times) if times else float("nan")
    # The same per step in CPU seconds of the run's process (1 thread): what the step costs, whatever else the
    # machine is doing at the time. Ratios are given both ways in bench/RESULTS.md.
    cpu_marks = [t["cpu_begin"]] + t["step_cpu"][every - 1::every]
    cpu = [b - a for a, b in zip(cpu_marks, cpu_marks[1:])][skip:]
    # Batch rows x tokens per row (RLOO / GRPO: 4 completions of one prompt; PPO: the rollout's 4 prompts, each
    # trained on num_ppo_epochs times: policy FLOPs only, the critic's are not counted).
    tokens = jobs.BATCH * jobs.seq_tokens("RLOO" if variant.startswith("ppo") else method, size)
    matmul, layers, hidden, _ = jobs.n_params(size)
    seq = tokens / jobs.BATCH / (2 if jobs.data_kind(method) in ("preference", "reward") else 1)
    passes = PPO["epochs"] if variant.startswith("ppo") else 1
    flops = (6 * matmul + 12 * layers * hidden * seq) * tokens * passes / sec
    row.update(tokens_per_step=round(tokens), s_per_step=round(sec, 4), tokens_per_s=round(tokens / sec, 1),
               peak_rss_mb=round(t["peak_rss_mb"], 1), above_base_mb=round(t["peak_rss_mb"] - t["base_rss_mb"], 1),
               startup_s=round(t["train_begin"] - launch, 2),
               mfu=round(flops / 1e9 / peak, 4), model_gflops=round(flops / 1e9, 2),
               cpu_s_per_step=round(statistics.median(cpu), 4) if cpu else None,
               cpu_tokens_per_s=round(tokens / statistics.median(cpu), 1) if cpu else None,
               step_times=[round(x, 3) for x in times])
    gen_marks = [0.0] + t.get("step_generate", [])[every - 1::every]
    gen = [b - a for a, b in zip(gen_marks, gen_marks[1:])][skip:]
    if gen and any(gen):
        row.update(gen_s_per_step=round(statistics.median(gen), 4),
                   gen_share=round(statistics.median([g / x for g, x in zip(gen, times)]), 4))
        gen_cpu_marks = [0.0] + t.get("step_generate_cpu", [])[every - 1::every]
        gen_cpu = [b - a for a, b in zip(gen_cpu_marks, gen_cpu_marks[1:])][skip:]
        if gen_cpu and cpu:
            row.update(gen_cpu_s_per_step=round(statistics.median(gen_cpu), 4),
                       gen_cpu_share=round(statistics.median([g / x for g, x in zip(gen_cpu, cpu)]), 4))
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=[*jobs.METHODS, "PPO"])
    p.add_argument("--sizes", nargs="+", default=list(jobs.SIZES))
    p.add_argument("--variants", nargs="+", default=["wrapper", "bare-same", "bare-trl"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per run (PPO: see PPO above)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    # One thread: with another job on this 2-core machine, two OpenMP threads stall at every barrier when one
    # core is taken (steps 3-15x slower, erratic); one thread measures the same code steadily.
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--first_round", type=int, default=0, help="number of the first round (to add rounds later)")
    p.add_argument("--ppo_updates", type=int, default=PPO["updates"], help="PPO rollouts timed (after 1 warm-up)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--results", default=str(OUT / "results.jsonl"))
    a = p.parse_args()
    if a.quick:
        a.methods, a.sizes, a.rounds = ["DPO", "DPO-LoRA", "PPO"], ["3.5M"], 1
    PPO["updates"] = a.ppo_updates
    jobs.build(sizes=a.sizes)
    has111 = os.path.exists(PY111)
    if "PPO" in a.methods and not has111:
        print("bench/.venv-trl111 missing (bash bench/setup_trl111.sh): PPO vs TRL 1.11 skipped", file=sys.stderr)
    plan = []
    for size in a.sizes:
        for method in a.methods:
            if method == "PPO":
                base = ["ppo-ours"] + (["ppo-trl111"] if has111 and size != jobs.REAL else [])
                if len(base) > 1 or size == jobs.REAL:
                    plan.append((method, size, base + [v for v in a.variants if v.startswith("ppo")]))
            elif jobs.runs(method, size):  # VLM-* methods at the "vlm" size only
                plan.append((method, size, list(a.variants)))
    with open(a.results, "a") as f:
        for r in range(a.first_round, a.first_round + a.rounds):
            for method, size, variants in plan:
                k = r % len(variants)
                for v in variants[k:] + variants[:k]:  # rotate who goes first
                    peak = matmul_peak(a.threads)  # right before each run: the load changes from run to run
                    row = run_one(v, method, size, a.steps, a.warmup, peak, a.threads, r)
                    row["date"] = time.strftime("%Y-%m-%d %H:%M")
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(json.dumps({k: v for k, v in row.items() if k != "step_times"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
