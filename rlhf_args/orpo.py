"""ORPO: TRL's ORPOTrainer (trl.experimental). Reference-free; `beta` weighs the odds-ratio term
against the NLL on chosen."""

from dataclasses import dataclass, field

from trl.experimental.orpo import ORPOConfig

from rlhf_args.base import Method, OurDefaults
from utils.cli.option_checks import positive


@dataclass
class ORPOArgs(OurDefaults, ORPOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1
    # Not a field of TRL's ORPOConfig: utils/trainers/padding_free.py packs each batch into as few rows as fit, no padding.
    padding_free: bool = field(default=False, metadata={"help": "Pack each batch into rows without padding."})
    option_rules = (positive("beta", "a number > 0 (the weight of the odds-ratio term)"),)


def trainer():
    from utils.trainers.padding_free import PaddingFreeORPOTrainer  # TRL's ORPOTrainer, plus `padding_free`

    return PaddingFreeORPOTrainer


METHOD = Method("ORPO", ORPOArgs, trainer, data="preference", fp16_ok=False)
