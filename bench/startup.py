"""How fast a mistake is reported: wall time from launch to exit of `python main_train.py`, median of N
launches (default 5), for `--help` and three mistakes the check phase finds.

    python bench/startup.py [--repeats 5] [--json OUT.json] [--before OLD_CHECKOUT]

    git worktree add /tmp/before fadec20 && ln -s $PWD/.venv /tmp/before/.venv   # the commit before the change
    python bench/startup.py --before /tmp/before

Cases (the launches are interleaved, one process at a time, OMP_NUM_THREADS=1):
  help           python main_train.py --help
  help_method    python main_train.py --rlhf_type DPO --help (every option of one method)
  misspelt_flag  a DPO command with --learning_rat 0.1 (a prefix argparse would otherwise accept)
  bad_row        a DPO command whose 10,000-row data file lacks `rejected` at line 3
  missing_model  a DPO command whose --model_name_or_path does not exist
  bad_row_cold   bad_row with the options cache removed first (the first launch after an args file or TRL
                 changed; that launch rebuilds it, utils/cli/args.py)
Each should exit with code 2 (0 for --help); a launch that does not is marked WRONG with its exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
           TOKENIZERS_PARALLELISM="false")


def cases(tmp: Path) -> dict[str, tuple[list[str], int]]:
    sys.path.insert(0, str(ROOT))
    from utils.toy.tiny_model import make_tiny

    model = make_tiny(str(tmp / "model"))
    good = {"prompt": "What is 2+3?", "chosen": "5", "rejected": "6"}
    with open(tmp / "pref.jsonl", "w") as f:
        for i in range(10_000):
            row = dict(good)
            if i == 2:
                del row["rejected"]
            f.write(json.dumps(row) + "\n")
    with open(tmp / "ok.jsonl", "w") as f:
        f.write(json.dumps(good) + "\n")
    base = ["--rlhf_type", "DPO", "--output_dir", str(tmp / "out")]
    return {
        "help": (["--help"], 0),
        "help_method": (["--rlhf_type", "DPO", "--help"], 0),
        "misspelt_flag": (base + ["--model_name_or_path", model, "--train_data_path", str(tmp / "ok.jsonl"),
                                  "--learning_rat", "0.1"], 2),
        "bad_row": (base + ["--model_name_or_path", model, "--train_data_path", str(tmp / "pref.jsonl")], 2),
        "missing_model": (base + ["--model_name_or_path", str(tmp / "no_such_model"), "--train_data_path",
                                  str(tmp / "ok.jsonl")], 2),
        "bad_row_cold": (base + ["--model_name_or_path", model, "--train_data_path", str(tmp / "pref.jsonl")], 2),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="Also write the medians to this file.")
    p.add_argument("--before", type=Path, help="Another checkout (e.g. a git worktree of an older commit), timed "
                                                "interleaved with this one, launch for launch.")
    a = p.parse_args()
    roots = {"after": ROOT, **({"before": a.before.resolve()} if a.before else {})}
    with tempfile.TemporaryDirectory() as d:
        todo = cases(Path(d))
        times = {(r, n): [] for n in todo for r in roots}
        wrong: dict[str, str] = {}
        for _ in range(a.repeats):
            for name, (args, want) in todo.items():
                for label, root in roots.items():
                    if name == "bad_row_cold":
                        (root / ".cache" / "cli-options.json").unlink(missing_ok=True)
                    start = time.perf_counter()
                    proc = subprocess.run([sys.executable, str(root / "main_train.py"), *args], cwd=root, env=ENV,
                                          capture_output=True, text=True)
                    times[label, name].append(time.perf_counter() - start)
                    if proc.returncode != want:
                        wrong[f"{label} {name}"] = f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    medians = {f"{r} {n}": statistics.median(ts) for (r, n), ts in times.items()}
    print(f"{'checkout case':28s} {'median s':>9s}  runs")
    for (label, name), ts in times.items():
        key = f"{label} {name}"
        print(f"{key:28s} {medians[key]:9.2f}  " + " ".join(f"{t:.2f}" for t in ts) +
              (f"  WRONG ({wrong[key]})" if key in wrong else ""))
    if a.json:
        Path(a.json).write_text(json.dumps({"medians_s": medians, "wrong": wrong}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
