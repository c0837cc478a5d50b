"""Check phase, before any weights load: a model directory holds a config and weights, a hub id is cached or the hub
reachable. Nothing here reads weights."""

from __future__ import annotations

import glob
import json
import os
import re

from utils.core.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model",
                   "vocab.txt")
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
           "adapter_model.safetensors", "adapter_model.bin")


def checkpoint_gaps(path: str) -> list[str]:
    """What a checkpoint directory lacks to be resumed from ("no trainer_state.json", "no model or adapter
    weights"); [] when it has both. Used by the path checks and by `--resume_from_checkpoint latest / auto`."""
    gaps = [] if os.path.isfile(os.path.join(path, "trainer_state.json")) else ["no trainer_state.json"]
    if not any(os.path.isfile(os.path.join(path, w)) for w in WEIGHTS):
        gaps.append("no model or adapter weights")
    return gaps


def looks_local(path: str) -> bool:
    """A path the user meant on disk (absolute, ./, ~, or more than one '/'), not a hub id like `org/name`."""
    return os.path.isabs(path) or path.startswith((".", "~")) or path.count("/") > 1 or \
        not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path)


def check_model_dir(path: str, what: str) -> None:
    """Check phase: a local model directory exists and holds a config and weights (nothing is read); a hub id is in
    the local cache or the hub can be reached (check_hub_id); a GGUF file is checked by utils/model/gguf.py."""
    from utils.model import gguf

    if gguf.is_gguf(path):
        gguf.check(path, what)
        return
    real = os.path.expanduser(path)
    if not os.path.exists(real):
        if looks_local(path):
            raise UserError(f"{what} {path!r} does not exist; expected a model directory (config.json + weights, as "
                            "written by save_pretrained) or a hub id.")
        return check_hub_id(path, what)
    if not os.path.isdir(real):
        raise UserError(f"{what} {path!r} is a file; expected a model directory (config.json + weights).")
    if not any(os.path.isfile(os.path.join(real, c)) for c in ("config.json", "adapter_config.json")):
        raise UserError(f"{what} {path!r} holds no config.json; expected a model directory written by "
                        "save_pretrained.")
    if not any(os.path.isfile(os.path.join(real, w)) for w in WEIGHTS) and \
            not glob.glob(os.path.join(glob.escape(real), "*.safetensors")):
        raise UserError(f"{what} {path!r} holds no weights (model.safetensors, pytorch_model.bin or their sharded "
                        "index); expected a model directory written by save_pretrained.")


def check_hub_id(path: str, what: str) -> None:
    """A hub id must be in the local Hugging Face cache or the hub reachable: transformers would otherwise retry
    for about a minute and end in a traceback."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(path, "config.json"), str):
        return
    instead = ("pass a local model directory (written by save_pretrained), or fetch the model on a connected "
               "machine first (it is then in the cache)")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise UserError(f"{what} {path!r} is not a local directory and not in the Hugging Face cache, and this "
                        f"machine is offline (HF_HUB_OFFLINE is set); {instead}.")
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError:
        raise UserError(f"{what} {path!r} is not a local directory, not in the Hugging Face cache, and {host} cannot "
                        f"be reached: this machine looks offline; {instead}.") from None


def model_type(path: str) -> str | None:
    """config.json's model_type of a model directory (None: no readable config there)."""
    config = os.path.join(os.path.expanduser(path), "config.json")
    try:
        with open(config, encoding="utf-8") as f:
            return json.load(f).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def is_vlm(path: str) -> bool:
    """The directory holds an image-text-to-text model (its config has a vision part and transformers maps its type
    to AutoModelForImageTextToText)."""
    kind = model_type(path)
    if kind is None:
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return kind in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
