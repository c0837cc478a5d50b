"""SFT: TRL's SFTTrainer (through utils.trainers.padding_free.PaddingFreeSFTTrainer: packed batches). Data: prompt +
completion, messages, or text. Loss on completion / assistant tokens only (prompt tokens are masked). No reference
model."""

from dataclasses import dataclass, field

from trl import SFTConfig

from rlhf_args.base import Method, OurDefaults


@dataclass
class SFTArgs(OurDefaults, SFTConfig):
    learning_rate: float = 2e-5
    # Rows packed without padding (utils/trainers/padding_free.py): the same loss and gradients as padded, and 1.13x less CPU
    # time per step on SmolLM2-135M, batch 4, rows of 20-800 tokens (bench/RESULTS.md, padding-free). TRL's own
    # option flattens a batch into one row, which costs more attention than padding from about 4 rows up.
    padding_free: bool = field(default=True, metadata={"help": "Pack each batch's rows without padding (same "
                                                               "loss); false: pad."})
    # None = decided by the data (`check` below): on for `messages` rows, where the loss then covers the
    # assistant turns only; off for prompt + completion rows (TRL masks the prompt itself, `completion_only_loss`)
    # and `text` rows, for which TRL refuses the option.
    assistant_only_loss: bool | None = field(
        default=None, metadata={"help": "Loss on assistant turns only; default: on for `messages` data, else off."})


def check(common, config, columns) -> None:
    if "assistant_masks" in columns:
        # The template has no {% generation %} markers and TRL cannot patch it: the data step worked the masks out
        # (utils/data/chat_masks.py); TRL applies them as given, and would refuse the template if asked to mask itself.
        config.assistant_only_loss = False
    elif config.assistant_only_loss is None:
        config.assistant_only_loss = "messages" in columns


def trainer():
    from utils.trainers.padding_free import PaddingFreeSFTTrainer  # TRL's SFTTrainer, `padding_free` packed on any attention

    return PaddingFreeSFTTrainer


METHOD = Method("SFT", SFTArgs, trainer, data="sft", check=check, tools="schemas", vision=("padding_free",))
