"""The trained weights' precision, once the trainer is built and before its optimizer is (utils/model/dtype.py says
which dtype each model loads in):

- `keep_master_weights`: every tensor the optimizer will update is float32, whatever put it in a half dtype. TRL
  1.16 casts a QLoRA adapter to bfloat16 (its trainers' `_is_quantized_model` branch, "following the QLoRA paper"),
  a value or score head is made in its backbone's dtype, and a checkpoint saved in bfloat16 loads as such with
  `--dtype checkpoint`: AdamW's small updates would round away on each of them. DeepSpeed in bf16 / fp16 keeps
  float32 master weights of its own and wants one dtype in its module (an fp32 adapter beside a bf16 base fails in
  ZeRO-3's gathers: deepspeedai/DeepSpeed#8072), so it is left alone there; DeepSpeed in fp32 trains what it gets,
  so its tensors are moved like the others (a QLoRA adapter ZeRO-3 has already partitioned: its shard too).
- `PureBf16Watch`: with --pure_bf16 the trained weights stay in bfloat16 on purpose; after the first optimizer step
  it says, once and with numbers, how much of that step was lost to rounding.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

log = logging.getLogger("main_train")


def trained_parameters(model):
    return [p for p in model.parameters() if p.requires_grad]


def keep_master_weights(trainer, pure_bf16: bool) -> None:
    import torch

    args = trainer.args
    if pure_bf16:
        trainer.add_callback(PureBf16Watch(trainer.model, args.learning_rate))
    if pure_bf16 or (getattr(trainer, "is_deepspeed_enabled", False) and (args.bf16 or args.fp16)):
        return
    moved = 0
    for p in trained_parameters(trainer.model):
        if p.dtype in (torch.bfloat16, torch.float16):
            if hasattr(p, "ds_tensor"):  # already partitioned by ZeRO-3: its shard, and the empty full-size stand-in
                p.ds_tensor.data = p.ds_tensor.data.float()
            p.data = p.data.float()
            moved += p.ds_numel if hasattr(p, "ds_numel") else p.numel()
    if moved:
        log.info("precision: %d trained weights moved to float32 (master weights; the matmuls keep the compute dtype)",
                 moved)


class PureBf16Watch(TrainerCallback):
    """Compares a sample of the bfloat16 trained weights before and after the first optimizer step that has a gradient
    (an online method's first batches may have none: equal rewards) and warns with the share that did not move; an
    element whose gradient is exactly 0 is not counted: it had no update to lose."""

    SAMPLE = 1 << 20  # elements looked at, spread over every trained tensor

    def __init__(self, model, learning_rate: float):
        self.model, self.lr, self.before, self.done = model, learning_rate, None, False

    def _sample(self):
        params = [p for p in trained_parameters(self.model) if p.numel()]
        per = max(1, self.SAMPLE // max(1, len(params)))
        return [(p, p.detach().reshape(-1)[:per].clone()) for p in params]

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if not self.done and self.before is None:
            self.before = self._sample()

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.done or self.before is None:
            return
        import torch

        moved = updated = 0
        for p, old in self.before:
            grad = p.grad.detach().reshape(-1)[:len(old)] if p.grad is not None else None
            live = grad != 0 if grad is not None else torch.ones_like(old, dtype=torch.bool)
            updated += int(live.sum())
            moved += int(((p.detach().reshape(-1)[:len(old)] != old) & live).sum())
        self.before, self.done = None, updated > 0
        if updated and moved < 0.95 * updated and state.is_world_process_zero:
            log.warning("--pure_bf16: the first optimizer step left %.1f %% of the trained weights with a gradient "
                        "unchanged (%d of %d looked at, learning rate %g): their updates were smaller than half a "
                        "bfloat16 step and rounded away. Leave --pure_bf16 out to keep float32 master weights (4 more "
                        "bytes per trained weight), or raise the learning rate.", 100 * (1 - moved / updated),
                        updated - moved, updated, self.lr)
