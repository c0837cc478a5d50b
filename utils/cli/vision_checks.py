"""The check phase for vision-language models and image data (docs/vision.md): which processor renders the rows,
how many tokens their images become, and what TRL 1.16 would refuse once the weights were loaded.

Refused here, at FILE:LINE where a row is the cause, exit 2, nothing written: images given to a text-only model, a
method whose TRL trainer takes no images, a chat template that drops image parts, a --max_length that would cut a
row's image tokens. Options of ours that TRL refuses for images (`Method.vision`) are switched off with one line,
unless set explicitly (then refused, with why)."""

from __future__ import annotations

import logging

from utils.core.errors import UserError

log = logging.getLogger("main_train")


def processor_for(common, config):
    """The model's processor when --model_name_or_path is a vision-language model, else None."""
    from utils.model.vision import is_vlm, load_processor

    if not is_vlm(common.model_name_or_path):
        return None
    return load_processor(common.model_name_or_path, config.trust_remote_code, common.max_pixels)


def refuse_images_for_text_model(dataset, processor, model: str, what: str) -> None:
    """Sampling commands (evaluation, rejection sampling): prompts with images need a vision-language model."""
    if processor is None and "images" in dataset.column_names and any(dataset["images"]):
        raise UserError(f"--{what} has prompts with images but the model at {model!r} is a text-only model (its "
                        "config names no vision part); expected a vision-language model, or prompts without images.")


def check_vision(method, common, config, rows: dict, processor, explicit: set, methods: dict) -> None:
    """Everything about images that can be known before the weights load; `rows`: the Rows read (train, eval);
    `explicit`: the option names the user set (flags and the YAML file); `methods`: every method (rlhf_args)."""
    with_images = [r for r in rows.values() if r is not None and r.images]
    if not with_images:
        return
    first = with_images[0]
    at = first.where(_first_image_row(first)[0])
    if processor is None:
        raise UserError(f"{at}: the row has images but the model at {common.model_name_or_path!r} is a text-only "
                        "model (its config names no vision part); expected a vision-language model (an "
                        "image-text-to-text checkpoint such as SmolVLM, LLaVA, Gemma 3, Qwen2.5-VL), or data "
                        "without images.")
    if method.vision is None:
        able = ", ".join(m.name for m in methods.values() if m.vision is not None)
        raise UserError(f"{at}: the row has images, and TRL 1.16's {method.name} trainer takes no images; expected "
                        f"one of {able} for image data, or {method.name} on rows without images.")
    for name in method.vision:  # TRL refuses these with images
        if getattr(config, name, False):
            if name in explicit:
                raise UserError(f"--{name} true is refused with image data: TRL 1.16's {method.name} trainer does not "
                                f"support it for vision-language models; expected --{name} false (or no flag).")
            setattr(config, name, False)
            log.info("--%s switched off: TRL 1.16 does not support it with images", name)
    if config_masks(config) and "messages" in first.columns:
        from utils.data.chat_masks import trl_masks_template

        if not trl_masks_template(processor):
            raise UserError(f"{first.path}: the chat template of {common.model_name_or_path} has no {{% generation %}} "
                            "markers and TRL 1.16 cannot add them, so with images the loss cannot be kept to the "
                            "assistant's turns of `messages` rows; expected prompt + completion rows (the loss then "
                            "covers the completion), a template with the markers (--chat_template_path), or "
                            "--assistant_only_loss false (the loss then covers every token).")
    for r in with_images:
        _check_image_tokens(r, config)


def config_masks(config) -> bool:
    """Assistant-only loss asked for, or left to the data (SFT's None: on for `messages` rows)."""
    return hasattr(config, "assistant_only_loss") and config.assistant_only_loss is not False


def _first_image_row(rows) -> tuple[int, dict]:
    for start, batch in rows.batches():
        for i, row in enumerate(batch):
            if row.get("images"):
                return start + i, row
    raise AssertionError("rows.images is set but no row has images")


def _check_image_tokens(rows, config) -> None:
    """A --max_length (or --max_prompt_length) below a prompt with images would cut image tokens, which the model
    cannot take: refused at the first such row, with its count."""
    lengths = rows.lengths
    if lengths is None or getattr(lengths, "images", None) is None:
        return
    for name in ("max_length", "max_prompt_length"):
        limit = getattr(config, name, None)
        if not limit:
            continue
        over = [i for i in range(len(lengths.prompt)) if lengths.images[i] and lengths.prompt[i] > limit]
        if over:
            i = over[0]
            raise UserError(f"{rows.where(i)}: --{name} {limit} would cut this row's image tokens: its prompt is "
                            f"{int(lengths.prompt[i])} tokens, {int(lengths.images[i])} of them for its images "
                            f"({len(over)} row{'s' if len(over) > 1 else ''} like it); expected --{name} of at least "
                            f"{int(lengths.prompt[over].max())} (or smaller images: --max_pixels).")
