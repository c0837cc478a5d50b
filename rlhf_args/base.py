"""Defaults every method shares, layered over the TRL config by multiple inheritance:
`class DPOArgs(OurDefaults, DPOConfig)` keeps every TRL field and its name, and only changes
the defaults listed here (dataclass fields of the earlier base win)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.trainer_utils import SaveStrategy


@dataclass
class OurDefaults:
    # Log every step: every run leaves a curve in trainer_state.json that can be plotted.
    logging_steps: float = 1
    logging_first_step: bool = True
    # Local-first: nothing is sent anywhere unless asked for (--report_to tensorboard / wandb).
    report_to: None | str | list[str] = "none"
    # Checkpoints for resume_from_checkpoint, without filling the disk.
    save_strategy: SaveStrategy | str = "steps"
    save_steps: float = 200
    save_total_limit: int | None = 2
    output_dir: str | None = field(default=None, metadata={"help": "Where the model, metrics and checkpoints go."})
    # Speed over memory: no activation recomputation (TRL turns it on everywhere). bench/RESULTS.md, 3.5M params,
    # batch 4, 150-190 tokens: DPO 1.39x tokens/s for +17 % peak RSS, KTO 1.19x, SimPO 1.45x, Reward 1.23x, GKD
    # 1.20x, RLOO/GRPO ~1.03x. Turn it on (--gradient_checkpointing true) when activations do not fit.
    gradient_checkpointing: bool | None = False

    def __post_init__(self):
        # TRL turns bf16 on whenever fp16 is off; on a machine without bf16 support (CPU) that either fails or
        # runs hundreds of times slower, so an unset bf16 means "bf16 where the hardware has it".
        if self.bf16 is None and not self.fp16:
            self.bf16 = bf16_supported()
        # Under `accelerate launch` / torchrun without CUDA: the gloo backend, set before devices are set up.
        from utils.distributed import cpu_launch_defaults

        cpu_launch_defaults(self)
        super().__post_init__()


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
