"""Shared fixtures: tiny models saved to disk (loaded through from_pretrained), synthetic data, and
a helper that runs main_train.py as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV = dict(os.environ, CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
           TRANSFORMERS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1", DS_ACCELERATOR="cpu",
           PYTHONPATH=str(ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))


def run_cli(*args, check=True, timeout=600, module=None):
    """Run `python main_train.py ARGS` (or `python -m MODULE ARGS`); returns the CompletedProcess."""
    cmd = [sys.executable] + (["-m", module] if module else [str(ROOT / "main_train.py")]) + [str(a) for a in args]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}")
    return proc


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def log_history(output_dir) -> list[dict]:
    return json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]


# ------------------------------------------------------------------------------ synthetic tasks
def _pair_row(prompt: str, chosen: str, rejected: str, conversational: bool) -> dict:
    """One preference row, conversational (message lists) or plain strings (the prompt ends with a space)."""
    if conversational:
        return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}]}
    return {"prompt": prompt + " ", "chosen": chosen, "rejected": rejected}


def addition_pairs(n: int, seed: int = 0, conversational: bool = True):
    """Preference pairs on two-number addition: chosen is the right sum, rejected a wrong one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        wrong = a + b + rng.choice([-3, -2, -1, 1, 2, 3])
        prompt, chosen, rejected = f"What is {a}+{b}?", f"{a + b}", f"{wrong}"
        rows.append(_pair_row(prompt, chosen, rejected, conversational))
    return rows


GOOD = ["sure", "thanks", "great", "help", "yes", "good", "fine", "right"]
BAD = ["no", "sorry", "cannot", "low", "old", "off", "never", "wrong"]


def style_pairs(n: int, seed: int = 0, conversational: bool = True):
    """Preference pairs a tiny model can learn from few steps: chosen answers use words from GOOD,
    rejected ones words from BAD; prompts and word combinations are random, so held-out pairs are new."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = " ".join(rng.sample(["what", "is", "the", "way", "home", "water", "time", "day", "year"], 4)) + "?"
        chosen, rejected = " ".join(rng.sample(GOOD, 3)), " ".join(rng.sample(BAD, 3))
        rows.append(_pair_row(prompt, chosen, rejected, conversational))
    return rows


def to_reward_rows(pairs):
    """Reward data: whole conversations (prompt + answer)."""
    out = []
    for r in pairs:
        if isinstance(r["prompt"], list):
            out.append({"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]})
        else:
            out.append({"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]})
    return out


def to_kto_rows(pairs):
    out = []
    for r in pairs:
        out.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        out.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return out


def to_sft_rows(pairs):
    return [{"prompt": r["prompt"], "completion": r["chosen"]} for r in pairs]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from utils.toy.tiny_model import make_tiny

    return Path(make_tiny(str(tmp_path_factory.mktemp("tiny") / "model")))


@pytest.fixture(scope="session")
def tiny_nopad_dir(tmp_path_factory) -> Path:
    from utils.toy.tiny_model import make_tiny

    return Path(make_tiny(str(tmp_path_factory.mktemp("tiny_nopad") / "model"), pad_token=False))


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory) -> dict:
    """family -> directory of a tiny vision-language model with its processor (utils/toy/vision.py)."""
    from utils.toy.vision import VISION_FAMILIES, make_tiny_vlm

    root = tmp_path_factory.mktemp("tiny_vlms")
    return {f: make_tiny_vlm(str(root / f), f) for f in VISION_FAMILIES}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data")
    pairs = addition_pairs(64, seed=1)
    write_jsonl(d / "pref.jsonl", pairs)
    write_jsonl(d / "pref_plain.jsonl", addition_pairs(64, seed=1, conversational=False))
    write_jsonl(d / "pref_eval.jsonl", addition_pairs(32, seed=2))
    write_jsonl(d / "reward.jsonl", to_reward_rows(pairs))
    write_jsonl(d / "reward_eval.jsonl", to_reward_rows(addition_pairs(64, seed=2)))
    write_jsonl(d / "kto.jsonl", to_kto_rows(pairs))
    write_jsonl(d / "sft.jsonl", to_sft_rows(pairs))
    write_jsonl(d / "sft_plain.jsonl", to_sft_rows(addition_pairs(64, seed=1, conversational=False)))
    write_jsonl(d / "sft_messages.jsonl", [{"messages": r["prompt"] + r["chosen"]} for r in pairs])
    write_jsonl(d / "prompts.jsonl", [{"prompt": r["prompt"]} for r in pairs])
    return d


# Flags that keep CLI runs short and deterministic on 2 CPU cores.
FAST = ["--max_steps", "3", "--per_device_train_batch_size", "4", "--save_strategy", "no",
        "--max_length", "64", "--gradient_checkpointing", "false", "--seed", "0", "--disable_tqdm", "true"]


def run_main(*args) -> int:
    """main_train.main in this process: the same argv path as the CLI without a new interpreter (saves
    ~10 s of imports per run). Subprocess runs (run_cli) cover the real command line."""
    import main_train

    return main_train.main([str(a) for a in args])


# ------------------------------------------------------------------------------ long runs (test_long_runs, test_saving)
LONG_RUN = ["--rlhf_type", "DPO", "--train_mode", "lora", "--per_device_train_batch_size", "4", "--max_length", "64",
            "--seed", "0", "--disable_tqdm", "true", "--learning_rate", "1e-3", "--bf16", "false"]


def long_run_argv(tiny_dir, data, out, *extra) -> list:
    """A LoRA DPO run on the tiny model, fp32 (its weights compared exactly across an interruption)."""
    return [*LONG_RUN, "--model_name_or_path", tiny_dir, "--train_data_path", data, "--output_dir", out, *extra]


def complete_checkpoints(out) -> dict:
    """step -> path of every checkpoint-N in `out`, each asserted complete (state, weights, the run's record)."""
    from utils.runtime.outputs import checkpoints
    from utils.runtime.resume import RECORD, incomplete

    found = checkpoints(str(out))
    for path in found.values():
        assert incomplete(path) is None and os.path.isfile(os.path.join(path, RECORD)), os.listdir(path)
    return found


@pytest.fixture
def main_train_info(caplog):
    """main_train's INFO lines in caplog (the lines that say which checkpoint a run resumed, which lock it took)."""
    import logging

    caplog.set_level(logging.INFO, logger="main_train")
