"""Markdown tables from bench/out/results.jsonl (bench/run_bench.py): medians over rounds, and each
ratio as median [min-max] of the per-round ratios, since both runs of a round saw the same machine load.

    .venv/bin/python bench/report.py [results.jsonl ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "out" / "results.jsonl"


def load(paths) -> dict:
    runs = defaultdict(dict)  # (method, size) -> {(variant, round): row}
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            if r.get("rc") == 0 and "s_per_step" in r:
                runs[(r["method"], r["size"])][(r["variant"], r["round"])] = r
    return runs


def ratio(rows: dict, a: str, b: str, key: str) -> str:
    """Per-round a/b of `key`, as 'median [min-max] (n)'."""
    rounds = sorted({k[1] for k in rows})
    vals = [rows[(a, n)][key] / rows[(b, n)][key] for n in rounds if (a, n) in rows and (b, n) in rows]
    if not vals:
        return "-"
    return f"{statistics.median(vals):.2f} [{min(vals):.2f}-{max(vals):.2f}] ({len(vals)})"


def med(rows: dict, variant: str, key: str, fmt: str = "{:.3g}") -> str:
    vals = [r[key] for (v, _), r in rows.items() if v == variant]
    return fmt.format(statistics.median(vals)) if vals else "-"


def tables(runs: dict) -> str:
    out = ["### 1. Wrapper overhead: main_train.py vs bare TRL script, same settings (our defaults on both)", "",
           "| method | size | tokens/step | s/step wrapper | s/step bare | step time ratio wrapper/bare "
           "| start-up s wrapper | start-up s bare | start-up difference s |", "|---|---|---|---|---|---|---|---|---|"]
    keyed = sorted(runs.items(), key=lambda kv: (kv[0][1] != "3.5M", kv[0][0]))
    for (method, size), rows in keyed:
        if method == "PPO":
            continue
        w, b = med(rows, "wrapper", "startup_s", "{:.1f}"), med(rows, "bare-same", "startup_s", "{:.1f}")
        diff = "-" if "-" in (w, b) else f"{float(w) - float(b):+.1f}"
        out.append(f"| {method} | {size} | {med(rows, 'wrapper', 'tokens_per_step', '{:.0f}')} | "
                   f"{med(rows, 'wrapper', 's_per_step')} | {med(rows, 'bare-same', 's_per_step')} | "
                   f"{ratio(rows, 'wrapper', 'bare-same', 's_per_step')} | {w} | {b} | {diff} |")
    out += ["", "### 2. Our defaults (main_train.py) vs TRL's defaults (bare TRL script), same job", "",
            "| method | size | tokens/s ours | tokens/s TRL | speed-up ours/TRL | peak RSS MB ours | peak RSS MB TRL "
            "| memory ratio ours/TRL | above-import MB ours | above-import MB TRL | ratio | MFU ours | MFU TRL |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, size), rows in keyed:
        if method == "PPO":
            continue
        out.append(f"| {method} | {size} | {med(rows, 'wrapper', 'tokens_per_s', '{:.0f}')} | "
                   f"{med(rows, 'bare-trl', 'tokens_per_s', '{:.0f}')} | "
                   f"{ratio(rows, 'wrapper', 'bare-trl', 'tokens_per_s')} | {med(rows, 'wrapper', 'peak_rss_mb', '{:.0f}')} | "
                   f"{med(rows, 'bare-trl', 'peak_rss_mb', '{:.0f}')} | {ratio(rows, 'wrapper', 'bare-trl', 'peak_rss_mb')} | "
                   f"{med(rows, 'wrapper', 'above_base_mb', '{:.0f}')} | {med(rows, 'bare-trl', 'above_base_mb', '{:.0f}')} | "
                   f"{ratio(rows, 'wrapper', 'bare-trl', 'above_base_mb')} | "
                   f"{med(rows, 'wrapper', 'mfu', '{:.1%}')} | {med(rows, 'bare-trl', 'mfu', '{:.1%}')} |")
    out += ["", "### 3. Our PPO vs TRL 1.11's experimental PPOTrainer, same rollout and update settings", "",
            "| size | s/update ours | s/update TRL 1.11 | time ratio ours/TRL | peak RSS MB ours | peak RSS MB TRL 1.11 "
            "| memory ratio | start-up s ours | start-up s TRL 1.11 |", "|---|---|---|---|---|---|---|---|---|"]
    for (method, size), rows in keyed:
        if method != "PPO":
            continue
        out.append(f"| {size} | {med(rows, 'ppo-ours', 's_per_step')} | {med(rows, 'ppo-trl111', 's_per_step')} | "
                   f"{ratio(rows, 'ppo-ours', 'ppo-trl111', 's_per_step')} | {med(rows, 'ppo-ours', 'peak_rss_mb', '{:.0f}')} | "
                   f"{med(rows, 'ppo-trl111', 'peak_rss_mb', '{:.0f}')} | {ratio(rows, 'ppo-ours', 'ppo-trl111', 'peak_rss_mb')} | "
                   f"{med(rows, 'ppo-ours', 'startup_s', '{:.1f}')} | {med(rows, 'ppo-trl111', 'startup_s', '{:.1f}')} |")
    peaks = sorted({r["matmul_peak_gflops"] for rows in runs.values() for r in rows.values()})
    loads = sorted(r["load"] for rows in runs.values() for r in rows.values())
    if peaks:
        out += ["", f"fp32 matmul peak measured between runs (1 thread, 1024^3): {peaks[0]}-{peaks[-1]} GFLOP/s, "
                    f"median {statistics.median(peaks)}; 1-minute load average during runs: "
                    f"{loads[0]:.1f}-{loads[-1]:.1f}, median {statistics.median(loads):.1f}."]
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(load(sys.argv[1:] or [DEFAULT])))
