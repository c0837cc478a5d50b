"""Markdown tables from bench/out/results.jsonl (bench/run_bench.py): medians over rounds, and each
ratio as median [min-max] of the per-round ratios, since both runs of a round saw the same machine load.

    .venv/bin/python bench/report.py [results.jsonl ...]
"""

from __future__ import annotations

import json
import math
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
    vals = [rows[(a, n)][key] / rows[(b, n)][key] for n in rounds
            if rows.get((a, n), {}).get(key) and rows.get((b, n), {}).get(key)]
    if not vals:
        return "-"
    return f"{statistics.median(vals):.2f} [{min(vals):.2f}-{max(vals):.2f}] ({len(vals)})"


def med(rows: dict, variant: str, key: str, fmt: str = "{:.3g}") -> str:
    vals = [r[key] for (v, _), r in rows.items() if v == variant and r.get(key) is not None]
    return fmt.format(statistics.median(vals)) if vals else "-"


def _mfu(rows: dict, variant: str, peak: float, cpu: bool) -> str:
    """Model FLOPs per second of step time (wall or CPU) over the best fp32 matmul rate measured."""
    vals = []
    for (v, _), r in rows.items():
        if v != variant:
            continue
        gflops = r.get("model_gflops", r["mfu"] * r["matmul_peak_gflops"])  # older rows: mfu x their own peak
        if cpu and r.get("cpu_s_per_step"):
            gflops *= r["s_per_step"] / r["cpu_s_per_step"]
        elif cpu:
            continue
        vals.append(gflops / peak)
    return f"{statistics.median(vals):.0%}" if vals else "-"


def tables(runs: dict) -> str:
    keyed = sorted(runs.items(), key=lambda kv: (kv[0][1] != "3.5M", kv[0][0]))
    peaks = sorted(r["matmul_peak_gflops"] for rows in runs.values() for r in rows.values())
    top = peaks[-1] if peaks else float("nan")
    out = ["### 1. Wrapper overhead: main_train.py vs the bare TRL script, same settings (our defaults on both)", "",
           "| method | size | tokens/step | s/step wrapper | s/step bare | step time wrapper/bare, wall | same, CPU s "
           "| start-up s wrapper | start-up s bare | start-up difference s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, size), rows in keyed:
        if method == "PPO":
            continue
        w, b = med(rows, "wrapper", "startup_s", "{:.1f}"), med(rows, "bare-same", "startup_s", "{:.1f}")
        diff = "-" if "-" in (w, b) else f"{float(w) - float(b):+.1f}"
        out.append(f"| {method} | {size} | {med(rows, 'wrapper', 'tokens_per_step', '{:.0f}')} | "
                   f"{med(rows, 'wrapper', 's_per_step')} | {med(rows, 'bare-same', 's_per_step')} | "
                   f"{ratio(rows, 'wrapper', 'bare-same', 's_per_step')} | "
                   f"{ratio(rows, 'wrapper', 'bare-same', 'cpu_s_per_step')} | {w} | {b} | {diff} |")
    for size in sorted({k[1] for k in runs}, reverse=True):
        logs = [math.log(rows[("wrapper", n)][key] / rows[("bare-same", n)][key])
                for (method, sz), rows in runs.items() if sz == size and method != "PPO"
                for n in {k[1] for k in rows}
                for key in ["cpu_s_per_step"] if rows.get(("wrapper", n), {}).get(key)
                and rows.get(("bare-same", n), {}).get(key)]
        if len(logs) > 1:
            m, se = statistics.mean(logs), statistics.stdev(logs) / math.sqrt(len(logs))
            out.append(f"\nPooled over methods and rounds, {size}: wrapper/bare step time (CPU s) = "
                       f"{math.exp(m):.3f}, 95 % interval {math.exp(m - 2 * se):.3f}-{math.exp(m + 2 * se):.3f} "
                       f"({len(logs)} pairs; geometric mean).")
    out += ["", "### 2. Our defaults (main_train.py) vs TRL's defaults (bare TRL script), same job", "",
            "| method | size | tokens/s ours | tokens/s TRL | speed-up ours/TRL, wall | same, CPU s | peak RSS MB ours "
            "| peak RSS MB TRL | ratio | above-import MB ours | above-import MB TRL | ratio | MFU ours (wall / CPU) "
            "| MFU TRL (wall / CPU) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (method, size), rows in keyed:
        if method == "PPO":
            continue
        out.append(f"| {method} | {size} | {med(rows, 'wrapper', 'tokens_per_s', '{:.0f}')} | "
                   f"{med(rows, 'bare-trl', 'tokens_per_s', '{:.0f}')} | "
                   f"{ratio(rows, 'wrapper', 'bare-trl', 'tokens_per_s')} | "
                   f"{ratio(rows, 'wrapper', 'bare-trl', 'cpu_tokens_per_s')} | "
                   f"{med(rows, 'wrapper', 'peak_rss_mb', '{:.0f}')} | {med(rows, 'bare-trl', 'peak_rss_mb', '{:.0f}')} | "
                   f"{ratio(rows, 'wrapper', 'bare-trl', 'peak_rss_mb')} | {med(rows, 'wrapper', 'above_base_mb', '{:.0f}')} | "
                   f"{med(rows, 'bare-trl', 'above_base_mb', '{:.0f}')} | {ratio(rows, 'wrapper', 'bare-trl', 'above_base_mb')} | "
                   f"{_mfu(rows, 'wrapper', top, False)} / {_mfu(rows, 'wrapper', top, True)} | "
                   f"{_mfu(rows, 'bare-trl', top, False)} / {_mfu(rows, 'bare-trl', top, True)} |")
    out += ["", "### 3. Our PPO vs TRL 1.11's experimental PPOTrainer, same rollout and update settings", "",
            "| size | s/update ours | s/update TRL 1.11 | time ours/TRL, wall | same, CPU s | peak RSS MB ours "
            "| peak RSS MB TRL 1.11 | ratio | above-import MB ours / TRL 1.11 | start-up s ours / TRL 1.11 |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for (method, size), rows in keyed:
        if method != "PPO":
            continue
        out.append(f"| {size} | {med(rows, 'ppo-ours', 's_per_step')} | {med(rows, 'ppo-trl111', 's_per_step')} | "
                   f"{ratio(rows, 'ppo-ours', 'ppo-trl111', 's_per_step')} | "
                   f"{ratio(rows, 'ppo-ours', 'ppo-trl111', 'cpu_s_per_step')} | {med(rows, 'ppo-ours', 'peak_rss_mb', '{:.0f}')} | "
                   f"{med(rows, 'ppo-trl111', 'peak_rss_mb', '{:.0f}')} | {ratio(rows, 'ppo-ours', 'ppo-trl111', 'peak_rss_mb')} | "
                   f"{med(rows, 'ppo-ours', 'above_base_mb', '{:.0f}')} / {med(rows, 'ppo-trl111', 'above_base_mb', '{:.0f}')} | "
                   f"{med(rows, 'ppo-ours', 'startup_s', '{:.1f}')} / {med(rows, 'ppo-trl111', 'startup_s', '{:.1f}')} |")
    ablations = [(k, rows) for k, rows in keyed if any(v.startswith("wrapper:") for v, _ in rows)]
    if ablations:
        out += ["", "### 4. What each default buys: our defaults with one of them undone (same rounds, interleaved)", "",
                "| method | size | run | tokens/s | speed vs TRL defaults, wall | same, CPU s | peak RSS MB "
                "| above-import MB | memory vs TRL defaults (peak RSS) |", "|---|---|---|---|---|---|---|---|---|"]
        for (method, size), rows in ablations:
            variants = ["bare-trl", "wrapper"] + sorted({v for v, _ in rows if v.startswith("wrapper:")})
            for v in variants:
                name = {"bare-trl": "TRL defaults (bare script)", "wrapper": "our defaults"}.get(
                    v, "ours, but " + v.partition(":")[2])
                out.append(f"| {method} | {size} | {name} | {med(rows, v, 'tokens_per_s', '{:.0f}')} | "
                           f"{ratio(rows, v, 'bare-trl', 'tokens_per_s')} | {ratio(rows, v, 'bare-trl', 'cpu_tokens_per_s')} | "
                           f"{med(rows, v, 'peak_rss_mb', '{:.0f}')} | {med(rows, v, 'above_base_mb', '{:.0f}')} | "
                           f"{ratio(rows, v, 'bare-trl', 'peak_rss_mb')} |")
    online = [(k, rows) for k, rows in keyed if any("gen_share" in r for r in rows.values())]
    if online:
        out += ["", "### 5. Sampling share of online steps: wall time inside `generate` / step wall time (bench/timed.py)", "",
                "| method | size | run | s/step | generate s/step | generate share, wall | CPU s/step | generate CPU s/step "
                "| generate share, CPU |", "|---|---|---|---|---|---|---|---|---|"]
        for (method, size), rows in online:
            for v in sorted({v for (v, _), r in rows.items() if "gen_share" in r}):
                out.append(f"| {method} | {size} | {v} | {med(rows, v, 's_per_step')} | {med(rows, v, 'gen_s_per_step')} "
                           f"| {med(rows, v, 'gen_share', '{:.0%}')} | {med(rows, v, 'cpu_s_per_step')} "
                           f"| {med(rows, v, 'gen_cpu_s_per_step')} | {med(rows, v, 'gen_cpu_share', '{:.0%}')} |")
    loads = sorted(r["load"] for rows in runs.values() for r in rows.values())
    if peaks:
        out += ["", f"fp32 matmul rate measured before each run (1 thread, 1024^3): {peaks[0]}-{top} GFLOP/s, median "
                    f"{statistics.median(peaks)}; MFU is against the best, {top}. 1-minute load average at the end "
                    f"of runs: {loads[0]:.1f}-{loads[-1]:.1f}, median {statistics.median(loads):.1f}."]
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(load(sys.argv[1:] or [DEFAULT])))
