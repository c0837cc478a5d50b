"""The bare TRL script the wrapper is compared with: load model, tokenizer and data with plain
transformers / datasets calls and hand them to the TRL trainer, nothing else (no validation, no pad
repair, no callbacks, no extra saving). It takes the same flags as main_train.py.

    python bench/bare_trl.py --defaults trl  --rlhf_type DPO --train_mode full --model_name_or_path M ...
    python bench/bare_trl.py --defaults ours ...   # TRL's config built with the values rlhf_args/ defaults to

`--defaults trl`: TRL's config defaults, except bf16=False (TRL's default, bf16 on whenever fp16 is off,
refuses to start on a CPU). `--defaults ours`: every field whose class default differs between our
config (rlhf_args/) and TRL's takes ours; used to measure the wrapper's own overhead at equal settings.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# rlhf_type -> (TRL config, TRL trainer, our config)
TRL = {
    "SFT": ("trl:SFTConfig", "trl:SFTTrainer", "rlhf_args.sft:SFTArgs"),
    "DPO": ("trl:DPOConfig", "trl:DPOTrainer", "rlhf_args.dpo:DPOArgs"),
    "KTO": ("trl:KTOConfig", "trl:KTOTrainer", "rlhf_args.kto:KTOArgs"),
    "Reward": ("trl:RewardConfig", "trl:RewardTrainer", "rlhf_args.reward:RewardArgs"),
    "SimPO": ("trl.experimental.cpo:CPOConfig", "trl.experimental.cpo:CPOTrainer", "rlhf_args.cpo:SimPOArgs"),
    "CPOSimPO": ("trl.experimental.cpo:CPOConfig", "trl.experimental.cpo:CPOTrainer", "rlhf_args.cpo:CPOSimPOArgs"),
    "RLOO": ("trl:RLOOConfig", "trl:RLOOTrainer", "rlhf_args.rloo:RLOOArgs"),
    "GRPO": ("trl:GRPOConfig", "trl:GRPOTrainer", "rlhf_args.grpo:GRPOArgs"),
    "GKD": ("trl.experimental.gkd:GKDConfig", "trl.experimental.gkd:GKDTrainer", "rlhf_args.gkd:GKDArgs"),
}
# The method's loss settings (SimPO / CPO-SimPO are CPOTrainer losses, not a speed default): always ours.
LOSS_FIELDS = {"loss_type", "cpo_alpha", "simpo_gamma", "beta"}


@dataclass
class Bare:
    rlhf_type: str
    model_name_or_path: str
    train_data_path: str
    defaults: str = "trl"
    train_mode: str = "full"
    reward_funcs: list[str] = field(default_factory=list)


def _load(spec: str):
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def our_values(trl_config, ours) -> dict:
    """Fields whose class default differs between our config and TRL's (ours win), e.g. logging_steps=1."""
    base = {f.name: f for f in dataclasses.fields(trl_config)}
    out = {}
    for f in dataclasses.fields(ours):
        t = base.get(f.name)
        if t is None or not f.init:
            continue
        mine = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        theirs = t.default_factory() if t.default_factory is not dataclasses.MISSING else t.default
        # padding_free: ours packs rows (utils/trainers/padding_free.py); TRL 1.16's DPO ignores the flag and its SFT one is
        # another method (one flattened row, refused beside max_length): not a TRL setting, so left at TRL's value.
        # For the wrapper's own overhead at equal work, compare bare-same with "wrapper:--padding_free false".
        if mine != theirs and f.name not in ("output_dir", "bf16", "padding_free"):
            out[f.name] = mine
    return out


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser

    rlhf_type = sys.argv[sys.argv.index("--rlhf_type") + 1]
    config_spec, trainer_spec, ours_spec = TRL[rlhf_type]
    config_cls = _load(config_spec)
    given = {a[2:] for a in sys.argv if a.startswith("--")}
    values = our_values(config_cls, _load(ours_spec))
    if "--defaults" in sys.argv and sys.argv[sys.argv.index("--defaults") + 1] == "trl":
        values = {k: v for k, v in values.items() if k in LOSS_FIELDS}  # TRL's defaults, the method's own loss
    # Our values become flags (the job's own flags win), so that TRL's __post_init__ sees them as a user's would.
    # bf16 false: TRL's default (on) makes the config refuse to build on a CPU.
    argv = sys.argv[1:] + ["--bf16", "false"]
    for key, value in values.items():
        if key not in given and value is not None:
            items = value if isinstance(value, list) else [value]
            argv += [f"--{key}", *[str(v).lower() if isinstance(v, bool) else str(v) for v in items]]
    bare, config = HfArgumentParser([Bare, config_cls]).parse_args_into_dataclasses(argv)

    tokenizer = AutoTokenizer.from_pretrained(bare.model_name_or_path)
    if rlhf_type == "Reward":
        model = AutoModelForSequenceClassification.from_pretrained(bare.model_name_or_path, num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(bare.model_name_or_path)
    from datasets import load_dataset

    train = load_dataset("json", data_files=bare.train_data_path, split="train")
    kwargs = dict(model=model, args=config, train_dataset=train, processing_class=tokenizer)
    if bare.train_mode != "full":
        from peft import LoraConfig

        kwargs["peft_config"] = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                           task_type="SEQ_CLS" if rlhf_type == "Reward" else "CAUSAL_LM")
    if bare.reward_funcs:
        import importlib.util

        path, _, name = bare.reward_funcs[0].partition(":")
        spec = importlib.util.spec_from_file_location("rewards", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        kwargs["reward_funcs"] = [getattr(module, name)]
    if rlhf_type == "GKD":
        kwargs["teacher_model"] = AutoModelForCausalLM.from_pretrained(config.teacher_model_name_or_path)
    trainer = _load(trainer_spec)(**kwargs)
    trainer.train()
    trainer.save_model(config.output_dir)


if __name__ == "__main__":
    main()
