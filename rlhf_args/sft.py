"""SFT: TRL's SFTTrainer. Data: prompt + completion, messages, or text. Loss on completion /
assistant tokens only (prompt tokens are masked)."""

from dataclasses import dataclass

from trl import SFTConfig

from rlhf_args.base import OurDefaults


@dataclass
class SFTArgs(OurDefaults, SFTConfig):
    learning_rate: float = 2e-5
    # For `messages` rows: train on the assistant turns only (the chat template marks them).
    assistant_only_loss: bool = True
