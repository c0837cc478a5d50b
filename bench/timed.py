"""Run a training script under one shared, passive instrument, so the wrapper and the bare TRL script
are measured by exactly the same code.

    python bench/timed.py OUT.json SCRIPT.py [script args ...]

The instrument is a TrainerCallback added to every `transformers` CallbackHandler as it is built (patched
here, not in the script: TRL 1.11's PPOTrainer builds its handler without Trainer.__init__, so patching
the handler reaches every trainer). It records wall-clock times of train begin and of every step end and,
at exit, the process's peak RSS; inside the loop it only sums the wall time spent in `generate`
(transformers' GenerationMixin.generate, outermost call only), read at every step end: the sampling share
of an online method's step. Under `accelerate launch` every
rank writes OUT.json.rankN.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import json
import os
import resource
import runpy
import sys
import time

T_IMPORT = time.time()  # the driver also stamps the launch; this one excludes interpreter start-up


class _Record:
    train_begin: float | None = None
    step_ends: list[float] = []
    steps: list[int] = []
    base_rss_mb: float | None = None
    cpu_begin: float | None = None
    step_cpu: list[float] = []
    generate_s: float = 0.0  # wall seconds inside generate() so far
    generate_cpu: float = 0.0  # CPU seconds of this process inside generate() so far
    step_generate: list[float] = []  # generate_s at every step end
    step_generate_cpu: list[float] = []


def _patch(trainer_callback) -> None:
    class StepTimer(trainer_callback.TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            _Record.train_begin = time.time()
            _Record.cpu_begin = time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            _Record.step_ends.append(time.time())
            _Record.step_cpu.append(time.process_time())  # CPU seconds of this process: blind to other jobs' load
            _Record.steps.append(state.global_step)
            _Record.step_generate.append(_Record.generate_s)
            _Record.step_generate_cpu.append(_Record.generate_cpu)

    handler = trainer_callback.CallbackHandler
    original = handler.__init__

    def patched(self, callbacks, *args, **kwargs):
        original(self, list(callbacks or []) + [StepTimer()], *args, **kwargs)

    handler.__init__ = patched


def _patch_generate(generation_utils) -> None:
    mixin = generation_utils.GenerationMixin
    original, depth = mixin.generate, [0]

    def generate(self, *args, **kwargs):
        depth[0] += 1
        start, cpu = time.time(), time.process_time()
        try:
            return original(self, *args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                _Record.generate_s += time.time() - start
                _Record.generate_cpu += time.process_time() - cpu

    mixin.generate = generate


PATCHES = {"transformers.trainer_callback": _patch, "transformers.generation.utils": _patch_generate}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches `transformers.trainer_callback` when the script imports it: importing it here would import peft
    and bitsandbytes into runs that never would (utils.core.imports.hide_unused_bitsandbytes), i.e. measure our imports."""

    def __init__(self):
        self.todo = dict(PATCHES)

    def find_spec(self, name, path, target=None):
        if name not in self.todo:
            return None
        patch = self.todo.pop(name)
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            if self.todo:
                sys.meta_path.insert(0, self)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _install() -> None:
    import torch  # noqa: F401
    import transformers  # noqa: F401  (lazy: the top-level package only)

    # RSS once torch and transformers are loaded, before the script runs: the floor every run pays, so that
    # peak - base is what the models, optimizer, activations and data cost.
    with open("/proc/self/statm") as f:
        _Record.base_rss_mb = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    finder = _PatchOnImport()
    for name in list(finder.todo):  # already imported (not expected): patch it now
        if name in sys.modules:
            finder.todo.pop(name)(sys.modules[name])
    sys.meta_path.insert(0, finder)


def _write(path: str) -> None:
    rank = os.environ.get("RANK")
    if rank is not None and os.environ.get("WORLD_SIZE", "1") != "1":
        path = f"{path}.rank{rank}"
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    with open(path, "w") as f:
        json.dump({"t_import": T_IMPORT, "train_begin": _Record.train_begin, "step_ends": _Record.step_ends,
                   "steps": _Record.steps, "cpu_begin": _Record.cpu_begin, "step_cpu": _Record.step_cpu,
                   "step_generate": _Record.step_generate, "step_generate_cpu": _Record.step_generate_cpu,
                   "t_exit": time.time(), "peak_rss_mb": peak_kb / 1024,
                   "base_rss_mb": _Record.base_rss_mb}, f)


def main() -> None:
    out, script, *args = sys.argv[1:]
    _install()
    atexit.register(_write, out)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
