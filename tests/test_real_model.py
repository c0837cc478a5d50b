"""Every method on a real pretrained model, SmolLM2-135M-Instruct (utils/toy/smollm2.py: from a PyPI wheel, no hub):
a vocabulary of 49152, tied embeddings, pad = eos, a ChatML template with a default system prompt and no
`{% generation %}` markers. A few LoRA steps each at short lengths (plus one full and one QLoRA run, rejection
sampling, evaluate and merge), each asserting what can fail: finite losses; the output reloads; the model still
answers held-out factual prompts right (the few small steps did not break it); after SFT its answers end with the
end-of-turn token and the training labels keep that token (pad = eos must not hide it); the reward model ranks its
training pairs. About 4 minutes on 2 cores (marker `real`)."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from conftest import log_history, run_cli, run_main, write_jsonl
from utils.toy.smollm2 import hf_dir

pytestmark = pytest.mark.real

# Held out: no training file below mentions them; the untrained model answers each right (greedy).
from utils.toy.demo_real import FACTS  # noqa: E402
SHORT = ["--per_device_train_batch_size", "2", "--save_strategy", "no", "--seed", "0", "--disable_tqdm", "true",
         "--learning_rate", "1e-4"]
LENGTH = ["--max_length", "96"]  # offline methods; online ones bound --max_completion_length / --max_new_tokens


def _arith(n: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        a, b = rng.randint(2, 30), rng.randint(2, 30)
        yield f"What is {a} plus {b}?", a + b


@pytest.fixture(scope="module")
def smol():
    return hf_dir()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("real_data")
    user = (lambda q: [{"role": "user", "content": q}])
    bot = (lambda a: [{"role": "assistant", "content": a}])
    # Small files (8 rows; the reward model's 24): a forward pass of this model costs ~1 s per batch on 2 cores.
    pairs = [(q, f"The answer is {s}.", f"no idea, maybe {s + 3}") for q, s in _arith(24, 0)]
    write_jsonl(d / "pref.jsonl", [{"prompt": user(q), "chosen": bot(c), "rejected": bot(r)} for q, c, r in pairs[:8]])
    write_jsonl(d / "reward.jsonl", [{"chosen": user(q) + bot(c), "rejected": user(q) + bot(r)} for q, c, r in pairs])
    write_jsonl(d / "kto.jsonl", [{"prompt": user(q), "completion": bot(a), "label": good}
                                  for q, c, r in pairs[:4] for a, good in ((c, True), (r, False))])
    convo = [user(q1) + bot(f"The answer is {s1}.") + user(q2) + bot(f"The answer is {s2}.")
             for (q1, s1), (q2, s2) in zip(_arith(8, 1), _arith(8, 2))]
    write_jsonl(d / "messages.jsonl", [{"messages": m} for m in convo])
    write_jsonl(d / "prompts.jsonl", [{"prompt": user(q), "answer": str(s)} for q, s in _arith(8, 3)])
    (d / "rewards.py").write_text(
        "def has_answer(prompts, completions, answer, **kwargs):\n"
        "    text = lambda c: c if isinstance(c, str) else c[-1]['content']\n"
        "    return [float(a in text(c)) for c, a in zip(completions, answer)]\n")
    return d


def _answers(model, tok, questions, max_new_tokens=24) -> list[str]:
    tok.padding_side = "left"
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in questions]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return [tok.decode(o[enc["input_ids"].shape[1]:]) for o in out]


def _still_knows(out, adapter: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if adapter:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(out)
    else:
        model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    answers = _answers(model.eval(), tok, [q for q, _ in FACTS])
    wrong = [(q, a) for (q, key), a in zip(FACTS, answers) if key not in a]
    assert not wrong, f"the trained model no longer answers: {wrong}"
    return answers


def _finite_losses(out, key="loss"):
    values = [h[key] for h in log_history(out) if key in h]
    assert values and all(math.isfinite(v) for v in values), values
    return values


METHODS = {  # rlhf_type: (data file, extra flags)
    "DPO": ("pref.jsonl", LENGTH), "CPO": ("pref.jsonl", LENGTH), "SimPO": ("pref.jsonl", LENGTH),
    "ORPO": ("pref.jsonl", LENGTH), "KTO": ("kto.jsonl", LENGTH + ["--per_device_train_batch_size", "4"]),
    "GKD": ("messages.jsonl", LENGTH + ["--lmbda", "0.5", "--max_new_tokens", "8"]),
    "RLOO": ("prompts.jsonl", ["--num_generations", "2", "--max_completion_length", "8"]),
    "GRPO": ("prompts.jsonl", ["--num_generations", "2", "--max_completion_length", "8"]),
    "PPO": ("prompts.jsonl", ["--max_new_tokens", "8", "--num_ppo_epochs", "2"]),
}


@pytest.mark.parametrize("rlhf_type", list(METHODS))
def test_method_on_real_model(rlhf_type, smol, data, tmp_path):
    file, extra = METHODS[rlhf_type]
    out = tmp_path / "out"
    if rlhf_type == "GKD":
        extra = extra + ["--teacher_model_name_or_path", smol]
    if rlhf_type in ("RLOO", "GRPO", "PPO"):
        extra = extra + ["--reward_funcs", f"{data / 'rewards.py'}:has_answer"]
    assert run_main("--rlhf_type", rlhf_type, "--train_mode", "lora", "--model_name_or_path", smol,
                    "--train_data_path", data / file, "--output_dir", out, "--max_steps", "2", *SHORT, *extra) == 0
    _finite_losses(out, "loss" if rlhf_type != "PPO" else "loss/policy_avg")
    _still_knows(out, adapter=True)


def test_sft_messages_full_keeps_end_of_turn(smol, data, tmp_path):
    """Full fine-tuning on 2-turn conversations through our masks (SmolLM2's template has no markers): every label
    row ends on <|im_end|> (pad = eos, yet the end-of-turn token stays in the loss), and afterwards the answers end
    with it."""
    import main_train

    out = tmp_path / "sft"
    argv = ["--rlhf_type", "SFT", "--train_mode", "full", "--model_name_or_path", str(smol), "--train_data_path",
            str(data / "messages.jsonl"), "--output_dir", str(out), "--max_steps", "3", *SHORT, *LENGTH]
    method, common, config, tokenizer, train, evals, needs = main_train.check_phase(argv)
    trainer = main_train.build_trainer(method, common, config, tokenizer, train, evals, [], needs)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.pad_token_id == end
    rows = [json.loads(line)["messages"] for line in (data / "messages.jsonl").read_text().splitlines()]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for messages, labels in zip(rows, batch["labels"]):
        kept = labels[labels != -100]
        # Exactly the two answers, each with its <|im_end|> and the template's newline: system, user turns and the
        # assistant headers are masked, and the end-of-turn token is kept although it is also the pad token.
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        assert tokenizer.decode(kept) == "".join(f"{a}<|im_end|>\n" for a in answers)
        assert (kept == end).sum() == 2
    del trainer
    assert run_main(*argv) == 0
    _finite_losses(out)
    answers = _still_knows(out, adapter=False)
    assert all(a.rstrip().endswith("<|im_end|>") or "<|im_end|>" in a for a in answers), answers


def test_reward_model_ranks_its_pairs(smol, data, tmp_path):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    out = tmp_path / "rm"
    assert run_main("--rlhf_type", "Reward", "--train_mode", "lora", "--model_name_or_path", smol, "--train_data_path",
                    data / "reward.jsonl", "--output_dir", out, "--max_steps", "8", *SHORT, *LENGTH,
                    "--per_device_train_batch_size", "4", "--learning_rate", "2e-3") == 0
    _finite_losses(out)
    model = AutoPeftModelForSequenceClassification.from_pretrained(out, num_labels=1).eval()
    tok = AutoTokenizer.from_pretrained(out)
    rows = [json.loads(line) for line in (data / "reward.jsonl").read_text().splitlines()]

    def score(messages):
        ids = tok.apply_chat_template(messages, tokenize=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            return model(**ids).logits[0, 0].item()

    right = sum(score(r["chosen"]) > score(r["rejected"]) for r in rows)
    assert right >= 0.9 * len(rows), f"{right}/{len(rows)} pairs ranked right"


def test_qlora_dpo(smol, data, tmp_path):
    out = tmp_path / "qlora"
    assert run_main("--rlhf_type", "DPO", "--train_mode", "qlora", "--model_name_or_path", smol, "--train_data_path",
                    data / "pref.jsonl", "--output_dir", out, "--max_steps", "2", *SHORT, *LENGTH) == 0
    _finite_losses(out)
    _still_knows(out, adapter=True)


def _command(name: str, *argv) -> int:
    """`python -m utils.NAME ARGV` in this process (the command line is covered by the tiny-model tests)."""
    import importlib

    return importlib.import_module(f"utils.{name}").main([str(a) for a in argv])


def test_sample_evaluate_merge(smol, data, tmp_path):
    """SFT LoRA from the command line, then rejection sampling and evaluate from its adapter, and the merged model
    equals the adapter."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    sft = tmp_path / "sft"
    run_cli("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", smol, "--train_data_path",
            data / "messages.jsonl", "--output_dir", sft, "--max_steps", "2", *SHORT, *LENGTH)
    rewards = f"{data / 'rewards.py'}:has_answer"
    rs = tmp_path / "rs"
    assert _command("rejection_sampling", "--model_name_or_path", sft, "--train_data_path", data / "prompts.jsonl",
                    "--reward_funcs", rewards, "--num_samples", "2", "--max_new_tokens", "12", "--max_prompts", "4",
                    "--output_dir", rs) == 0
    best = [json.loads(line) for line in (rs / "best.jsonl").read_text().splitlines()]
    assert len(best) == 4 and all(r["completion"] for r in best)
    ev = tmp_path / "eval"
    assert _command("evaluate", "--model_name_or_path", sft, "--eval_data_path", data / "prompts.jsonl",
                    "--reward_funcs", rewards, "--num_samples", "2", "--max_new_tokens", "12", "--bootstrap", "200",
                    "--output_dir", ev) == 0
    report = json.loads((ev / "eval.json").read_text())["results"]
    assert 0.0 <= report["win_rate"]["mean"] <= 1.0 and math.isfinite(report["kl_per_token"]["mean"])
    assert report["prompts"] == 8
    merged = tmp_path / "merged"
    assert _command("merge", "--model_name_or_path", sft, "--output_dir", merged) == 0
    ids = torch.tensor([[1, 504, 2143, 30, 12, 9]])
    with torch.no_grad():
        a = AutoPeftModelForCausalLM.from_pretrained(sft).eval()(input_ids=ids).logits
        b = AutoModelForCausalLM.from_pretrained(merged).eval()(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    _still_knows(merged, adapter=False)
