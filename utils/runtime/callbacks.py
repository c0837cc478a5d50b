"""Trainer callbacks we add to every run: the interrupt handler here, the NaN guard in utils/runtime/non_finite.py."""

from __future__ import annotations

import os
import signal
import time

from transformers import TrainerCallback


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
                from utils.data.arrow_sink import remove_scratch
                from utils.runtime.run_dir import release

                remove_scratch()  # os._exit skips the exit handlers
                release()
                os._exit(128 + signum)
            return
        self.signum, self._at = signum, time.monotonic()
        print(f"\n{signal.Signals(signum).name}: finishing this step, saving a checkpoint, then stopping "
              "(press Ctrl-C again to stop at once).", flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def on_step_end(self, args, state, control, **kwargs):
        from utils.core.distributed import agreed_max

        signum = agreed_max(self.signum or 0) or None
        if signum is not None:
            self.signum, self.step = signum, state.global_step
            control.should_save, control.should_training_stop = True, True
        return control
