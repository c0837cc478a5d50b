"""What the demo's stages start from (utils/demo.py runs them): its sizes (full or quick), the tiny models and data
files it builds on the spot, and the preference pairs sampled from the SFT model."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from utils.toy.demo_task import answer_of, demonstration, preference_pairs, split_prompts, write_jsonl


@dataclass(frozen=True)
class Settings:
    hidden: int; layers: int  # noqa: E702 - policy size (the GKD teacher)
    student_hidden: int; student_layers: int  # noqa: E702 - the smaller GKD student
    sft_rows: int; sft_steps: int; rm_steps: int; dpo_steps: int; grpo_steps: int; gkd_steps: int  # noqa: E702
    pair_prompts: int  # prompts sampled from the SFT model to build preference pairs
    heldout: int  # held-out prompts (never trained on)


FULL = Settings(hidden=128, layers=2, student_hidden=64, student_layers=2, sft_rows=6000, sft_steps=800,
                pair_prompts=1200, rm_steps=100, dpo_steps=100, grpo_steps=60, gkd_steps=150, heldout=500)
QUICK = Settings(hidden=128, layers=2, student_hidden=64, student_layers=2, sft_rows=4000, sft_steps=500,
                 pair_prompts=600, rm_steps=60, dpo_steps=60, grpo_steps=30, gkd_steps=80, heldout=300)
STAGE_DIRS = ("base", "student_base", "sft", "reward", "dpo", "grpo", "gkd")


@dataclass(frozen=True)
class Workspace:
    """What every stage reads: where models and data are, the prompts, the sizes and the seed."""
    out: str
    settings: Settings
    seed: int
    path: dict[str, str]  # model directory of each of STAGE_DIRS (base, student_base: the fresh models)
    files: dict[str, str]  # data files: sft, gkd (right answers), prompts (GRPO), heldout (prompt + answer)
    pair_prompts: list[str]  # prompts no stage trains on before the pairs are sampled
    heldout: list[str]  # never trained on


def build_workspace(out: str, s: Settings, seed: int) -> Workspace:
    """The fresh policy and student models (one tokenizer, fixed seeds) and the data files, under `out`."""
    path = {k: os.path.join(out, k) for k in STAGE_DIRS}
    save_fresh_models(path, s, seed)
    train_prompts, heldout = split_prompts(s.sft_rows + s.pair_prompts, s.heldout, seed)
    sft_prompts, pair_prompts = train_prompts[:s.sft_rows], train_prompts[s.sft_rows:]
    files = write_task_data(os.path.join(out, "data"), sft_prompts, pair_prompts, heldout, seed)
    return Workspace(out, s, seed, path, files, pair_prompts, heldout)


def save_fresh_models(path: dict[str, str], s: Settings, seed: int) -> None:
    from utils.toy.tiny_model import build_model, build_tokenizer, save

    tokenizer = build_tokenizer(512, seed=0)
    for key, hidden, layers in (("base", s.hidden, s.layers), ("student_base", s.student_hidden, s.student_layers)):
        save(build_model(tokenizer, hidden_size=hidden, num_layers=layers, seed=seed), tokenizer, path[key])


def write_task_data(data: str, sft_prompts: list[str], pair_prompts: list[str], heldout: list[str],
                    seed: int) -> dict[str, str]:
    """SFT rows from the sloppy annotator, GKD rows with the right answers, GRPO prompts, held-out prompts."""
    os.makedirs(data, exist_ok=True)
    rng = random.Random(seed)
    return {
        "sft": write_jsonl(os.path.join(data, "sft.jsonl"),
                           [{"prompt": p, "completion": demonstration(p, rng)} for p in sft_prompts]),
        "gkd": write_jsonl(os.path.join(data, "gkd.jsonl"), [{"prompt": p, "completion": answer_of(p)}
                                                             for p in sft_prompts]),
        "prompts": write_jsonl(os.path.join(data, "prompts.jsonl"), [{"prompt": p} for p in pair_prompts]),
        "heldout": write_jsonl(os.path.join(data, "heldout.jsonl"),
                               [{"prompt": p, "answer": answer_of(p)} for p in heldout]),
    }


@dataclass(frozen=True)
class Pairs:
    dpo_file: str  # prompt / chosen / rejected rows
    reward_file: str  # the same pairs as whole texts (chosen / rejected)
    count: int  # training pairs
    heldout: list[dict]  # whole-text pairs from the held-out prompts (also in reward_pairs_heldout.jsonl)


def write_preference_pairs(w: Workspace, policy: str) -> Pairs:
    """The right answer against the `policy` model's own usual mistake, on prompts no stage trained on; the
    held-out pairs come from the held-out prompts."""
    data = os.path.join(w.out, "data")
    pairs = preference_pairs(policy, w.pair_prompts, "sampling answers for training pairs")
    heldout = [whole_texts(r) for r in preference_pairs(policy, w.heldout, "sampling answers for held-out pairs")]
    dpo_file = write_jsonl(os.path.join(data, "pairs.jsonl"), pairs)
    reward_file = write_jsonl(os.path.join(data, "reward_pairs.jsonl"), [whole_texts(r) for r in pairs])
    write_jsonl(os.path.join(data, "reward_pairs_heldout.jsonl"), heldout)
    return Pairs(dpo_file, reward_file, len(pairs), heldout)


def whole_texts(pair: dict) -> dict:
    """A reward-model row: prompt + answer for each side (plain text, no prompt column)."""
    return {"chosen": pair["prompt"] + pair["chosen"], "rejected": pair["prompt"] + pair["rejected"]}
