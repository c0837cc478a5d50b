"""Profile training steps of main_train.py or of the bare TRL script on a bench job (torch.profiler, CPU).

    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_step.py wrapper DPO 0.2M
    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_step.py bare DPO 0.2M
    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_step.py wrapper DPO-LoRA smollm2 1 3   # steps 2-3 only
    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_step.py trl DPO-LoRA smollm2 1 3       # bare, TRL's defaults
    OMP_NUM_THREADS=1 .venv/bin/python bench/profile_step.py bare VLM-DPO vlm 2 6            # vision-language job

Runs the job of bench/jobs.py for 20 steps (or LAST), profiles steps 6-15 (or FIRST+1 to LAST), prints the step times and the top operators
by self CPU time, and writes every operator's call count and self CPU time to
bench/out/profile/<script>-<method>-<size>.json: two scripts doing the same work have the same call counts.
"""

from __future__ import annotations

import json
import runpy
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jobs  # noqa: E402
from jobs import OUT, ROOT  # noqa: E402

FIRST, LAST = 5, 15  # profiled: the steps after global step FIRST up to LAST


def main() -> None:
    global FIRST, LAST
    script, method, size = sys.argv[1:4]
    if len(sys.argv) > 5:
        FIRST, LAST = int(sys.argv[4]), int(sys.argv[5])
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers.trainer_callback import CallbackHandler, TrainerCallback

    torch.set_num_threads(1)
    jobs.build(sizes=[size])
    marks, prof = [], profile(activities=[ProfilerActivity.CPU])

    class Profiled(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())
            if state.global_step == FIRST:
                prof.__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == LAST:
                prof.__exit__(None, None, None)

    original = CallbackHandler.__init__
    CallbackHandler.__init__ = lambda self, cbs, *a, **k: original(self, list(cbs or []) + [Profiled()], *a, **k)
    run = OUT / "profile" / f"run-{script}"
    shutil.rmtree(run, ignore_errors=True)  # main_train refuses an output_dir holding another run
    flags = jobs.job_flags(method, size, LAST if len(sys.argv) > 5 else 20, run)
    if script in ("bare", "trl"):  # bare: TRL with our values; trl: TRL's own defaults
        sys.argv = ["bare_trl.py", "--defaults", "trl" if script == "trl" else "ours", *flags, *jobs.bare_flags(method)]
        runpy.run_path(str(ROOT / "bench" / "bare_trl.py"), run_name="__main__")
    else:
        sys.path.insert(0, str(ROOT))
        import main_train

        main_train.main(flags)
    print("step seconds:", [round(b - a, 3) for a, b in zip(marks, marks[1:])])
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=20))
    # Inclusive times too: user annotations (Optimizer.step#AdamW.step, autograd::engine, generate's ops) show
    # where a step's time goes, not only which kernels burn it.
    print(averages.table(sort_by="cpu_time_total", row_limit=15))
    ops = {e.key: {"calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 2),
                   "cpu_total_ms": round(e.cpu_time_total / 1e3, 2)} for e in averages}
    path = OUT / "profile" / f"{script}-{method}-{size}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(ops, indent=1, sort_keys=True))
    print(f"self CPU {sum(o['self_cpu_ms'] for o in ops.values()) / 1e3:.3f} s over steps {FIRST + 1}-{LAST}; {path}")


if __name__ == "__main__":
    main()
