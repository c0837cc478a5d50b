"""Did two benchmark runs train with the same settings? Compares the saved training arguments and adapter config of a
wrapper run and a bare run (bench/out/runs/*/run) and the losses and gradient norms each logged.

    .venv/bin/python bench/same_settings.py bench/out/runs/VLM-DPO-vlm-wrapper bench/out/runs/VLM-DPO-vlm-bare-same

Prints every argument that differs (output paths left out), every adapter-config key that differs (target module
lists compared as sets), and whether the logged losses and gradient norms are identical. Exit 1 when anything differs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the wrapper's saved arguments are our config classes (rlhf_args/)
SKIP = {"output_dir", "logging_dir", "run_name"}


def _args(run: Path) -> dict:
    import torch

    return torch.load(run / "run" / "training_args.bin", weights_only=False).to_dict()


def _adapter(run: Path) -> dict:
    path = run / "run" / "adapter_config.json"
    if not path.exists():
        return {}
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return config


def _logged(run: Path) -> list[str]:
    return re.findall(r"\{'loss': '[^']*', 'grad_norm': '[^']*'", (run / "log.txt").read_text())


def main(a: Path, b: Path) -> int:
    differ = 0
    args_a, args_b = _args(a), _args(b)
    for key in sorted((set(args_a) | set(args_b)) - SKIP):
        if args_a.get(key, "<absent>") != args_b.get(key, "<absent>"):
            differ += 1
            print(f"argument {key}: {args_a.get(key, '<absent>')!r} vs {args_b.get(key, '<absent>')!r}")
    adapter_a, adapter_b = _adapter(a), _adapter(b)
    for key in sorted(set(adapter_a) | set(adapter_b)):
        if adapter_a.get(key) != adapter_b.get(key):
            differ += 1
            print(f"adapter {key}: {adapter_a.get(key)!r} vs {adapter_b.get(key)!r}")
    logged_a, logged_b = _logged(a), _logged(b)
    same = logged_a == logged_b and bool(logged_a)
    print(f"logged losses and gradient norms: {'identical' if same else 'differ'} ({len(logged_a)} vs {len(logged_b)} "
          "steps)")
    return 0 if same and not differ else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
