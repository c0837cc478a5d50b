"""Adapter directories (a LoRA / DoRA adapter as main_train saves it): the base model an adapter names, where its
tokenizer is, and loading it onto that base. Used by utils.merge and by sampling (rejection sampling, evaluation)."""

from __future__ import annotations

import json
import os
import warnings

from utils.core.errors import UserError

# peft 0.21 reads transformers 5.23's deprecated `is_gradient_checkpointing` when it loads an adapter; nothing a
# user can act on (main_train.py filters the same warning). No upstream report found (searched
# "is_gradient_checkpointing deprecated FutureWarning peft", 2026-12-02); drop when peft reads the new name.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def config_path(path: str) -> str:
    return os.path.join(os.path.expanduser(path), "adapter_config.json")


def adapter_config(path: str) -> dict | None:
    """The adapter_config.json of an adapter directory; None for a full model."""
    if not os.path.isfile(config_path(path)):
        return None
    with open(config_path(path)) as f:
        return json.load(f)


def adapter_base(path: str, base_override: str | None = None) -> str | None:
    """The base model of a LoRA adapter directory (`base_override`, else the one its adapter_config.json names);
    None for a full model."""
    config = adapter_config(path)
    if config is None:
        return None
    base = base_override or config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"{config_path(path)} names no base model; pass --base_model_name_or_path PATH.")
    return base


def model_paths(path: str, base_override: str | None = None) -> tuple[str, str]:
    """(base model, tokenizer) paths: an adapter directory is loaded onto its base; one saved by main_train holds
    the tokenizer it was trained with (its pad token may have grown the embeddings)."""
    base = adapter_base(path, base_override) or path
    has_tokenizer = os.path.isfile(os.path.join(os.path.expanduser(path), "tokenizer_config.json"))
    return base, path if has_tokenizer else base


def attach_adapter(model, path: str, base: str):
    """`model` (the loaded base) with the adapter at `path` on it (peft's PeftModel)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, path)
    except (ValueError, RuntimeError, KeyError) as e:  # shape mismatches: another base, another vocabulary
        raise UserError(f"The adapter at {path!r} does not fit the base {base!r}: {e}") from e
