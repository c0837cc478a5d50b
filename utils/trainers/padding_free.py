"""Padding-free training on any attention implementation (sdpa, eager, flash): (almost) no compute on padding.

transformers 5.23 turns position ids that restart at 0 inside one row into a block-diagonal causal mask when no
attention mask is given (`masking_utils.find_packed_sequence_indices`, for sdpa and eager too). So sequences laid end
to end in a row, each with positions 0, 1, ..., give the padded batch's logits without computing on padding.

- DPO: TRL 1.16 ignores `padding_free` (it warns that it is "temporarily unavailable" and pads). CPO / SimPO / ORPO
  (trl.experimental) have no such option; our args add it. These trainers call the model on a padded [2B, L] batch
  (chosen rows, then rejected rows). While their loss runs, `PaddingFree` hooks the model: the call is packed into
  as few rows as fit (`pack`: with the next-token labels pre-shifted within each sequence, for TRL's fused LM head),
  and every per-token output is scattered back to the padded shape (zeros on padding), so TRL's loss code runs
  unchanged. Same loss, rewards and log-probs; only CPO / ORPO's `logits/*` metrics (a mean over every position,
  padding included) differ.
  The hooks sit on the causal LM itself (under a PEFT wrapper, DDP or a DeepSpeed engine), so LoRA, the reference
  forward and `precompute_ref_log_probs` are packed too. DPO's own padding-free is tracked in huggingface/trl#2469
  (documented as unavailable by huggingface/trl#7014): drop the DPO class when it is back and no slower than this.
- SFT: TRL's own `padding_free` collator flattens the whole batch into one row; transformers masks it as above, so
  it is exact on sdpa too, but one row's attention costs (sum of lengths)^2 (see `pack`), and TRL 1.16 refuses it
  next to a `max_length` ("max_length is not enforced", a guard from huggingface/trl#5359, stale since 1.16 truncates
  rows in `_prepare_dataset` again; no report of it found, searched "padding_free max_length is not enforced SFT",
  2026-12-02). `PaddingFreeSFTTrainer` hides the option from TRL (padded collator, rows truncated as usual) and packs
  with the same hooks; keep it while TRL's one-row collator costs more than padding (bench/RESULTS.md).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from peft import PeftModel
from trl import DPOTrainer, SFTTrainer
from trl.experimental.cpo import CPOTrainer
from trl.experimental.orpo import ORPOTrainer


def fill_rows(lengths: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: the sequences (indices into `lengths`) of each packed row, at most `width` tokens a row."""
    rows, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        r = next((r for r, free in enumerate(room) if lengths[i] <= free), None)
        if r is None:
            rows.append([])
            room.append(width)
            r = len(rows) - 1
        rows[r].append(i)
        room[r] -= lengths[i]
    return rows


def pack(args: tuple, kwargs: dict):
    """A padded causal-LM call -> (args, kwargs) of the same call on packed rows, and what unpacking its outputs
    needs. None when the call is not one to pack, or packing saves nothing.

    Rows are filled first-fit decreasing up to the padded length: one row holding the whole batch would remove all
    padding, but sdpa and eager attention then cost (sum of lengths)^2 instead of rows x length^2, which loses from
    about 4 rows on (bench/RESULTS.md); this way attention never costs more than padded and little padding is left."""
    mask = kwargs.get("attention_mask")
    ids = args[0] if args else kwargs.get("input_ids")
    if (mask is None or ids is None or mask.dim() != 2 or any(
            kwargs.get(k) is not None for k in ("position_ids", "inputs_embeds", "past_key_values", "shift_labels"))):
        return None  # already packed, prompt-learning PEFT (embeddings), generation: left as they are
    if kwargs.get("labels") is not None and not kwargs.get("fused_lm_head"):
        return None  # the model's own loss would shift labels across sequence boundaries
    if any(torch.is_tensor(v) and k not in ("input_ids", "attention_mask", "labels") for k, v in kwargs.items()):
        return None  # pixel values, token type ids, ...: tensors this function does not know how to pack
    mask = mask.bool()
    lengths = mask.sum(1).tolist()
    rows = fill_rows(lengths, mask.size(1))
    if len(rows) == mask.size(0):
        return None
    width = max(sum(lengths[i] for i in row) for row in rows)
    # dst: flat index of each real token in the padded batch; src: where it goes in the packed [rows, width] batch
    real = mask.flatten().nonzero().squeeze(1).split(lengths)
    dst, src, pos = [], [], torch.arange(width, device=mask.device).repeat(len(rows))
    for r, row in enumerate(rows):
        offset = r * width
        for i in row:
            dst.append(real[i])
            src.append(torch.arange(offset, offset + lengths[i], device=mask.device))
            pos[src[-1]] = torch.arange(lengths[i], device=mask.device)  # positions restart: one sequence each
            offset += lengths[i]
    dst, src = torch.cat(dst), torch.cat(src)
    packed = ids.new_zeros(len(rows) * width)
    packed[src] = ids.flatten()[dst]
    packed = packed.view(len(rows), width)
    # transformers reads restarting position ids as separate sequences only without a cache (masking_utils)
    kwargs = dict(kwargs, attention_mask=None, position_ids=pos.view(len(rows), width), use_cache=False)
    shifted = kwargs.get("labels") is not None
    if shifted:
        # TRL's fused LM head scores `shift_labels` as given: each token's next label within its own sequence,
        # -100 on the last token of each (the next one in the row belongs to another sequence) and on the filling.
        next_real = F.pad(mask[:, 1:], (0, 1))
        next_labels = F.pad(kwargs.pop("labels")[:, 1:], (0, 1), value=-100).masked_fill(~next_real, -100)
        shift_labels = next_labels.new_full((len(rows) * width,), -100)
        shift_labels[src] = next_labels.flatten()[dst]
        kwargs["shift_labels"] = shift_labels.view(len(rows), width)
    if args:
        args = (packed, *args[1:])
    else:
        kwargs["input_ids"] = packed
    return args, kwargs, (mask.shape, tuple(packed.shape), src, dst, shifted)


def unpack(output, state):
    """Per-token outputs of the packed rows [rows, width, ...] -> the padded shape [B, L, ...] (zeros on padding);
    [B, L - 1, ...] for pre-shifted labels, the shape the unshifted call returns."""
    padded_shape, packed_shape, src, dst, shifted = state
    for key in list(output.keys()):
        value = output[key]
        if torch.is_tensor(value) and value.dim() >= 2 and tuple(value.shape[:2]) == packed_shape:
            rest = value.shape[2:]
            full = value.new_zeros(padded_shape.numel(), *rest)
            full[dst] = value.reshape(-1, *rest)[src]
            full = full.view(*padded_shape, *rest)
            output[key] = full[:, :-1] if shifted else full
    return output


class PaddingFree:
    """Mixin before a TRL trainer whose loss calls the model on padded rows: packs those calls while `compute_loss`,
    `prediction_step` (and DPO's reference pass) run, when `padding_free` is on. Subclasses set `_pf_on` in __init__."""

    _pf_on = False
    _pf_active = False

    def _pf_models(self):
        models = [getattr(self, "model", None), getattr(self, "ref_model", None)]
        models = [m.get_base_model() if isinstance(m, PeftModel) else m for m in models if m is not None]
        # transformers' own model classes build their masks in masking_utils; remote code may not: left padded
        return [m for m in models if type(m).__module__.startswith("transformers.models.")]

    @contextlib.contextmanager
    def _packed(self):
        if not self._pf_on or self._pf_active:  # off, or already packing (compute_loss inside prediction_step)
            yield
            return
        states = []  # one per call in flight: calls do not nest, the hooks sit on the innermost model

        def before(module, args, kwargs):
            packed = pack(args, kwargs)
            states.append(packed and packed[2])
            return packed and packed[:2]

        def after(module, args, kwargs, output):
            state = states.pop()
            return unpack(output, state) if state else None

        handles = []
        for model in self._pf_models():
            handles.append(model.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(model.register_forward_hook(after, with_kwargs=True))
        self._pf_active = True
        try:
            yield
        finally:
            self._pf_active = False
            for h in handles:
                h.remove()

    def compute_loss(self, *args, **kwargs):
        with self._packed():
            return super().compute_loss(*args, **kwargs)

    def prediction_step(self, *args, **kwargs):
        with self._packed():
            return super().prediction_step(*args, **kwargs)


def _hide_padding_free(trainer, init, args, kwargs):
    """Run a TRL trainer's __init__ with `padding_free` off (TRL 1.16's DPOTrainer would warn and pad), on afterwards;
    the mixin does the packing."""
    config = kwargs.get("args")
    trainer._pf_on = bool(getattr(config, "padding_free", False))
    if trainer._pf_on:
        config.padding_free = False
    try:
        init(*args, **kwargs)
    finally:
        if trainer._pf_on:
            config.padding_free = True


class PaddingFreeDPOTrainer(PaddingFree, DPOTrainer):
    """TRL's DPOTrainer with `padding_free` working (any attention implementation)."""

    def __init__(self, *args, **kwargs):
        _hide_padding_free(self, super().__init__, args, kwargs)

    def compute_ref_log_probs(self, model, inputs):  # the `precompute_ref_log_probs` pass, run from __init__
        with self._packed():
            return super().compute_ref_log_probs(model, inputs)


class PaddingFreeCPOTrainer(PaddingFree, CPOTrainer):
    """TRL's experimental CPOTrainer (CPO, SimPO, CPO-SimPO) with `padding_free` (a field of our CPOArgs)."""

    def __init__(self, *args, **kwargs):
        _hide_padding_free(self, super().__init__, args, kwargs)


class PaddingFreeORPOTrainer(PaddingFree, ORPOTrainer):
    """TRL's experimental ORPOTrainer with `padding_free` (a field of our ORPOArgs)."""

    def __init__(self, *args, **kwargs):
        _hide_padding_free(self, super().__init__, args, kwargs)


class PaddingFreeSFTTrainer(PaddingFree, SFTTrainer):
    """TRL's SFTTrainer with `padding_free` packed as above, on sdpa / eager too. TRL's own `padding_free` puts the
    whole batch in one row, whose attention costs (sum of lengths)^2, and TRL 1.16 refuses it next to `max_length`."""

    def __init__(self, *args, **kwargs):
        _hide_padding_free(self, super().__init__, args, kwargs)
