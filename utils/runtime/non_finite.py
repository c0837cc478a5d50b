"""The NaN guard: when a training loss turns NaN or infinite, find out from evidence whether the weights or the data
did it, keep or remove checkpoints accordingly, and stop the run (`main_train` prints `message` and exits 3).

The loss of step N is computed with the weights saved as checkpoint N-1 (when one was saved). Before anything is
removed the guard re-runs, on those same weights and without gradients:
  1. the last batch whose loss was finite. Non-finite now: the weights are bad ("weights"), unless half precision
     is in play and the batch is finite in fp32 ("half").
  2. finite (or no such batch yet: the first step): each row of the failing batch alone. Rows non-finite on their
     own are named (FILE:LINE); the weights are kept ("data"). When every row is finite alone, the batch as a whole
     is named. Rows finite in fp32 but not in half precision: "half".
"weights" removes the checkpoint of those weights (every older one gave a finite loss on the batch after it);
"data" and "half" keep every checkpoint. Under several processes each one re-runs its own batch and names its own
rows; the decision is the worst of theirs (weights > half > data), agreed at the end of the step."""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from transformers import TrainerCallback

from utils.core.distributed import launched_many
from utils.runtime.outputs import checkpoints
from utils.runtime.row_trace import examples_of, name_rows

# Logged values that, once NaN or infinite, mean the run must stop (a non-finite gradient norm with a finite loss).
WATCHED = ("loss", "train_loss", "grad_norm")
log = logging.getLogger("main_train")
CAUSES = ("", "data", "half", "weights")  # agreed across processes by a max over the index


@dataclass
class Finding:
    """What one process found at the step whose loss was non-finite."""

    step: int  # the step whose loss was non-finite, as logged (1-based)
    value: float
    cause: str  # one of CAUSES
    rows: list[str] = field(default_factory=list)  # the rows named: FILE:LINE, or an excerpt when not traceable
    alone: bool = True  # each named row is non-finite on its own (else: the batch's rows, finite one by one)
    traced: bool = True  # the failing batch could be traced back to its rows


class StopOnNonFinite(TrainerCallback):
    """The NaN guard (module docstring). `attach(trainer, origin)` wraps the trainer's `compute_loss` (to see every
    micro-batch's loss before the optimizer step) and its data collator (to know each batch's rows); without it,
    only logged values are watched and the checkpoints from the last finite log on are removed."""

    def __init__(self):
        self.finding: Finding | None = None  # this process's
        self.cause = ""  # agreed
        self.tripped: tuple[int, str, float] | None = None  # (step, logged key, value)
        self.last_good: str | None = None
        self.removed: list[str] = []
        self._last_log_step = 0
        self._prev = None  # the inputs of the last micro-batch whose loss was finite
        self._recent = deque(maxlen=64)  # (examples, collated batch) of the batches most recently built
        self._trainer = self._origin = None
        self._busy = False

    # ------------------------------------------------------------------------------------------ watching
    def attach(self, trainer, origin=None) -> None:
        """`origin(i)`: FILE:LINE of row i of the dataset the trainer was given (None when unknown)."""
        self._trainer, self._origin = trainer, origin
        compute_loss, collator = trainer.compute_loss, trainer.data_collator

        def watched_loss(model, inputs, *args, **kwargs):
            seen = dict(inputs.items()) if isinstance(inputs, Mapping) else inputs  # as given: losses pop keys
            out = compute_loss(model, inputs, *args, **kwargs)
            if self._busy or self.finding is not None or not getattr(model, "training", False):
                return out
            loss = out[0] if isinstance(out, tuple) else out
            import torch

            if not torch.is_tensor(loss) or bool(torch.isfinite(loss.detach()).all()):
                self._prev = seen
            else:
                self.finding = self._diagnose(model, seen, float(loss.detach().float().flatten()[0]))
            return out

        trainer.compute_loss = watched_loss
        self._compute_loss = compute_loss
        if collator is not None:
            def recorded(examples):
                batch = collator(examples)
                self._recent.append((examples, batch))
                return batch

            trainer.data_collator = recorded
            self._collate = collator

    def on_step_end(self, args, state, control, **kwargs):
        from utils.core.distributed import agreed_max

        code = agreed_max(CAUSES.index(self.finding.cause) if self.finding else 0)
        if code:
            self.cause = CAUSES[code]
            control.should_training_stop, control.should_save = True, False
            kept = checkpoints(args.output_dir)
            step = state.global_step - 1  # the weights that computed this step's loss
            if self.cause == "weights":  # theirs and any later; every older one gave a finite loss after it
                self._drop({s: p for s, p in kept.items() if s >= step}, state)
            good = [s for s in kept if s < step or self.cause != "weights"]
            self.last_good = kept[max(good)] if good else None
            if self.tripped is None:
                self.tripped = (state.global_step, "loss", self.finding.value if self.finding else math.nan)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.cause:
            return control
        bad = [(key, v) for key in WATCHED if isinstance(v := (logs or {}).get(key), (int, float))
               and not math.isfinite(v)]
        if not bad:
            if any(key in (logs or {}) for key in WATCHED):
                self._last_log_step = state.global_step
            return control
        # A non-finite value that no loss showed (a gradient norm): the loss logged at step N was computed with the
        # weights of step N-1 and averages the steps since the last log at step P, so every checkpoint from P on
        # may hold weights that already produce it.
        self.tripped, self.cause = (state.global_step, *bad[0]), "weights"
        control.should_training_stop, control.should_save = True, False
        kept = checkpoints(args.output_dir)
        self._drop({s: p for s, p in kept.items() if s >= self._last_log_step}, state)
        good = [s for s in kept if s < self._last_log_step]
        self.last_good = kept[max(good)] if good else None
        return control

    def _drop(self, paths: dict[int, str], state) -> None:
        self.removed = sorted(paths.values())
        if state.is_world_process_zero:
            for path in self.removed:
                shutil.rmtree(path, ignore_errors=True)

    # ----------------------------------------------------------------------------------------- deciding
    def _diagnose(self, model, inputs, value: float) -> Finding:
        trainer = self._trainer
        step = trainer.state.global_step + 1
        self._busy = True
        metrics = copy.deepcopy(getattr(trainer, "_metrics", None))
        net = trainer.accelerator.unwrap_model(model)
        was_training = net.training
        local = ("gather", "gather_for_metrics", "reduce", "pad_across_processes")  # metrics only, here
        for name in local:  # the other processes are not in this re-run: no collective may wait for them
            setattr(trainer.accelerator, name, lambda tensor, *args, **kwargs: tensor)
        start = time.monotonic()
        try:
            net.eval()
            found = self._decide(trainer, model, net, inputs, value, step)
            what = "sampling failed" if inputs is None else f"loss {value}"
            log.info("%s at step %d: re-ran the batches on the same weights in %.1f s: %s", what, step,
                     time.monotonic() - start, found.cause)
            return found
        except Exception as e:  # noqa: BLE001 - the evidence could not be gathered: the weights are suspect
            log.warning("could not re-run the failing batch (%s: %s)", type(e).__name__, e)
            return Finding(step, value, "weights", traced=False)
        finally:
            for name in local:
                trainer.accelerator.__dict__.pop(name, None)
            net.train(was_training)
            if metrics is not None:
                trainer._metrics = metrics
            self._busy = False

    def _decide(self, trainer, model, net, inputs, value, step) -> Finding:
        if _sharded(trainer):  # ZeRO-3: a forward pass is a collective the other processes are not in
            return Finding(step, value, "weights", traced=False)
        prev = None if self._prev is None else self._finite(net, self._prev)
        if prev is False:
            return Finding(step, value, self._half_or(model, net, [self._prev], "weights"))
        if inputs is None:  # sampling failed: no batch of this step to re-run
            return Finding(step, value, "sampling", traced=False)
        examples = examples_of(self._recent, inputs)
        if examples is None:  # e.g. online RL: the batch is generated, not rows of the file
            cause = "data" if prev else self._half_or(model, net, [inputs], "weights")
            return Finding(step, value, cause, traced=False)
        single = [self._collate([ex]) for ex in examples]
        bad = [i for i, batch in enumerate(single) if not self._finite(net, batch)]
        if prev is None and len(bad) == len(examples):  # the starting weights fail on every row
            cause = self._half_or(model, net, single, "weights")
            return Finding(step, value, cause, name_rows(trainer, self._origin, examples, bad))
        named = bad or list(range(len(examples)))
        cause = self._half_or(model, net, [single[i] for i in bad], "data") if bad else "data"
        return Finding(step, value, cause, name_rows(trainer, self._origin, examples, named), alone=bool(bad))

    def _finite(self, net, batch) -> bool:
        import torch
        from transformers import Trainer

        with torch.no_grad():
            out = self._compute_loss(net, Trainer._prepare_inputs(self._trainer, batch))
        loss = out[0] if isinstance(out, tuple) else out
        return bool(torch.isfinite(loss.detach()).all())

    def _half_or(self, model, net, batches, otherwise: str) -> str:
        """"half" when half precision is in play and every batch is finite in fp32; else `otherwise`."""
        import torch

        halves = {p.dtype for p in net.parameters()} & {torch.float16}
        autocast = getattr(self._trainer.accelerator, "mixed_precision", "no") == "fp16"
        quantized = any(p.dtype in (torch.uint8, torch.int8) for p in net.parameters())
        if not batches or quantized or not (halves or autocast):
            return otherwise
        try:
            net = self._trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
            net.float()  # in place: the run stops here, these weights are never saved
        except Exception:  # noqa: BLE001 - e.g. out of memory: no evidence either way
            return otherwise
        device = next(net.parameters()).device.type
        with torch.autocast(device, enabled=False):
            return "half" if all(self._finite(net, b) for b in batches) else otherwise

    def sampling_failed(self, trainer, error: Exception) -> bool:
        """Online methods sample before any loss: weights gone non-finite fail there first, as torch.multinomial's
        "probability tensor contains either `inf`, `nan` or element < 0". True (and the verdict taken) for that one:
        the weights in memory (those of the latest step, saved as its checkpoint) are bad when they give a non-finite
        loss on the last batch whose loss was finite; else the prompts are suspect."""
        if "probability tensor contains" not in str(error):
            return False
        # The last batch whose loss was finite, re-run on these weights, tells (a weight that is not finite may be
        # one token's embedding that only a prompt of this step uses).
        bad = self._diagnose(trainer.model_wrapped, None, math.nan).cause != "sampling"
        step = trainer.state.global_step
        self.tripped, self.cause = (step + 1, "a sampling probability", math.nan), "weights" if bad else "sampling"
        kept = checkpoints(trainer.args.output_dir)
        if bad:
            self._drop({s: p for s, p in kept.items() if s >= step}, trainer.state)
        good = [s for s in kept if s < step or not bad]
        self.last_good = kept[max(good)] if good else None
        return True

    # ------------------------------------------------------------------------------------------ telling
    def message(self, resume) -> str:
        """The paragraph main_train prints; `resume(checkpoint)`: the command line that resumes from it."""
        step, key, value = self.tripped
        f = self.finding
        resume_line = (f"resume with:\n  {resume(self.last_good)}" if self.last_good else "")
        if self.cause == "weights":
            names = ", ".join(os.path.basename(p) for p in self.removed)
            removed = (f"the checkpoints whose weights produced it were removed ({names})" if self.removed
                       else "no checkpoint held those weights")
            last = (f"The last good checkpoint is {self.last_good}; {resume_line}" if self.last_good
                    else "No checkpoint from before it was kept.")
            evidence = ("the gradient norm was not finite" if key == "grad_norm" and f is None else
                        "the weights give non-finite values" if key == "a sampling probability" else
                        "the weights are taken to be the cause (the batch could not be re-run)" if f is None
                        or not f.traced else "the weights give a non-finite loss on every row of the batch, one at "
                        "a time" if f.rows else "the weights give a non-finite loss on the last batch that was "
                        "finite before it")
            return (f"{key} became {value} at step {step}: {evidence}. Training stopped there, the final model was "
                    f"not saved, and {removed}. {last}\nLower the learning rate (--learning_rate), keep gradient "
                    "clipping on (--max_grad_norm 1.0), or use bf16 or fp32 rather than fp16.")
        kept = (f"The weights are fine and every checkpoint was kept; the latest is {self.last_good}: "
                f"{resume_line}" if self.last_good else "The weights are fine; no checkpoint had been saved yet.")
        if self.cause == "sampling":
            return (f"{key} became {value} at step {step}, while sampling completions, and the weights are finite: a "
                    f"prompt holding a token whose embedding is not finite, or float16 overflow, does this. Training "
                    f"stopped there and the final model was not saved. {kept}\nCheck the prompts of that step, or "
                    "use --bf16 true or fp32 instead of float16.")
        if self.cause == "half":
            return (f"{key} became {value} at step {step} in half precision (float16): the same batch gives a finite "
                    f"loss in fp32, so values overflowed float16's range. Training stopped there and the final model "
                    f"was not saved. {kept}\nUse --bf16 true (GPUs since Ampere) or fp32 (--dtype float32, without "
                    "--fp16) instead of float16.")
        body = ""
        if f is None:
            body = "another process names the rows."
        elif f.rows and not f.alone:
            body = (f"every row of the failing batch gives a finite loss on its own and together they do not; the "
                    f"batch's rows: {', '.join(f.rows)}.")
        elif len(f.rows) == 1:
            body = f"the row at {f.rows[0]} gives a non-finite loss on its own."
        elif f.rows:
            body = f"these rows give a non-finite loss, each on its own: {', '.join(f.rows)}."
        elif not f.traced:
            body = "the failing batch could not be traced back to rows of the file."
        rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK"))  # launched_many(): LOCAL_RANK at least is set
        rows = f" On process {rank}, {body}" if launched_many() else f" {body[:1].upper()}{body[1:]}"
        return (f"{key} became {value} at step {step}, caused by the data: the weights give a finite loss on the last "
                f"batch before it.{rows} Training stopped there and the final model was not saved. {kept}\nDrop or "
                "fix those rows (a token whose embedding is not finite, an empty or extremely long row), then resume "
                "from the checkpoint.")


def _sharded(trainer) -> bool:
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return plugin is not None and getattr(plugin, "zero_stage", 0) == 3
