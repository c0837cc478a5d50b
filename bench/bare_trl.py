"""The bare TRL script the wrapper is compared with: load model, tokenizer and data with plain
transformers / datasets calls and hand them to the TRL trainer, nothing else (no validation, no pad
repair, no callbacks, no extra saving). It takes the same flags as main_train.py.

    python bench/bare_trl.py --defaults trl  --rlhf_type DPO --train_mode full --model_name_or_path M ...
    python bench/bare_trl.py --defaults ours ...   # TRL's config built with the values rlhf_args/ defaults to

`--defaults trl`: TRL's config defaults, except bf16=False (TRL's default, bf16 on whenever fp16 is off,
refuses to start on a CPU). `--defaults ours`: every field whose class default differs between our
config (rlhf_args/) and TRL's takes ours; used to measure the wrapper's own overhead at equal settings. With
ours, also what our defaults resolve to at run time: bf16 where the hardware has it (on a CPU with `use_cpu`), the
weights in float32 for a full fine-tune and in the compute dtype for a LoRA base (utils/model/dtype.py), SFT's
assistant-only loss on for `messages` rows, and the options TRL refuses with images switched off. Reward LoRA is the
one job whose losses differ between the sides: the wrapper runs the score head in its own weights' dtype
(utils/model/loading.follow_weight_dtype), TRL as it comes.

Vision-language models (a config transformers maps to AutoModelForImageTextToText): loaded with that class, TRL
gets the AutoProcessor, LoRA targets the language model's linear layers (utils/model/vision.lora_targets), and the
rows come from `--trl_data_path` (the same rows in TRL's form: bench/vlm_jobs.py).
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
    trl_data_path: str | None = None


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


def _flag(name: str) -> str | None:
    return sys.argv[sys.argv.index(f"--{name}") + 1] if f"--{name}" in sys.argv else None


def language_targets(model) -> str:
    """peft's target_modules for a vision-language model: every linear layer of its language model."""
    import re

    import torch

    decoder = model.get_decoder()
    where = next(name for name, module in model.named_modules() if module is decoder)
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and name.startswith(where + ".")}
    return rf"^({re.escape(where)})\..*\.({'|'.join(sorted(map(re.escape, names)))})$"


def main() -> None:
    import importlib

    import torch
    from datasets import load_dataset
    from transformers import (AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSequenceClassification,
                              AutoProcessor, AutoTokenizer, HfArgumentParser)

    from utils.model.dtype import bf16_supported
    from utils.model.vision import is_vlm

    rlhf_type = sys.argv[sys.argv.index("--rlhf_type") + 1]
    config_spec, trainer_spec, ours_spec = TRL[rlhf_type]
    config_cls = _load(config_spec)
    given = {a[2:] for a in sys.argv if a.startswith("--")}
    train = load_dataset("json", data_files=_flag("trl_data_path") or _flag("train_data_path"), split="train")
    images = "images" in train.column_names
    ours = _flag("defaults") != "trl"
    values = our_values(config_cls, _load(ours_spec))
    if not ours:
        values = {k: v for k, v in values.items() if k in LOSS_FIELDS}  # TRL's defaults, the method's own loss
    else:
        if rlhf_type == "SFT":  # rlhf_args/sft.py check(): decided by the data
            values["assistant_only_loss"] = "messages" in train.column_names
        if images:  # utils/cli/vision_checks.py: what TRL refuses with images, switched off
            method = getattr(importlib.import_module(ours_spec.split(":")[0]), "METHOD", None)
            values.update({name: False for name in getattr(method, "vision", None) or ()})
    # bf16: ours where the hardware has it (rlhf_args/base.py); TRL's default (on) refuses to build on a CPU.
    bf16 = _flag("bf16") == "true" if "bf16" in given else ours and bf16_supported()
    argv = sys.argv[1:] + (["--bf16", str(bf16).lower()] if "bf16" not in given else [])
    if bf16 and not torch.cuda.is_available() and "use_cpu" not in given:
        argv += ["--use_cpu", "true"]
    # Our values become flags (the job's own flags win), so that TRL's __post_init__ sees them as a user's would.
    for key, value in values.items():
        if key not in given and value is not None:
            items = value if isinstance(value, list) else [value]
            argv += [f"--{key}", *[str(v).lower() if isinstance(v, bool) else str(v) for v in items]]
    bare, config = HfArgumentParser([Bare, config_cls]).parse_args_into_dataclasses(argv)

    path, vlm = bare.model_name_or_path, is_vlm(bare.model_name_or_path)
    frozen = torch.bfloat16 if bf16 else torch.float32  # utils/model/dtype.py: --dtype auto
    weights = frozen if bare.train_mode != "full" else torch.float32
    tokenizer = AutoProcessor.from_pretrained(path) if vlm else AutoTokenizer.from_pretrained(path)
    if rlhf_type == "Reward":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=weights)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = (AutoModelForImageTextToText if vlm else AutoModelForCausalLM).from_pretrained(path, dtype=weights)
    kwargs = dict(model=model, args=config, train_dataset=train, processing_class=tokenizer)
    if bare.train_mode != "full":
        from peft import LoraConfig

        kwargs["peft_config"] = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                           target_modules=language_targets(model) if vlm else "all-linear",
                                           task_type="SEQ_CLS" if rlhf_type == "Reward" else "CAUSAL_LM")
    if bare.reward_funcs:
        import importlib.util

        path, _, name = bare.reward_funcs[0].partition(":")
        spec = importlib.util.spec_from_file_location("rewards", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        kwargs["reward_funcs"] = [getattr(module, name)]
    if rlhf_type == "GKD":
        kwargs["teacher_model"] = AutoModelForCausalLM.from_pretrained(config.teacher_model_name_or_path, dtype=frozen)
    trainer = _load(trainer_spec)(**kwargs)
    trainer.train()
    trainer.save_model(config.output_dir)


if __name__ == "__main__":
    main()
