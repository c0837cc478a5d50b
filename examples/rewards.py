"""Example reward functions for RLOO, GRPO, PPO and rejection sampling.

    --reward_funcs examples/rewards.py:correct_answer examples/rewards.py:target_length

The trainer calls each function with keyword arguments: `prompts` and `completions` (strings, or
lists of {"role", "content"} messages for conversational data), every extra dataset column (here
`answer`, one value per completion), and TRL's extras (`completion_ids`, `trainer_state`, ...), so
always end the signature with `**kwargs`. Return one float per completion (None = "not scored":
ignored in the weighted sum). Several functions are combined as a weighted sum, see
`--reward_weights` (reward models first, then functions, in command-line order).
"""

from __future__ import annotations

import re


def _text(completion) -> str:
    """A completion as plain text: conversational completions are lists of messages."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def correct_answer(completions, answer, **kwargs) -> list[float]:
    """1.0 when the first number in the completion equals the row's reference `answer`, else 0.0.
    Needs an `answer` column: {"prompt": [{"role": "user", "content": "What is 3+4?"}], "answer": "7"}."""
    out = []
    for completion, ref in zip(completions, answer):
        found = re.search(r"-?\d+(?:\.\d+)?", _text(completion))
        out.append(1.0 if found and found.group() == str(ref).strip() else 0.0)
    return out


def target_length(completions, target_words: int = 5, **kwargs) -> list[float]:
    """-|words - target_words| / target_words: 0 at the target length, negative either side."""
    return [-abs(len(_text(c).split()) - target_words) / target_words for c in completions]
