"""Vision-language models (image-text-to-text): told apart by their config, loaded with their processor, and split
into the language model, the projector and the vision tower so that each can be trained or frozen.

A model directory whose config.json names an image-text-to-text architecture (transformers' own table) loads with
`AutoModelForImageTextToText`, and TRL gets its `AutoProcessor` as the processing class: TRL 1.16 then collates
images itself (SFT, DPO, GRPO, RLOO). Families whose processor transformers 5.23 builds only with torchvision
(Qwen2-VL, Qwen2.5-VL, Qwen3-VL, SmolVLM2: a video processor) are refused in the check phase when it is missing.
"""

from __future__ import annotations

import importlib.util
import os
import re

from utils.core.errors import UserError
from utils.model.checks import is_vlm, model_type  # noqa: F401  (is_vlm: also reached as vision.is_vlm)

# The parts of a vision-language model besides its language model, by the attribute names the families use.
VISION_TOWERS = ("vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder")
PROJECTORS = ("multi_modal_projector", "connector", "mm_projector", "merger", "aligner", "embed_vision")
NEEDS_TORCHVISION = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "smolvlm", "glm4v", "internvl")


def load_processor(path: str, trust_remote_code: bool = False, max_pixels: int | None = None):
    """The model's AutoProcessor (tokenizer + image processor), its tokenizer's pad token repaired; refused with what
    to install when the family needs torchvision; `max_pixels` bounds the image size it resizes to."""
    from transformers import AutoProcessor

    from utils.model.loading import load_tokenizer

    kind = model_type(path)
    if kind in NEEDS_TORCHVISION and importlib.util.find_spec("torchvision") is None:
        raise UserError(f"The model at {path!r} ({kind}) needs torchvision for its processor (transformers builds "
                        "its video processor only with it): pip install torchvision, the build that matches your "
                        "torch (pip install 'torchvision==<the version paired with your torch>'); docs/vision.md.")
    try:
        processor = AutoProcessor.from_pretrained(os.path.expanduser(path), trust_remote_code=trust_remote_code)
    except Exception as e:  # OSError, ValueError, ImportError: what a processor that cannot be built raises
        raise UserError(f"Could not load the processor of the vision-language model at {path!r}: "
                        f"{type(e).__name__}: {e}; expected the processor saved beside the model "
                        "(processor.save_pretrained(DIR)).") from e
    if getattr(processor, "image_processor", None) is None:
        raise UserError(f"The processor at {path!r} has no image processor; expected the processor of a "
                        "vision-language model.")
    tokenizer = load_tokenizer(path, trust_remote_code)  # the same files, with the pad-token repair
    processor.tokenizer = tokenizer
    if max_pixels:
        bound_pixels(processor.image_processor, max_pixels, path)
    return processor


def bound_pixels(image_processor, max_pixels: int, path: str) -> None:
    """Images resized to at most `max_pixels` pixels: the processor's own option where it has one (Qwen-VL's
    `max_pixels`); for processors that split images into tiles (Idefics3 / SmolVLM), fewer tiles. A processor that
    resizes every image to one fixed size (LLaVA, Gemma 3) has nothing to bound: refused."""
    if hasattr(image_processor, "max_pixels"):
        image_processor.max_pixels = max_pixels
        return
    size, tile = getattr(image_processor, "size", None), (getattr(image_processor, "max_image_size", None) or {})
    if getattr(size, "longest_edge", None) and tile.get("longest_edge"):
        edge = max(tile["longest_edge"], int(max_pixels ** 0.5) // tile["longest_edge"] * tile["longest_edge"])
        size.longest_edge = min(size.longest_edge, edge)
        return
    fixed = getattr(image_processor, "crop_size", None) or size
    shape = f"{getattr(fixed, 'height', '?')} x {getattr(fixed, 'width', '?')}"
    raise UserError(f"--max_pixels {max_pixels}: the processor of the model at {path!r} ({type(image_processor).__name__}) "
                    f"resizes every image to one fixed size ({shape} pixels), so image size does not change the "
                    "tokens an image costs; leave --max_pixels out.")


def parts(model) -> dict[str, str]:
    """The module names of the language model, the projector and the vision tower of a loaded model."""
    decoder = model.get_decoder()
    out = {}
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if module is decoder and "language" not in out:
            out["language"] = name
        elif last in VISION_TOWERS and "vision" not in out:
            out["vision"] = name
        elif last in PROJECTORS and "projector" not in out and not name.startswith(out.get("vision", "\0") + "."):
            out["projector"] = name
    return out


def lora_targets(model, vision_tower: bool) -> str:
    """peft's `target_modules` regex: every linear layer of the language model (and of the vision tower when it is
    trained), never the output head or the projector."""
    import torch

    where = parts(model)
    under = [where["language"]] + ([where["vision"]] if vision_tower and "vision" in where else [])
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and any(name.startswith(u + ".") for u in under):
            names.add(name.rsplit(".", 1)[-1])
    prefixes = "|".join(re.escape(u) for u in under)
    return rf"^({prefixes})\..*\.({'|'.join(sorted(map(re.escape, names)))})$"


def freeze(model, common) -> list[str]:
    """Full fine-tuning: the vision tower and the projector frozen unless --freeze_vision_tower false /
    --freeze_multi_modal_projector false. Returns the parts frozen, for the log."""
    where, frozen = parts(model), []
    for part, keep in (("vision", common.freeze_vision_tower), ("projector", common.freeze_multi_modal_projector)):
        if keep and part in where:
            for p in model.get_submodule(where[part]).parameters():
                p.requires_grad_(False)
            frozen.append(where[part])
    return frozen
