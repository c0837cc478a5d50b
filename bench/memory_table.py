"""Peak memory and seconds per step for method x mode (full, LoRA, QLoRA) x engine (single process,
DeepSpeed ZeRO-2, ZeRO-3 with 2 processes), through main_train.py with our defaults, on CPU.

    .venv/bin/python bench/memory_table.py                          # the default grid (~10 min)
    .venv/bin/python bench/memory_table.py --methods DPO KTO --modes full lora --engines single zero3

Single: 1 process, batch 4. ZeRO-2 / ZeRO-3: `accelerate launch --config_file script/zero{2,3}.yaml
--num_processes 2` (gloo, DS_ACCELERATOR=cpu), batch 2 per process: the same global batch of 4.
Peak memory = peak RSS of one process (the largest rank), i.e. what one device would have to hold, with
the ~0.5 GB every process pays for torch + transformers + TRL (+ DeepSpeed) included; s/step = median
after the first 2 steps. On CPU the numbers show the relative cost of modes and engines for the small
model; absolute values on a GPU differ (see bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs  # noqa: E402
from jobs import ENV, OUT, ROOT  # noqa: E402

ENGINES = ("single", "zero2", "zero3")
MODES = ("full", "lora", "qlora")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flags(method: str, mode: str, size: str, steps: int, batch: int, out: Path) -> list[str]:
    if method == "PPO":  # our PPO: critic from the reward model, one rollout per num_ppo_epochs (4) steps
        m = str(OUT / "models" / size)
        f = ["--rlhf_type", "PPO", "--model_name_or_path", m, "--reward_model_path", m + "-rm",
             "--train_data_path", str(OUT / "data" / "prompt.jsonl"), "--output_dir", str(out),
             "--max_new_tokens", str(jobs.COMPLETION_TOKENS), "--max_steps", str(steps), "--seed", "0",
             "--save_strategy", "no", "--disable_tqdm", "true", "--learning_rate", "1e-5"]
    else:
        f = jobs.job_flags(method, size, steps, out)
    if method == "PPO":
        f[f.index("--max_steps") + 1] = "8"  # two rollouts of num_ppo_epochs (4) optimizer steps
    f += ["--per_device_train_batch_size", str(batch), "--train_mode", mode]
    if method in ("RLOO", "GRPO") and batch < 4:  # a generation batch must hold the 4 samples of a prompt
        f += ["--steps_per_generation", str(4 // batch)]
    return f


def run(method, mode, engine, size, steps) -> dict:
    out = OUT / "mem" / f"{method}-{mode}-{engine}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    timing = out / "timing.json"
    timed = [str(ROOT / "bench" / "timed.py"), str(timing), str(ROOT / "main_train.py")]
    if engine == "single":
        cmd = [sys.executable, *timed, *flags(method, mode, size, steps, 4, out / "run")]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"script/{engine}.yaml",
               "--num_processes", "2", "--main_process_port", str(_port()), *timed,
               *flags(method, mode, size, steps, 2, out / "run")]
    env = dict(ENV, OMP_NUM_THREADS="1", HF_DATASETS_CACHE=str(out / "cache"))
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    (out / "log.txt").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    row = dict(method=method, mode=mode, engine=engine, size=size, rc=proc.returncode, wall_s=round(time.time() - t0, 1))
    files = [timing] if engine == "single" else sorted(out.glob("timing.json.rank*"))
    ranks = [json.loads(p.read_text()) for p in files if p.exists()]
    if proc.returncode == 0 and ranks:
        t = ranks[0]
        marks = [t["train_begin"]] + t["step_ends"]
        times = [b - a for a, b in zip(marks, marks[1:])][2:]
        if method == "PPO":  # the mean over the second rollout's 4 optimizer steps (the rollout runs in the first)
            times = [(marks[8] - marks[4]) / 4] if len(marks) > 8 else []
        row.update(peak_rss_mb=round(max(r["peak_rss_mb"] for r in ranks)),
                   s_per_step=round(statistics.median(times), 3) if times else None)
    else:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        row["error"] = tail[0][-200:]
    return row


def table(rows: list[dict]) -> str:
    lines = ["| method | mode | single: peak MB / s/step | ZeRO-2 (2 proc) | ZeRO-3 (2 proc) |", "|---|---|---|---|---|"]
    cell = {(r["method"], r["mode"], r["engine"]): r for r in rows}
    for method in dict.fromkeys(r["method"] for r in rows):
        for mode in MODES:
            got = [cell.get((method, mode, e)) for e in ENGINES]
            if not any(got):
                continue
            text = [("-" if r is None else f"fails: {r.get('error', '')[:60]}" if "peak_rss_mb" not in r
                     else f"{r['peak_rss_mb']} / {r['s_per_step']}") for r in got]
            lines.append(f"| {method} | {mode} | " + " | ".join(text) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["DPO", "KTO", "Reward", "SimPO", "GRPO", "PPO", "GKD"])
    p.add_argument("--modes", nargs="+", default=list(MODES))
    p.add_argument("--engines", nargs="+", default=list(ENGINES))
    p.add_argument("--size", default="0.2M")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--results", default=str(OUT / "memory.jsonl"))
    p.add_argument("--table", action="store_true", help="only print the table of the rows in --results")
    a = p.parse_args()
    if a.table:
        print(table([json.loads(line) for line in open(a.results)]))
        return 0
    jobs.build()
    rows = []
    with open(a.results, "a") as f:
        for method in a.methods:
            for mode in a.modes:
                for engine in a.engines:
                    row = run(method, mode, engine, a.size, a.steps)
                    row["date"] = time.strftime("%Y-%m-%d %H:%M")
                    rows.append(row)
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(json.dumps(row), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
