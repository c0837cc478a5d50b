"""ORPO: TRL's ORPOTrainer (trl.experimental). Reference-free; `beta` weighs the odds-ratio term
against the NLL on chosen."""

from dataclasses import dataclass

from trl.experimental.orpo import ORPOConfig

from rlhf_args.base import Method, OurDefaults


@dataclass
class ORPOArgs(OurDefaults, ORPOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1


def trainer():
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer


METHOD = Method("ORPO", ORPOArgs, trainer, data="preference", fp16_ok=False)
