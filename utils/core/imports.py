"""What a command's process imports. Called first thing under `if __name__ == "__main__":` by main_train.py and
the `python -m utils.X` commands, before anything imports peft or transformers' trainer."""

from __future__ import annotations

import os
import sys

# Any argument containing one of these may need bitsandbytes: QLoRA, 4/8-bit loading, its optimizers.
_BNB_HINTS = ("qlora", "bnb", "bitsandbytes", "4bit", "8bit", "paged", "lion", "ademamix", "rmsprop", "quant")


def hide_unused_bitsandbytes(argv: list[str]) -> bool:
    """peft imports bitsandbytes whenever it is installed, and bitsandbytes imports torch's compiler: 1.3 s and
    ~50 MB of resident memory in every process (bench/RESULTS.md, PPO). A CLI run that names nothing needing it
    (in its arguments, its YAML config, or the config.json of a model directory either names) runs as if it were
    not installed: a run that does need it always names it (qlora, an 8-bit optimizer, a quantized checkpoint).
    peft 0.21 imports it eagerly in peft/helpers.py; huggingface/peft#1230 had made the import lazy, and no report of
    this one was found (searched "peft imports bitsandbytes eagerly", 2026-12-02). Drop when `import peft` skips it."""
    texts = list(argv)
    words = lambda: [w.strip("'\"").rpartition("=")[2] for text in texts for w in text.split()]  # noqa: E731
    texts += [_read(w) for w in words() if w.endswith((".yaml", ".yml")) and os.path.isfile(w)]  # a YAML config
    texts += [_read(c) for c in {os.path.join(w, "config.json") for w in words()} if os.path.isfile(c)]  # model dirs
    if any(hint in text.lower() for text in texts for hint in _BNB_HINTS):
        return False
    sys.modules.setdefault("bitsandbytes", None)  # find_spec() -> None: "not installed" to peft and transformers
    return True


def _read(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()
