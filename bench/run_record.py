"""What a run's record costs at start-up (utils/runtime/resume.py): the SHA-256 of its training data, the identity of
its model (config.json hash, weight file sizes). One thread; the data file is written first, so it is read from the
page cache (a cold read adds the disk's own time).

    .venv/bin/python bench/run_record.py [--gib 1] [--model .cache/smollm2/hf]
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    from utils.runtime.resume import data_identity, model_identity

    p = argparse.ArgumentParser()
    p.add_argument("--gib", type=float, default=1.0)
    p.add_argument("--model", default=".cache/smollm2/hf")
    a = p.parse_args()
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as f:
        block = os.urandom(1 << 20)
        for _ in range(int(a.gib * 1024)):
            f.write(block)
        f.flush()
        times = []
        for _ in range(3):
            t = time.perf_counter()
            data_identity(f.name)
            times.append(time.perf_counter() - t)
        print(f"data: {a.gib:g} GiB hashed in {min(times):.2f}-{max(times):.2f} s")
    if os.path.isdir(a.model):
        t = time.perf_counter()
        model_identity(a.model)
        print(f"model {a.model}: identity in {(time.perf_counter() - t) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
