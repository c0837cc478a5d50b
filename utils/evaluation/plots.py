"""Training curves as PNG from any run's `trainer_state.json` (every method logs every step there).

    python -m utils.plot RUN_DIR [--output_dir DIR] [--keys loss reward ...]

RUN_DIR is a training run's output_dir; the PNG goes to DIR/curves.png (default: RUN_DIR/curves.png), or to
DIR itself when it is an image file name (.png, .svg, .pdf, .jpg: as the old `--out PNG` took, which still works).

Without --keys, the panels are the run's loss, reward, accuracy, margin and KL curves (train and eval), in that
order, up to six; learning rate, gradient norm, timings and token counts are left out.
"""

from __future__ import annotations

import json
import math
import os
import re

from utils.core.errors import CommandParser, UserError, run_command

# Metrics worth a panel, and what is left out although it matches (spread, extremes, raw log-probs, timings).
_WANTED = re.compile(r"loss|reward|accurac|margin|kl|score")
_SKIP = re.compile(r"std|min|max|runtime|per_second|logps|logits|chosen|rejected|clip|frac_|num_|total_flos")
_ORDER = ["loss", "reward", "score", "accurac", "margin", "kl"]
MAX_PANELS = 6


def load_history(output_dir: str) -> list[dict]:
    path = os.path.join(output_dir, "trainer_state.json")
    with open(path) as f:
        return json.load(f)["log_history"]


def curves(history: list[dict], keys: list[str] | None = None) -> dict[str, tuple[list[int], list[float]]]:
    """{metric: (steps, values)} for the chosen keys (default: the interesting ones), finite values only."""
    found: dict[str, tuple[list[int], list[float]]] = {}
    for entry in history:
        step = entry.get("step")
        for key, value in entry.items():
            if key == "step" or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if keys is None and (not _WANTED.search(key) or _SKIP.search(key) or key.startswith("train_")):
                continue
            if keys is not None and key not in keys:
                continue
            if step is not None and math.isfinite(value):
                found.setdefault(key, ([], []))
                found[key][0].append(step)
                found[key][1].append(float(value))
    if keys is not None:
        return {k: found[k] for k in keys if k in found}

    def rank(key: str) -> tuple[int, int, str]:
        base = key.removeprefix("eval_")
        kind = next((i for i, word in enumerate(_ORDER) if word in base), len(_ORDER))
        return kind, key.startswith("eval_"), key

    return {k: found[k] for k in sorted(found, key=rank)[:MAX_PANELS]}


def plot_run(output_dir: str, out: str | None = None, title: str | None = None,
             keys: list[str] | None = None) -> str:
    """Draw one PNG with a panel per metric against the optimizer step; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    data = curves(load_history(output_dir), keys)
    if not data:
        raise ValueError(f"{output_dir}/trainer_state.json has no logged metric to plot"
                         + (f" among {keys}" if keys else ""))
    cols = min(3, len(data))
    rows = math.ceil(len(data) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, (steps, values)) in zip(axes.flat, data.items()):
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(data):]:
        ax.axis("off")
    fig.suptitle(title or os.path.basename(os.path.normpath(output_dir)), fontsize=11)
    fig.tight_layout()
    out = out or os.path.join(output_dir, "curves.png")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_distributions(values: dict[str, list[float]], out: str, title: str, xlabel: str = "reward") -> str:
    """Overlaid histograms of several sides' values on shared bins (utils/evaluation/run.py: both sides' rewards)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    finite = [v for vs in values.values() for v in vs if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 31)
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for label, vs in values.items():
        ax.hist([v for v in vs if math.isfinite(v)], bins=bins, alpha=0.5, label=label)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("samples", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    return run_command(plot, argv)


def plot(argv: list[str]) -> None:
    p = CommandParser("python -m utils.plot", __doc__, renamed={"out": "output_dir"})  # --out: one release
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's output_dir (holds trainer_state.json)")
    p.add_argument("--output_dir", help="where curves.png goes (default: RUN_DIR); an image file name "
                                        "(.png, .svg, .pdf, .jpg) is the file itself")
    p.add_argument("--keys", nargs="+", help="metric names from log_history to draw (default: loss, reward, "
                                             "accuracy, margin, KL curves)")
    p.add_argument("--title")
    a = p.parse_args(argv)
    out = a.output_dir
    if out is not None and os.path.splitext(out)[1].lower() not in (".png", ".svg", ".pdf", ".jpg", ".jpeg"):
        out = os.path.join(out, "curves.png")
    try:
        print(plot_run(a.run_dir, out, a.title, a.keys))
    except FileNotFoundError as e:
        raise UserError(f"{e.filename} does not exist: RUN_DIR is a training run's output_dir (or one of its "
                        "checkpoint-N folders), which holds trainer_state.json.") from None
    except KeyError as e:
        raise UserError(f"{a.run_dir}/trainer_state.json has no {e} entry: is it a trainer's state file?") from None
    except (OSError, ValueError) as e:
        raise UserError(str(e)) from None
