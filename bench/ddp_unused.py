"""2-process DDP seconds per step with DDP's search for unused parameters on (transformers' default when activation
checkpointing is off, what main_train did before) and off (main_train's default now, for full and LoRA models).

    .venv/bin/python bench/ddp_unused.py [--rounds 3] [--steps 20] [--hidden 256]

Each round launches the same DPO run twice through `accelerate launch --config_file script/ddp.yaml
--num_processes 2` (gloo on CPU, OMP_NUM_THREADS=1 per process), once with --ddp_find_unused_parameters true and
once with false, alternating which goes first; bench/timed.py records every step end on rank 0. s/step is the
median step time after the first 3 steps. Prints a table and writes bench/out/ddp_unused.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(tmp: Path, model: str, data: Path, mode: str, unused: str, steps: int, tag: str) -> float:
    out = tmp / f"out_{tag}"
    record = tmp / f"{tag}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", DS_ACCELERATOR="cpu",
               TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "script/ddp.yaml", "--num_processes",
           "2", "bench/timed.py", str(record), "main_train.py", "--rlhf_type", "DPO", "--train_mode", mode,
           "--model_name_or_path", model, "--train_data_path", str(data), "--output_dir", str(out), "--max_steps",
           str(steps), "--per_device_train_batch_size", "4", "--max_length", "128", "--save_strategy", "no",
           "--disable_tqdm", "true", "--ddp_find_unused_parameters", unused]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{tag} failed:\n{proc.stderr[-3000:]}")
    ends = json.loads(Path(f"{record}.rank0").read_text())["step_ends"]
    return statistics.median(b - a for a, b in zip(ends[3:], ends[4:]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--hidden", type=int, default=256)
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from utils.toy.tiny_model import make_tiny

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import style_pairs, write_jsonl

    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = make_tiny(str(tmp / "model"), hidden_size=a.hidden, num_layers=4)
        data = write_jsonl(tmp / "pref.jsonl", style_pairs(256, seed=0))
        for r in range(a.rounds):
            for mode in ("full", "lora"):
                order = ("true", "false") if r % 2 == 0 else ("false", "true")
                for unused in order:
                    key = f"{mode} find_unused={unused}"
                    results.setdefault(key, []).append(run(tmp, model, data, mode, unused, a.steps, f"{r}_{mode}_{unused}"))
                    print(f"round {r} {key}: {results[key][-1]:.4f} s/step", flush=True)
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{'run':30s} {'median s/step':>14s}")
    for k, v in medians.items():
        print(f"{k:30s} {v:14.4f}")
    for mode in ("full", "lora"):
        print(f"{mode}: off / on = {medians[f'{mode} find_unused=false'] / medians[f'{mode} find_unused=true']:.3f}")
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "ddp_unused.json").write_text(json.dumps({"runs": results, "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
