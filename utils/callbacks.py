"""Trainer callbacks we add to every run."""

from __future__ import annotations

import math

from transformers import TrainerCallback

# Logged values that, once NaN or infinite, mean the weights are already poisoned.
WATCHED = ("loss", "train_loss", "grad_norm")


class StopOnNonFinite(TrainerCallback):
    """Stop at the first logged step whose loss (or gradient norm) is NaN / infinite.

    Runs before the checkpoint of that step is written, and cancels it, so the last checkpoint on
    disk is the last good one. `main_train` reports `tripped` and exits non-zero.
    """

    def __init__(self):
        self.tripped: tuple[int, str, float] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in WATCHED:
            value = (logs or {}).get(key)
            if isinstance(value, (int, float)) and not math.isfinite(value):
                self.tripped = (state.global_step, key, value)
                control.should_training_stop = True
                control.should_save = False
                return control
        return control
