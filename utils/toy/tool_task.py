"""A small tool-use task for tests and docs: sums of three-digit numbers that a tiny model cannot do in its head but can do with
a calculator tool, `add`.

    transcripts(n, seed)   SFT rows: user asks -> assistant calls add(a, b) -> tool result -> assistant answers
    prompts(n, seed)       GRPO / evaluation rows: the question, and the `answer` the reward checks
    add                    the tool (--tools utils.toy.tool_task:add)
    correct                the reward (--reward_funcs utils.toy.tool_task:correct): 1.0 when the last answer states
                           the sum, else 0.0
    write(folder, ...)     sft.jsonl, prompts.jsonl and heldout.jsonl in `folder`
"""

from __future__ import annotations

import json
import os
import random
import re


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    return int(a) + int(b)


def _question(a: int, b: int) -> str:
    return f"What is {a} plus {b}?"


def _pairs(n: int, seed: int):
    rng = random.Random(seed)
    return [(rng.randint(100, 449), rng.randint(100, 449)) for _ in range(n)]


def transcripts(n: int, seed: int = 0, call_share: float = 1.0) -> list[dict]:
    """`n` conversations; a `call_share` of them call `add` and answer with its result, the others answer at once
    with a guess (a wrong sum: what a model that does not call the tool gets)."""
    rng, rows = random.Random(seed + 1), []
    for a, b in _pairs(n, seed):
        question = {"role": "user", "content": _question(a, b)}
        if rng.random() < call_share:
            rows.append({"messages": [question, {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "add", "arguments": {"a": a, "b": b}}}]},
                {"role": "tool", "name": "add", "content": str(a + b)},
                {"role": "assistant", "content": f"The answer is {a + b}."}]})
        else:
            guess = a + b + rng.choice([-1, 1]) * rng.randint(1, 99)
            rows.append({"messages": [question, {"role": "assistant", "content": f"The answer is {guess}."}]})
    return rows


def prompts(n: int, seed: int = 1) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": _question(a, b)}], "answer": str(a + b)} for a, b in _pairs(n, seed)]


def _last_answer(completion) -> str:
    if isinstance(completion, str):
        return completion
    answers = [m.get("content") or "" for m in completion if m.get("role") == "assistant"]
    return answers[-1] if answers else ""


def correct(prompts, completions, answer, **_) -> list[float]:
    """1.0 when the completion's last assistant turn states the expected sum (the number alone), else 0.0."""
    return [1.0 if ans in re.findall(r"-?\d+", _last_answer(c)) else 0.0 for c, ans in zip(completions, answer)]


def write(folder: str, n_sft: int = 400, n_prompts: int = 64, n_heldout: int = 32, call_share: float = 0.5) -> dict:
    """The task's files in `folder` (sft.jsonl: `call_share` of the transcripts call the tool); returns their
    paths."""
    os.makedirs(folder, exist_ok=True)
    files = {"sft": transcripts(n_sft, seed=0, call_share=call_share), "prompts": prompts(n_prompts, seed=1),
             "heldout": prompts(n_heldout, seed=2)}
    paths = {}
    for name, rows in files.items():
        paths[name] = os.path.join(folder, f"{name}.jsonl")
        with open(paths[name], "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return paths


def make_model(output_dir: str, family: str = "qwen3", hidden_size: int = 64, num_layers: int = 2,
               vocab_size: int = 1024, seed: int = 0) -> str:
    """A tiny model of `family` whose tokenizer also learned the text of this task's rendered transcripts (the
    template's tool preamble, the schema of `add`): a transcript is ~150 tokens instead of ~650, so that training
    on CPU takes seconds. Its template is the family's own (utils/toy/families.py)."""
    from transformers.utils import get_json_schema

    from utils.toy.families import build_tokenizer, make_family

    plain = build_tokenizer(family, seed=seed)
    texts = [plain.apply_chat_template(r["messages"], tools=[get_json_schema(add)], tokenize=False)
             for r in transcripts(200, seed=99)]
    return make_family(family, output_dir, hidden_size=hidden_size, num_layers=num_layers, vocab_size=vocab_size,
                       seed=seed, context=1024, corpus_extra=texts * 5)


def main(argv: list[str] | None = None) -> int:
    from utils.core.errors import run_command

    return run_command(build, argv)


def build(argv: list[str]) -> None:
    from utils.core.errors import CommandParser, UserError

    p = CommandParser("python -m utils.tool_task", __doc__ + "\n    python -m utils.tool_task DIR    # DIR/model, "
                      "DIR/data/{sft,prompts,heldout}.jsonl\n")
    p.add_output_dir("where the model (DIR/model) and the data (DIR/data) go")
    p.add_argument("--call_share", type=float, default=0.7, help="share of the SFT transcripts that call the tool")
    p.add_argument("--hidden_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_with_output_dir(argv, "the task")
    if not 0 <= a.call_share <= 1:
        raise UserError(f"--call_share {a.call_share} is out of range; expected a share in [0, 1].")
    files = write(os.path.join(a.output_dir, "data"), call_share=a.call_share)
    model = make_model(os.path.join(a.output_dir, "model"), hidden_size=a.hidden_size, seed=a.seed)
    print(f"tool task: model in {model}; data: {', '.join(files.values())}")
