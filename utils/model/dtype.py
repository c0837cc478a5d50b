"""`--dtype` and the compute dtype: the names every command takes, what each means on this machine."""

from __future__ import annotations

from utils.core.errors import UserError

# `--dtype`, the same in every command: the dtype weights are loaded (and merged, saved) in.
DTYPES = ("auto", "checkpoint", "float32", "bfloat16", "float16")
DTYPE_HELP = ("Weights dtype: auto = the compute dtype (bfloat16 with --bf16, which is on by default on GPUs that "
              "have it; float16 with --fp16; else float32) | checkpoint = as saved | float32 | bfloat16 | float16.")


def resolve_dtype(name: str, bf16: bool | None = None, fp16: bool = False):
    """The torch dtype (or "auto": transformers' "as saved") for `--dtype NAME`; `bf16` None = where the GPU has it."""
    import torch

    if name not in DTYPES:
        raise UserError(f"--dtype {name!r} is not known; expected one of {', '.join(DTYPES)}.")
    if name == "checkpoint":
        return "auto"
    if name == "auto":
        if bf16 is None and not fp16:
            bf16 = bf16_supported()
        return torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
    return getattr(torch, name)


def bf16_supported() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
