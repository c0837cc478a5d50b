"""Trainer callbacks we add to every run: the NaN guard and the interrupt handler."""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import time

from transformers import TrainerCallback

# Logged values that, once NaN or infinite, mean the weights are already poisoned.
WATCHED = ("loss", "train_loss", "grad_norm")


def checkpoints(output_dir: str) -> dict[int, str]:
    """step -> path of every `checkpoint-N` directory in output_dir."""
    if not os.path.isdir(output_dir):
        return {}
    found = (re.fullmatch(r"checkpoint-(\d+)", name) for name in os.listdir(output_dir))
    return {int(m.group(1)): os.path.join(output_dir, m.group(0)) for m in found if m}


class StopOnNonFinite(TrainerCallback):
    """Stop at the first logged step whose loss (or gradient norm) is NaN / infinite, and keep only good checkpoints.

    The loss logged at step N was computed with the weights of step N-1 (and, logged every L steps, it averages
    steps since the previous log at step P, the first of them computed with the weights of step P). So every
    checkpoint from step P on may hold weights that already produce a non-finite loss: they are removed, and the
    checkpoint of step N is never written. `main_train` reports `tripped` and `last_good`, and exits non-zero."""

    def __init__(self):
        self.tripped: tuple[int, str, float] | None = None
        self.last_good: str | None = None
        self._last_log_step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = [(key, v) for key in WATCHED if isinstance(v := (logs or {}).get(key), (int, float))
               and not math.isfinite(v)]
        if not bad:
            if any(key in (logs or {}) for key in WATCHED):
                self._last_log_step = state.global_step
            return control
        self.tripped = (state.global_step, *bad[0])
        control.should_training_stop, control.should_save = True, False
        kept = checkpoints(args.output_dir)
        for step, path in kept.items():
            if step >= self._last_log_step and state.is_world_process_zero:
                shutil.rmtree(path, ignore_errors=True)
        good = [step for step in kept if step < self._last_log_step]
        self.last_good = kept[max(good)] if good else None
        return control


class StopOnSignal(TrainerCallback):
    """The first Ctrl-C (SIGINT) or SIGTERM finishes the optimizer step under way, saves a checkpoint and stops the
    run (`main_train` then prints how to resume and exits 130 / 143); a second Ctrl-C stops at once. Under
    `accelerate launch` the processes agree on the step (a max over their flags each step), so that every one saves
    the same checkpoint."""

    def __init__(self):
        self.signum: int | None = None
        self.step: int | None = None
        self._previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        # A launcher (torchrun, accelerate) passes a Ctrl-C on to its workers, which got it from the terminal too:
        # the same interrupt twice within a second. A second Ctrl-C of the user's own comes later: no waiting then.
        if self.signum is not None:
            if time.monotonic() - self._at > 1.0:
                os._exit(128 + signum)
            return
        self.signum, self._at = signum, time.monotonic()
        print(f"\n{signal.Signals(signum).name}: finishing this step, saving a checkpoint, then stopping "
              "(press Ctrl-C again to stop at once).", flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _agreed(self) -> int | None:
        """The signal, if any process got one (every process calls this at every step end)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.signum
        import torch

        flag = torch.tensor([self.signum or 0], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def on_step_end(self, args, state, control, **kwargs):
        signum = self._agreed()
        if signum is not None:
            self.signum, self.step = signum, state.global_step
            control.should_save, control.should_training_stop = True, True
        return control
