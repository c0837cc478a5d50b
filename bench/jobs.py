"""What every benchmark run shares: the model sizes, the data, and the "job" flags that define the
work (batch, steps, lengths), given identically to `main_train.py` and to `bench/bare_trl.py`.

Sizes: two tiny random models, "smollm2" = the real pretrained SmolLM2-135M-Instruct (utils/toy/smollm2.py) with
chat-format data of realistic length (bench/real_data.py) and 32 sampled tokens for the online methods, and "vlm" = a
random SmolVLM-shaped vision-language model with image rows, methods VLM-SFT / VLM-DPO (bench/vlm_jobs.py).

Everything not in JOB is left to each side's defaults: ours (rlhf_args/) or TRL's. The only TRL default
overridden on the bare side with TRL's defaults is bf16 (TRL turns it on whenever fp16 is off and then refuses to
start on a CPU), so those runs are fp32; with our defaults (bare-same) it follows ours (bench/bare_trl.py).
"""

from __future__ import annotations

import functools
import json
import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

ENV = dict(os.environ, CUDA_VISIBLE_DEVICES="", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
           TRANSFORMERS_OFFLINE="1", TRL_EXPERIMENTAL_SILENCE="1", DS_ACCELERATOR="cpu", PYTHONPATH=str(ROOT),
           OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(os.cpu_count() or 1)))

# name -> make_tiny kwargs. One tokenizer (vocab 1024) for both, so both see the same token counts.
SIZES = {"0.2M": dict(hidden_size=64, num_layers=2, vocab_size=1024),
         "3.5M": dict(hidden_size=256, num_layers=5, vocab_size=1024), "smollm2": None}
REAL = "smollm2"
VLM = "vlm"  # vision-language jobs (methods VLM-*): bench/vlm_jobs.py
COMPLETION_TOKENS = 128  # online methods: tokens sampled per completion (prompt ~50 tokens -> ~180 in all)
REAL_COMPLETION_TOKENS = 32  # the same at the real size (prompts 60-100 tokens)
BATCH = 4

# method -> (data kind, train_mode, extra job flags). Online methods get a cheap Python reward so that the
# comparison times the trainer, not a reward model.
METHODS = {
    "SFT": ("sft", "full", []),
    "SFT-LoRA": ("sft", "lora", []),
    "DPO": ("preference", "full", []),
    "DPO-LoRA": ("preference", "lora", []),
    "KTO": ("kto", "full", []),
    "Reward": ("reward", "full", []),
    "Reward-LoRA": ("reward", "lora", []),
    "SimPO": ("preference", "full", []),
    "CPOSimPO": ("preference", "full", []),
    "RLOO": ("prompt", "full", ["--num_generations", "4", "--max_completion_length", str(COMPLETION_TOKENS),
                                "--reward_funcs", "bench/rewards.py:word_reward"]),
    "GRPO": ("prompt", "full", ["--num_generations", "4", "--max_completion_length", str(COMPLETION_TOKENS),
                                "--reward_funcs", "bench/rewards.py:word_reward"]),
    "GRPO-LoRA": ("prompt", "lora", ["--num_generations", "4", "--max_completion_length", str(COMPLETION_TOKENS),
                                     "--reward_funcs", "bench/rewards.py:word_reward"]),
    # lmbda 0 (supervised KD): every step does the same work, so step times are comparable.
    "GKD": ("messages", "full", ["--lmbda", "0"]),
}


def rlhf_type(method: str) -> str:
    return method.split("-")[0]


def model_path(size: str) -> str:
    if size == REAL:
        from utils.toy.smollm2 import hf_dir

        return str(hf_dir())
    return str(OUT / "models" / size)


def data_dir(size: str) -> Path:
    return OUT / ("data-" + REAL if size == REAL else "data")


def completion_tokens(size: str) -> int:
    return REAL_COMPLETION_TOKENS if size == REAL else COMPLETION_TOKENS


def runs(method: str, size: str) -> bool:
    """The method exists at that size: VLM-* methods at the "vlm" size only, the others at the text sizes."""
    return method.startswith("VLM-") == (size == VLM)


def data_kind(method: str) -> str:
    import vlm_jobs

    return (vlm_jobs.METHODS.get(method) or METHODS.get(method) or ("",))[0]


def bare_flags(method: str) -> list[str]:
    """Flags the bare script alone gets (VLM jobs: the same rows in TRL's form)."""
    import vlm_jobs

    return vlm_jobs.bare_flags(method) if method in vlm_jobs.METHODS else []


def job_flags(method: str, size: str, steps: int, out_dir: Path) -> list[str]:
    if size == VLM:
        import vlm_jobs

        return vlm_jobs.job_flags(method, steps, out_dir, BATCH)
    kind, mode, extra = METHODS[method]
    extra = [str(completion_tokens(size)) if a == str(COMPLETION_TOKENS) else a for a in extra]
    model = model_path(size)
    flags = ["--rlhf_type", rlhf_type(method), "--train_mode", mode, "--model_name_or_path", model,
             "--train_data_path", str(data_dir(size) / f"{kind}.jsonl"), "--output_dir", str(out_dir),
             "--per_device_train_batch_size", str(BATCH), "--max_steps", str(steps), "--learning_rate", "1e-5",
             "--seed", "0", "--save_strategy", "no", "--disable_tqdm", "true", *extra]
    if method == "GKD":
        flags += ["--teacher_model_name_or_path", model]
    return flags


# ------------------------------------------------------------------------------------------ building
def _text(rng: random.Random, tokenizer, n_tokens: int) -> str:
    """Random words from the tiny tokenizer's corpus, grown until the text is n_tokens long."""
    from utils.toy.tiny_model import WORDS

    words = []
    while len(tokenizer(" ".join(words))["input_ids"]) < n_tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def build(n_rows: int = 64, sizes=("0.2M", "3.5M")) -> None:
    """Models of both tiny sizes (plus a 1-label reward model per size for PPO) and one file per data kind; the
    real model's chat data when asked for."""
    from utils.toy.tiny_model import make_tiny

    if VLM in sizes:
        import vlm_jobs

        vlm_jobs.build(n_rows)
    if REAL in sizes:
        import real_data

        real_data.build(model_path(REAL), data_dir(REAL))
    for size, kw in SIZES.items():
        if kw is None:
            continue
        path = OUT / "models" / size
        if not (path / "config.json").exists():
            make_tiny(str(path), **kw)
        rm = OUT / "models" / f"{size}-rm"
        if not (rm / "config.json").exists():
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1).save_pretrained(str(rm))
            AutoTokenizer.from_pretrained(str(path)).save_pretrained(str(rm))
    data = OUT / "data"
    if (data / "sft.jsonl").exists():
        return
    data.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(OUT / "models" / "3.5M"))
    rng = random.Random(0)
    rows = []
    for _ in range(n_rows):  # prompt ~70 + answer ~100 tokens: each sequence 150-200 tokens
        rows.append((_text(rng, tok, rng.randint(60, 80)), _text(rng, tok, rng.randint(90, 110)),
                     _text(rng, tok, rng.randint(90, 110))))
    files = {
        "preference": [{"prompt": p + " ", "chosen": c, "rejected": r} for p, c, r in rows],
        "kto": [{"prompt": p + " ", "completion": c if i % 2 else r, "label": bool(i % 2)}
                for i, (p, c, r) in enumerate(rows)],
        "reward": [{"chosen": f"{p} {c}", "rejected": f"{p} {r}"} for p, c, r in rows],
        "prompt": [{"prompt": _text(rng, tok, 50)} for _ in range(n_rows)],
        "messages": [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
                     for p, c, _ in rows],
        "sft": [{"prompt": p + " ", "completion": c} for p, c, _ in rows],
    }
    for kind, items in files.items():
        with open(data / f"{kind}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in items)


@functools.lru_cache(None)
def n_params(size: str) -> tuple[int, int, int, int]:
    """(parameters doing matmuls = all but the input embedding, layers, hidden size, all parameters)."""
    from transformers import AutoConfig

    if size == VLM:
        import vlm_jobs

        return vlm_jobs.n_params()
    c = AutoConfig.from_pretrained(model_path(size))
    h, layers, v = c.hidden_size, c.num_hidden_layers, c.vocab_size
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * c.intermediate_size + 2 * h + 2 * kv + h  # + biases, norms
    matmul = layers * per_layer + v * h + h  # the output head multiplies, tied to the input embedding or not
    return matmul, layers, h, matmul + (0 if getattr(c, "tie_word_embeddings", False) else v * h)


@functools.lru_cache(None)
def seq_tokens(method: str, size: str = "3.5M") -> float:
    """Mean tokens one batch row puts through the policy per step (prompt + completion(s))."""
    from transformers import AutoTokenizer

    if size == VLM:
        import vlm_jobs

        return vlm_jobs.seq_tokens(method)
    if size == REAL:  # counted after the chat template by bench/real_data.py; online: prompt + the longest completion
        t = json.loads((data_dir(REAL) / "tokens.json").read_text())
        kind = METHODS[method][0]
        return t["prompt_mean"] + REAL_COMPLETION_TOKENS if kind == "prompt" else t[kind]

    tok = AutoTokenizer.from_pretrained(str(OUT / "models" / "3.5M"))
    kind = METHODS[method][0]
    rows = [json.loads(x) for x in open(OUT / "data" / f"{kind}.jsonl")]
    n = lambda s: len(tok(s)["input_ids"])  # noqa: E731
    if kind == "preference":
        return sum(2 * n(r["prompt"]) + n(r["chosen"]) + n(r["rejected"]) for r in rows) / len(rows)
    if kind == "kto":
        return sum(n(r["prompt"]) + n(r["completion"]) for r in rows) / len(rows)
    if kind == "reward":
        return sum(n(r["chosen"]) + n(r["rejected"]) for r in rows) / len(rows)
    if kind == "sft":
        return sum(n(r["prompt"]) + n(r["completion"]) for r in rows) / len(rows)
    if kind == "messages":
        return sum(n(tok.apply_chat_template(r["messages"], tokenize=False)) for r in rows) / len(rows)
    return sum(n(r["prompt"]) + COMPLETION_TOKENS for r in rows) / len(rows)  # prompt: one completion per row
