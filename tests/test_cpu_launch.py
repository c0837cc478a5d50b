"""The CPU launch glue (utils/core/distributed.py cpu_launch_defaults) in each launch situation, without starting
processes: what torchrun / accelerate set in the environment decides the process-group backend and DDP on CPU."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("launcher,expect", [
    ({}, None),  # a plain process: untouched
    ({"LOCAL_RANK": "0", "WORLD_SIZE": "2"}, ("gloo", True)),  # torchrun / accelerate DDP: DDP over gloo
    ({"LOCAL_RANK": "0", "WORLD_SIZE": "2", "ACCELERATE_USE_DEEPSPEED": "true"}, ("gloo", False)),
    ({"LOCAL_RANK": "0", "WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}, "FSDP through accelerate needs GPUs"),
    ({"LOCAL_RANK": "0", "WORLD_SIZE": "2", "DEEPSPEED_JSON": "1"}, "--deepspeed CONFIG.json under torchrun"),
])
def test_cpu_launch_defaults(launcher, expect, monkeypatch):
    """The CPU glue (utils/core/distributed.py) in each launch situation, without starting processes."""
    from types import SimpleNamespace

    from utils.core.distributed import cpu_launch_defaults

    for key in ("LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"):
        monkeypatch.delenv(key, raising=False)
    for key, value in launcher.items():
        monkeypatch.setenv(key, value)
    args = SimpleNamespace(ddp_backend=None, use_cpu=False, deepspeed="ds.json" if "DEEPSPEED_JSON" in launcher else None)
    if isinstance(expect, str):
        with pytest.raises(ValueError, match=re.escape(expect)):
            cpu_launch_defaults(args)
        return
    cpu_launch_defaults(args)
    assert (args.ddp_backend, args.use_cpu) == (expect or (None, False))
