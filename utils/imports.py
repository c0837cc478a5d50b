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
    (arguments, a YAML config, or the config.json of a model directory given) runs as if it were not installed."""
    texts = list(argv)
    for arg in argv:
        for path in (arg, os.path.join(arg, "config.json")):
            if path.endswith((".yaml", ".yml", "config.json")) and os.path.isfile(path):
                with open(path, errors="replace") as f:
                    texts.append(f.read())
    if any(hint in text.lower() for text in texts for hint in _BNB_HINTS):
        return False
    sys.modules.setdefault("bitsandbytes", None)  # find_spec() -> None: "not installed" to peft and transformers
    return True
