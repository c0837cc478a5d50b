"""The adapter of `lora` / `qlora` runs: peft's LoraConfig from our flags."""

from __future__ import annotations


def lora_config(common, head: str = "causal", model=None):
    """The adapter for `lora` / `qlora` modes (None for `full`). `all-linear` targets every linear
    layer but the output head; a score head is trained in full and saved with the adapter."""
    if common.train_mode == "full":
        return None
    from peft import LoraConfig

    targets = common.lora_target_modules
    targets = targets[0] if targets == ["all-linear"] else targets
    save = ["score"] if head == "score" else None
    if model is not None and is_vision_model(model):  # the language model's layers; tower and projector: our flags
        from utils.model.vision import lora_targets, parts

        if targets == "all-linear":
            targets = lora_targets(model, vision_tower=not common.freeze_vision_tower)
        projector = parts(model).get("projector")
        if not common.freeze_multi_modal_projector and projector:
            save = [projector.rsplit(".", 1)[-1]]
    return LoraConfig(
        r=common.lora_rank,
        lora_alpha=common.lora_alpha,
        lora_dropout=common.lora_dropout,
        target_modules=targets,
        use_dora=common.use_dora,
        # GPT-2-style models store linear layers transposed (transformers' Conv1D); peft warns and flips it otherwise.
        fan_in_fan_out=model is not None and any(type(m).__name__ == "Conv1D" for m in model.modules()),
        task_type="SEQ_CLS" if head == "score" else "CAUSAL_LM",
        modules_to_save=save,
    )


def is_vision_model(model) -> bool:
    """A loaded image-text-to-text model (it has a vision config beside its text config)."""
    return getattr(model.config, "vision_config", None) is not None
