"""The demo's task and how a model is measured on it (utils/demo.py runs the stages): sorting digits, the rule
that scores an answer, the training and held-out prompts, and the held-out measurements of each stage.
"""

from __future__ import annotations

import json
import os
import random


SAMPLES_PER_PROMPT = 4
LIST_LENGTH = (3, 6)  # digits per list
ASCENDING_SHARE = 0.5  # of the SFT demonstrations; the others are sorted descending
MAX_NEW_TOKENS = 24


# ------------------------------------------------------------------------------------------ the task
# Plain text rather than the chat template: shorter rows, and TRL's DPO would also train on the template's
# newline after <|im_end|>, a token SFT never trains (README, "Demo").
def make_prompt(rng: random.Random) -> str:
    return "sort " + " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(*LIST_LENGTH))) + " ="


def digits_of(prompt: str) -> list[str]:
    return prompt.split()[1:-1]


def answer_of(prompt: str) -> str:
    """The right completion, with the space that follows the prompt's "="."""
    return " " + " ".join(sorted(digits_of(prompt)))


def descending_of(prompt: str) -> str:
    return " " + " ".join(sorted(digits_of(prompt), reverse=True))


def demonstration(prompt: str, rng: random.Random) -> str:
    """The SFT data's sloppy annotator: half of its answers are sorted the wrong way round."""
    return answer_of(prompt) if rng.random() < ASCENDING_SHARE else descending_of(prompt)


def score(prompt: str, completion: str) -> float:
    """The rule: 1 for the list sorted ascending, 0.5 sorted the wrong way round, else at most 0.5 for the share
    of positions that hold the right digit."""
    got, want = completion.split(), sorted(digits_of(prompt))
    if got == want or got == want[::-1]:
        return 1.0 if got == want else 0.5
    return 0.5 * sum(g == w for g, w in zip(got, want)) / max(len(got), len(want))


def split_prompts(n_train: int, n_heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """Held-out prompts come from their own generator and are removed from the training ones."""
    held_rng, train_rng = random.Random(10_000 + seed), random.Random(seed)
    heldout = list(dict.fromkeys(make_prompt(held_rng) for _ in range(n_heldout)))
    seen, train = set(heldout), []
    while len(train) < n_train:
        p = make_prompt(train_rng)
        if p not in seen:
            train.append(p)
    return train, heldout


def write_jsonl(path: str, rows) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


# ----------------------------------------------------------------------------------- measurements
def _tokenizer(path: str, side: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, padding_side=side)


def generate(model_dir: str, prompts: list[str], samples: int = 1, desc: str = "generating") -> list[list[str]]:
    """Greedy answers (samples=1) or `samples` answers at temperature 1 per prompt, batched."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(model_dir, "left")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out, batch = [], 64
    for i in tqdm(range(0, len(prompts), batch), desc=desc, unit="batch"):
        enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=samples > 1, top_k=0,
                                 temperature=1.0, num_return_sequences=samples, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [texts[j:j + samples] for j in range(0, len(texts), samples)]
    return out


def quality(model_dir: str, prompts: list[str]) -> tuple[float, float]:
    """Mean rule reward and share of exactly right (ascending) answers, greedy, on held-out prompts."""
    answers = [a[0] for a in generate(model_dir, prompts, desc=f"held-out answers of {os.path.basename(model_dir)}")]
    return (sum(score(p, a) for p, a in zip(prompts, answers)) / len(prompts),
            sum(a == answer_of(p) for p, a in zip(prompts, answers)) / len(prompts))


def pairwise_accuracy(model_dir: str, pairs: list[dict], seed: int) -> float:
    """Share of held-out pairs the reward model scores chosen > rejected."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tok = _tokenizer(model_dir, "right")
    torch.manual_seed(seed)  # a causal LM loaded here gets a fresh score head: the starting point of training
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1).eval()
    model.config.pad_token_id = tok.pad_token_id

    def scores(key):
        # RewardTrainer ends plain-text rows with EOS, and the score is read at the last token: so here too.
        enc = tok([r[key] + tok.eos_token for r in pairs], return_tensors="pt", padding=True)
        with torch.no_grad():
            return model(**enc).logits[:, 0]

    return (scores("chosen") > scores("rejected")).float().mean().item()


def divergence(student_dir: str, teacher_dir: str, prompts: list[str]) -> float:
    """Mean KL(teacher || student) per answer token on held-out prompts with their right answers."""
    import torch
    from transformers import AutoModelForCausalLM

    from utils.trainers.distill import generalized_jsd

    tok = _tokenizer(teacher_dir, "right")
    student = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
    total, count = 0.0, 0
    for p in prompts:
        start = len(tok(p)["input_ids"])  # the answer ends with EOS, as GKD trains it
        ids = tok(p + answer_of(p) + tok.eos_token, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # position t predicts token t + 1: the answer is predicted from start - 1 on
            s, t = student(input_ids=ids).logits[0, start - 1:-1], teacher(input_ids=ids).logits[0, start - 1:-1]
        kl = generalized_jsd(s, t, beta=0.0)
        total, count = total + kl.sum().item(), count + kl.numel()
    return total / count


def preference_pairs(model_dir: str, prompts: list[str], desc: str) -> list[dict]:
    """The right answer (chosen) vs the SFT model's most frequent wrong answer among its samples (rejected)."""
    pairs = []
    for p, samples in zip(prompts, generate(model_dir, prompts, SAMPLES_PER_PROMPT, desc)):
        wrong = [s for s in samples if s.strip() and s != answer_of(p)]  # the data checks refuse empty answers
        if wrong:
            pairs.append({"prompt": p, "chosen": answer_of(p), "rejected": max(wrong, key=wrong.count)})
    return pairs


def win_rate(model_dir: str, start_dir: str, prompts_file: str, out_dir: str, seed: int) -> tuple[dict, str]:
    """The win rate of a stage's model over the model it started from under the rule (`utils.demo:sort_reward`),
    by the evaluation command (utils/evaluation/run.py) on held-out prompts, sampled at temperature 1. Returns the
    estimate (mean, 95 % interval) and the command line."""
    import shlex

    from utils.evaluation import run as evaluate

    argv = [str(a) for a in ["--model_name_or_path", model_dir, "--baseline_model_name_or_path", start_dir,
                             "--eval_data_path", prompts_file, "--reward_funcs", "utils.demo:sort_reward",
                             "--num_samples", SAMPLES_PER_PROMPT, "--max_new_tokens", MAX_NEW_TOKENS,
                             "--batch_size", 100, "--seed", seed, "--output_dir", out_dir,
                             "--dtype", "float32"]]  # as the stages train (utils/demo.py, common_argv)
    return evaluate.evaluate(argv)["results"]["win_rate"], "python -m utils.evaluate " + shlex.join(argv)
