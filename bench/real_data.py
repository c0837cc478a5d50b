"""Chat-format data for the real-model size ("smollm2" in bench/jobs.py): SmolLM2-135M-Instruct's ChatML
template with its default system prompt, English sentences, realistic short lengths.

    prompt (rendered with the template, incl. the default system prompt and the assistant header): 60-100 tokens
    each answer (chosen / rejected / SFT completion): 30-60 tokens

Files under bench/out/data-smollm2/: preference, reward, prompt, sft (prompt + completion, conversational),
and tokens.json: mean tokens a batch row puts through the policy per step, counted with the real tokenizer
after the chat template (what bench/run_bench.py divides by for tokens/s).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ["photosynthesis", "the water cycle", "compound interest", "vaccines", "black holes", "plate tectonics",
          "the French Revolution", "neural networks", "supply and demand", "the immune system", "bread baking",
          "solar panels", "jazz music", "the Roman Empire", "recycling plastic", "sleep and memory"]
CONTEXT = ["I am preparing a short talk for a group of high school students next week.",
           "My younger brother asked me about this at dinner and I could not explain it well.",
           "I have read a few articles, but they were full of jargon and hard to follow.",
           "Please keep the answer simple and avoid long lists or tables.",
           "It would help to have one concrete everyday example.",
           "I only have a few minutes to read, so a compact answer is best.",
           "I would also like to know why people often get this wrong.",
           "Assume I remember very little from school science or history lessons.",
           "If there is a common misconception, please point it out.",
           "I am curious about the main idea rather than every detail."]
ANSWER = ["The key idea is simpler than it first looks.", "In everyday terms, think of it as a steady exchange.",
          "A useful example is something you can see at home or in the kitchen.",
          "Most of the effect comes from a few basic steps repeated many times.",
          "People often confuse the cause with the result, which leads to mistakes.",
          "Scientists and historians have studied this for a long time and agree on the basics.",
          "Small changes at the start can grow into large differences later on.",
          "It matters because it shapes decisions that people make every single day.",
          "The details are complex, but the overall pattern is easy to remember.",
          "You can check this yourself with a simple experiment or a quick calculation."]
BAD = ["I am not sure, it is complicated.", "This is just how things are and nobody knows why.",
       "It does not really matter much.", "You should look it up somewhere else.",
       "There are many opinions and all of them are equally right.", "It is mostly magic and luck."]


def _grow(rng, tok, pool, lo, hi, head="") -> str:
    """Sentences from `pool` appended until the text is lo-hi tokens long (retries until it lands in range)."""
    while True:
        text, target = head, rng.randint(lo, hi)
        while len(tok(text)["input_ids"]) < target:
            text = (text + " " + rng.choice(pool)).strip()
        if len(tok(text)["input_ids"]) <= hi:
            return text


def build(tokenizer_dir: str, out: Path, n_rows: int = 16) -> None:
    if (out / "tokens.json").exists():
        return
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    count = lambda msgs, gen=False: len(tok(tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen),  # noqa: E731
                                            add_special_tokens=False)["input_ids"])
    system = count([{"role": "user", "content": ""}], True)
    rng = random.Random(0)
    rows = []
    for _ in range(n_rows):
        topic = rng.choice(TOPICS)
        # user text sized so that system prompt + template + user text = 60-100 tokens
        user = _grow(rng, tok, CONTEXT, 60 - system, 100 - system, f"Can you explain {topic} to me?")
        chosen = _grow(rng, tok, ANSWER, 30, 60, f"Sure. {topic.capitalize()} is a good topic.")
        rejected = _grow(rng, tok, BAD + ANSWER[:3], 30, 60, f"{topic.capitalize()}?")
        rows.append((user, chosen, rejected))
    U = lambda s: [{"role": "user", "content": s}]  # noqa: E731
    A = lambda s: [{"role": "assistant", "content": s}]  # noqa: E731
    files = {
        "preference": [{"prompt": U(u), "chosen": A(c), "rejected": A(r)} for u, c, r in rows],
        "reward": [{"chosen": U(u) + A(c), "rejected": U(u) + A(r)} for u, c, r in rows],
        "prompt": [{"prompt": U(u)} for u, _, _ in rows],
        "sft": [{"prompt": U(u), "completion": A(c)} for u, c, _ in rows],
    }
    out.mkdir(parents=True, exist_ok=True)
    for kind, items in files.items():
        with open(out / f"{kind}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in items)
    n = count
    prompt = [n(U(u), True) for u, _, _ in rows]
    full_c, full_r = [n(U(u) + A(c)) for u, c, _ in rows], [n(U(u) + A(r)) for u, _, r in rows]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    tokens = {"prompt_mean": mean(prompt), "prompt_min": min(prompt), "prompt_max": max(prompt),
              "answer_mean": mean([c - p for c, p in zip(full_c, prompt)]),
              "answer_min": min(c - p for c, p in zip(full_c + full_r, prompt + prompt)),
              "answer_max": max(c - p for c, p in zip(full_c + full_r, prompt + prompt)),
              "preference": mean([c + r for c, r in zip(full_c, full_r)]), "reward": mean([c + r for c, r in zip(full_c, full_r)]),
              "sft": mean(full_c), "system_and_template": system}
    (out / "tokens.json").write_text(json.dumps(tokens, indent=1))
