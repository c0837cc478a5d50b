"""A visual task a tiny vision-language model learns on CPU in a minute, and that no text alone can answer: name the
colour of a picture. Every prompt is the same sentence; only the image tells the colours apart.

    python -m utils.toy.vision_task DIR     # DIR/images/*.png, sft.jsonl, prompts.jsonl, heldout.jsonl

- sft.jsonl: demonstrations from a sloppy annotator (`NOISE` of the answers name another colour), so SFT learns the
  task only partly and leaves GRPO room to improve it;
- prompts.jsonl: GRPO's prompts, with the right `answer` for the reward `correct_colour` (this file's function:
  --reward_funcs utils/toy/vision_task.py:correct_colour);
- heldout.jsonl: pictures no training row has (other shades), for utils.evaluate.
Chance is 1 in len(COLOURS) for a model that answers with a colour name."""

from __future__ import annotations

import json
import os
import random
import sys

COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 60, 210), "yellow": (225, 205, 40)}
QUESTION = "Which colour is this picture? Answer with one word."
NOISE = 0.4  # share of SFT demonstrations that name a wrong colour


def _picture(colour: str, rng: random.Random):
    from PIL import Image

    base = COLOURS[colour]
    shade = tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in base)
    return Image.new("RGB", (32, 32), shade)


def _rows(folder: str, name: str, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """(relative image path, colour) for `n` new pictures."""
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    out = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        path = f"images/{name}-{i}.png"
        _picture(colour, rng).save(os.path.join(folder, path))
        out.append((path, colour))
    rng.shuffle(out)
    return out


def _write(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def make(folder: str, n_sft: int = 64, n_prompts: int = 64, n_heldout: int = 48, seed: int = 0) -> dict[str, str]:
    """The task's files in `folder`: {"sft", "prompts", "heldout"} -> path."""
    rng = random.Random(seed)
    user = lambda: [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]  # noqa: E731
    sft = []
    for image, colour in _rows(folder, "sft", n_sft, rng):
        said = colour if rng.random() >= NOISE else rng.choice([c for c in COLOURS if c != colour])
        sft.append({"messages": user() + [{"role": "assistant", "content": said}], "images": [image]})
    prompts = [{"prompt": user(), "images": [image], "answer": colour}
               for image, colour in _rows(folder, "rl", n_prompts, rng)]
    heldout = [{"prompt": user(), "images": [image], "answer": colour}
               for image, colour in _rows(folder, "heldout", n_heldout, rng)]
    return {"sft": _write(os.path.join(folder, "sft.jsonl"), sft),
            "prompts": _write(os.path.join(folder, "prompts.jsonl"), prompts),
            "heldout": _write(os.path.join(folder, "heldout.jsonl"), heldout)}


def correct_colour(completions, answer, **kwargs) -> list[float]:
    """1.0 when the completion's first word is the picture's colour, else 0.0."""
    out = []
    for completion, right in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        words = text.strip().lower().replace(".", " ").split()
        out.append(1.0 if words and words[0] == right else 0.0)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print("usage: python -m utils.toy.vision_task DIR", file=sys.stderr)
        sys.exit(2)
    for kind, path in make(sys.argv[1]).items():
        print(f"{kind}: {path}")
