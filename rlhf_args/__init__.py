"""The one table: `rlhf_type` -> (config class, trainer class, what the trainer needs).

Adding a TRL method is one args file and one row here. Classes are named as "module:Class" strings
and imported only when their method is chosen, so a run pays for the imports it uses.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str  # as the user writes it
    config: str  # "module:Class" of the config (a TRL config with our defaults)
    trainer: str  # "module:Class" of the trainer
    data: str  # data kind, see utils.data.SCHEMAS
    head: str = "causal"  # "causal" (AutoModelForCausalLM) or "score" (AutoModelForSequenceClassification)
    reference: bool = False  # trainer keeps a frozen reference (adapter switched off under LoRA)
    rewards: bool = False  # needs reward_model_path / reward_funcs
    teacher: bool = False  # needs a teacher model
    fp16_ok: bool = True  # False: the loss is known to break in fp16
    extras: str | None = None  # "module:function"(common, config, tokenizer, dtype) -> extra trainer kwargs

    def config_class(self):
        return _load(self.config)

    def trainer_class(self):
        return _load(self.trainer)


def _load(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


_ROWS = [
    Method("SFT", "rlhf_args.sft:SFTArgs", "trl:SFTTrainer", "sft"),
    Method("Reward", "rlhf_args.reward:RewardArgs", "trl:RewardTrainer", "reward", head="score"),
    Method("DPO", "rlhf_args.dpo:DPOArgs", "trl:DPOTrainer", "preference", reference=True),
    Method("CPO", "rlhf_args.cpo:CPOArgs", "trl.experimental.cpo:CPOTrainer", "preference", fp16_ok=False),
    Method("SimPO", "rlhf_args.cpo:SimPOArgs", "trl.experimental.cpo:CPOTrainer", "preference", fp16_ok=False),
    Method("CPOSimPO", "rlhf_args.cpo:CPOSimPOArgs", "trl.experimental.cpo:CPOTrainer", "preference",
           fp16_ok=False),
    Method("ORPO", "rlhf_args.orpo:ORPOArgs", "trl.experimental.orpo:ORPOTrainer", "preference", fp16_ok=False),
    Method("KTO", "rlhf_args.kto:KTOArgs", "trl:KTOTrainer", "kto", reference=True),
    Method("GKD", "rlhf_args.gkd:GKDArgs", "utils.distill:GKDTrainer", "sft", teacher=True,
           extras="utils.distill:teacher_kwargs"),
    Method("RLOO", "rlhf_args.rloo:RLOOArgs", "utils.online_rl:RLOOTrainer", "prompt", reference=True,
           rewards=True, extras="utils.online_rl:reward_kwargs"),
    Method("GRPO", "rlhf_args.grpo:GRPOArgs", "utils.online_rl:GRPOTrainer", "prompt", reference=True,
           rewards=True, extras="utils.online_rl:reward_kwargs"),
    Method("PPO", "rlhf_args.ppo:PPOArgs", "utils.ppo_trainer:PPOTrainer", "prompt", reference=True,
           rewards=True, extras="utils.online_rl:ppo_kwargs"),
]
METHODS: dict[str, Method] = {m.name.lower(): m for m in _ROWS}


def method_names() -> str:
    return ", ".join(m.name for m in _ROWS)
