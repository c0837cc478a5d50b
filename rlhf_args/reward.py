"""Reward model: TRL's RewardTrainer (Bradley-Terry on chosen vs rejected; a `margin` column,
if present, is subtracted inside the sigmoid). The model is AutoModelForSequenceClassification
with one label; no reference model."""

from dataclasses import dataclass

from trl import RewardConfig

from rlhf_args.base import Method, OurDefaults


@dataclass
class RewardArgs(OurDefaults, RewardConfig):
    learning_rate: float = 1e-5


def trainer():
    from trl import RewardTrainer

    return RewardTrainer


METHOD = Method("Reward", RewardArgs, trainer, data="reward", head="score", drops="too_long")
