"""Padded vs padding-free (utils/trainers/padding_free.py): seconds per training step on length-varied rows.

    OMP_NUM_THREADS=1 python bench/padding_free.py --method dpo --model real --batch 2 --steps 4

Rows: prompts and answers of 20 to 400 words (uniform; about one token each), random common words. The two trainers
are built with our args classes (our defaults: DPO precomputes the reference log-probs), hold the same weights and
get the same batches; their steps alternate (the padded one first on even steps), after one warm-up step each. A
step is `Trainer.training_step` (forward + backward, no optimizer step, which is the same in both); wall and CPU
time (one thread: CPU time is what the step costs, less exposed to other processes on a shared machine).
`--model real` is SmolLM2-135M-Instruct (tests/real_model.py), `--model tiny` a random Qwen2 (hidden 256, 4 layers,
vocabulary 512). Prints one markdown table row per step and summary lines.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up other "
         "about out many then them these so some her would make like him into time has look two more write go see "
         "number no way could people my than first water been call who oil its now find long down day did get come "
         "made may part").split()


def rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)

    def text(lo=20, hi=400):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [{"prompt": text() + " ", "chosen": text(), "rejected": text()} for _ in range(n)]


def load(model: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == "real":
        from real_model import hf_dir

        path = hf_dir()
        return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    from utils.toy.tiny_model import build_model, build_tokenizer

    tok = build_tokenizer()
    return tok, build_model(tok, hidden_size=256, num_layers=4)


def trainers(method: str, tok, model, data, batch: int, out: str):
    import copy

    from datasets import Dataset

    from utils.trainers import padding_free as pf

    if method == "dpo":
        from trl import DPOTrainer

        from rlhf_args.dpo import DPOArgs as Args
        classes = (DPOTrainer, pf.PaddingFreeDPOTrainer)
    elif method == "sft":
        from trl import SFTTrainer

        from rlhf_args.sft import SFTArgs as Args
        classes = (SFTTrainer, pf.PaddingFreeSFTTrainer)
        data = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in data]
    else:
        from trl.experimental.cpo import CPOTrainer

        from rlhf_args.cpo import CPOArgs as Args
        classes = (CPOTrainer, pf.PaddingFreeCPOTrainer)
    built = []
    for cls, padding_free in zip(classes, (False, True)):
        args = Args(output_dir=f"{out}/{padding_free}", per_device_train_batch_size=batch, padding_free=padding_free,
                    max_length=1024, disable_tqdm=True, seed=0)
        if method == "sft":
            args.assistant_only_loss = False  # prompt + completion rows: TRL masks the prompt itself
        built.append(cls(model=copy.deepcopy(model), processing_class=tok, train_dataset=Dataset.from_list(data),
                         args=args))
    return built


def tokens(batch) -> tuple[int, int]:
    """Real and padded token counts of what the padded trainer runs (CPO concatenates chosen and rejected rows)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum()), batch["input_ids"].numel()
    chosen, rejected = batch["chosen_attention_mask"], batch["rejected_attention_mask"]
    return int(chosen.sum() + rejected.sum()), 2 * chosen.size(0) * max(chosen.size(1), rejected.size(1))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["dpo", "sft", "cpo"], default="dpo")
    p.add_argument("--model", choices=["real", "tiny"], default="real")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args(argv)
    import torch

    tok, model = load(a.model)
    n_batches = a.steps + 1
    with tempfile.TemporaryDirectory() as out:
        padded, free = trainers(a.method, tok, model, rows(a.batch * n_batches), a.batch, out)
        times = {"padded": [], "padding-free": []}
        cpu = {"padded": [], "padding-free": []}
        print("| step | real tokens | padded tokens | padded s (CPU s) | padding-free s (CPU s) | ratio (CPU) |\n"
              "|---|---|---|---|---|---|")
        for step in range(n_batches):
            examples = [padded.train_dataset[i] for i in range(step * a.batch, (step + 1) * a.batch)]
            batch = padded.data_collator(examples)
            batch_free = free.data_collator(examples)
            real, padded_tokens = tokens(batch)
            order = [("padded", padded, batch), ("padding-free", free, batch_free)]
            step_times, cpu_times = {}, {}
            for name, trainer, inputs in (order if step % 2 == 0 else order[::-1]):
                trainer.model.train()
                trainer.current_gradient_accumulation_steps = 1  # set by train(), which is not run here
                torch.manual_seed(0)
                t0, c0 = time.perf_counter(), time.process_time()
                trainer.training_step(trainer.model, inputs)
                step_times[name] = time.perf_counter() - t0
                cpu_times[name] = time.process_time() - c0
                trainer.model.zero_grad(set_to_none=True)
            if step == 0:
                continue  # warm-up
            for name in times:
                times[name].append(step_times[name])
                cpu[name].append(cpu_times[name])
            w, c = step_times, cpu_times
            print(f"| {step} | {real} | {padded_tokens} | {w['padded']:.2f} ({c['padded']:.2f}) | "
                  f"{w['padding-free']:.2f} ({c['padding-free']:.2f}) | {w['padded'] / w['padding-free']:.2f}x "
                  f"({c['padded'] / c['padding-free']:.2f}x) |", flush=True)
    for label, t in (("wall", times), ("CPU", cpu)):
        med = {k: statistics.median(v) for k, v in t.items()}
        print(f"{a.method} {a.model} batch {a.batch}, {label}: median s/step padded {med['padded']:.2f}, padding-free "
              f"{med['padding-free']:.2f} ({med['padded'] / med['padding-free']:.2f}x); total "
              f"{sum(t['padded']):.1f} s vs {sum(t['padding-free']):.1f} s "
              f"({sum(t['padded']) / sum(t['padding-free']):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
