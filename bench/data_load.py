"""Loading + validating a large preference file: ours (utils.data.loading: stream, convert, check every row, write Arrow,
memory-map it) against `datasets.load_dataset("json", data_files=...)` (Arrow's JSON reader, no row checks) on the
same file. Each run is a fresh process; the two are interleaved; median of --rounds; wall time and peak RSS as
the process itself reports them (ru_maxrss).

    .venv/bin/python bench/data_load.py                  # 100,000 and 1,000,000 rows of about 1 KB, 3 rounds
    .venv/bin/python bench/data_load.py --rows 100000 --rounds 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
         "but not what all were we when your can said there use an each which she do how their if will up other "
         "about out many then them these so some her would make like him into time has look two more write go see "
         "number no way could people my than first water been call who oil its now find long down day did get come "
         "made may part").split()

CHILD = r'''
import os, resource, sys, time
start = time.perf_counter()
which, path, scratch = sys.argv[1:4]
if which.startswith("ours"):
    from utils.data.loading import check_rows, to_dataset
    if which == "ours_row_by_row":  # the path conversational rows and converted formats take
        import utils.data.fast_json
        utils.data.fast_json.eligible = lambda real: False
    n = len(to_dataset(check_rows(path, "preference")))
else:
    from datasets import load_dataset
    n = len(load_dataset("json", data_files=path, split="train", cache_dir=scratch))
print(n, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
'''


def generate(path: str, rows: int, seed: int = 0) -> None:
    """Plain-string preference rows of about 1 KB: a 50-word prompt, two 85-word answers."""
    rng = random.Random(seed)
    text = (lambda k: " ".join(rng.choice(WORDS) for _ in range(k)))
    with open(path, "w") as f:
        for _ in range(rows):
            f.write(json.dumps({"prompt": text(50) + "?", "chosen": text(85) + ".", "rejected": text(85) + "."}) + "\n")


def run(which: str, path: str) -> tuple[float, float]:
    scratch = tempfile.mkdtemp(prefix="bench-data-")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TMPDIR=scratch,
               HF_DATASETS_DISABLE_PROGRESS_BARS="1", PYTHONPATH=ROOT)
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, which, path, scratch], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return float(out[1]), float(out[2])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default=tempfile.gettempdir())
    a = p.parse_args()
    table = []
    for rows in a.rows:
        path = os.path.join(a.dir, f"bench_pref_{rows}.jsonl")
        if not os.path.exists(path):
            generate(path, rows)
        size = os.path.getsize(path) / 2**20
        runs = {"ours": [], "datasets": [], "ours_row_by_row": []}
        for _ in range(a.rounds):
            for which in runs:
                runs[which].append(run(which, path))
                print(f"{rows:>9,} rows {which:>15}: {runs[which][-1][0]:6.2f} s, {runs[which][-1][1]:7.0f} MB",
                      flush=True)
        med = {k: (statistics.median(t for t, _ in v), statistics.median(m for _, m in v)) for k, v in runs.items()}
        table.append((rows, size, med))
    print("\n| rows | file | ours: time | datasets: time | ratio | ours: peak RSS | datasets: peak RSS | ratio | "
          "ours row by row: time, RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows, size, med in table:
        (ot, om), (dt, dm), (rt, rm) = med["ours"], med["datasets"], med["ours_row_by_row"]
        print(f"| {rows:,} | {size:,.0f} MB | {ot:.2f} s | {dt:.2f} s | {ot / dt:.2f} | {om:,.0f} MB | {dm:,.0f} MB | "
              f"{om / dm:.2f} | {rt:.2f} s ({rt / dt:.2f}x), {rm:,.0f} MB |")
    if len(table) > 1:
        print(f"\nour peak RSS from {table[0][0]:,} to {table[-1][0]:,} rows: "
              f"x{table[-1][2]['ours'][1] / table[0][2]['ours'][1]:.2f}")


if __name__ == "__main__":
    main()
