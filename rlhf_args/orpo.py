"""ORPO: TRL's ORPOTrainer (trl.experimental). Reference-free; `beta` weighs the odds-ratio term
against the NLL on chosen."""

from dataclasses import dataclass

from trl.experimental.orpo import ORPOConfig

from rlhf_args.base import OurDefaults


@dataclass
class ORPOArgs(OurDefaults, ORPOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1
