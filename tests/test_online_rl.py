"""Online RL from the command line: RLOO, GRPO (TRL's trainers) and PPO (ours) train on a tiny model with a
reward model whose tokenizer differs from the policy's plus a Python reward function; the reward model
scores the decoded text exactly as scoring that text directly does; rule rewards are learned; PPO holds
one copy of the weights under LoRA and resumes exactly; reward-function mistakes exit with code 2."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import log_history, run_cli, run_main, write_jsonl
from utils.model.dtype import bf16_supported

# Every reward function also checks that the `answer` column reaches it aligned with its prompt.
REWARDS = '''
import re

def _text(c):
    return c if isinstance(c, str) else "".join(m["content"] for m in c)

def _check(prompts, answer):
    for p, a in zip(prompts, answer):
        x, y = map(int, re.findall(r"\\d+", _text(p)))
        assert str(x + y) == a, f"answer column out of step with the prompts: {a!r} for {_text(p)!r}"

def a_to_m(prompts, completions, answer, **kwargs):
    """Share of the completion's non-space characters in a..m: dense, so a tiny random model learns it fast."""
    _check(prompts, answer)
    out = []
    for c in completions:
        chars = [ch for ch in _text(c) if not ch.isspace()]
        out.append(sum("a" <= ch <= "m" for ch in chars) / len(chars) if chars else 0.0)
    return out

def broken(prompts, completions, **kwargs):
    raise RuntimeError("boom")

def too_few(prompts, completions, **kwargs):
    return [0.0]
'''
PPO_NAMES = ["objective/kl", "objective/entropy", "objective/rlhf_reward", "objective/scores", "policy/clipfrac_avg",
             "val/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/ratio", "policy/approxkl_avg", "eps",
             "completions/mean_length", "completions/clipped_ratio", "val/explained_variance", "policy/entropy_avg"]
TRL_NAMES = ["kl", "entropy", "reward", "reward_std", "completions/mean_length", "completions/clipped_ratio",
             "clip_ratio/region_mean"]
COMMON = ["--save_strategy", "no", "--gradient_checkpointing", "false", "--seed", "0", "--disable_tqdm", "true"]
FLAGS = {"rloo": ["--num_generations", "4", "--max_completion_length", "8", "--per_device_train_batch_size", "8"],
         "grpo": ["--num_generations", "4", "--max_completion_length", "8", "--per_device_train_batch_size", "8",
                  "--beta", "0.04"],  # GRPO's default beta 0 loads no reference; exercise it
         "ppo": ["--max_new_tokens", "8", "--per_device_train_batch_size", "4", "--num_ppo_epochs", "2"]}


# ------------------------------------------------------------------------------------ fixtures
def _reward_model(path: Path, vocab_size: int, seed: int) -> Path:
    """A tiny sequence-classification reward model (fixed random score head) saved with its own tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from utils.toy.tiny_model import make_tiny

    make_tiny(str(path), hidden_size=32, vocab_size=vocab_size, seed=seed)
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def rl(tmp_path_factory):
    d = tmp_path_factory.mktemp("online_rl")
    rng = random.Random(0)
    rows = []
    for _ in range(64):
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        rows.append({"prompt": [{"role": "user", "content": f"What is {a}+{b}?"}], "answer": str(a + b)})
    write_jsonl(d / "prompts.jsonl", rows)
    (d / "rewards.py").write_text(REWARDS)
    return {"data": d / "prompts.jsonl", "rewards": d / "rewards.py",
            "rm_other": _reward_model(d / "rm_other", vocab_size=400, seed=3),  # a different tokenizer
            "rm_same": _reward_model(d / "rm_same", vocab_size=512, seed=0)}  # the policy's tokenizer


def _args(rlhf_type, mode, tiny_dir, rl, out, *extra):
    return ["--rlhf_type", rlhf_type, "--train_mode", mode, "--model_name_or_path", tiny_dir,
            "--train_data_path", rl["data"], "--output_dir", out, *COMMON, *FLAGS[rlhf_type.lower()], *extra]


def _direct_scores(rm_path, prompts, completions, dtype=torch.float32) -> list[float]:
    """The reference: the reward model's own chat template and tokenizer on the text, one unpadded row at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(rm_path)
    model = AutoModelForSequenceClassification.from_pretrained(rm_path, dtype=dtype).eval()
    out = []
    for p, c in zip(prompts, completions):
        # plain strings: as TRL's RewardTrainer trains on them, with EOS appended
        text = tok.apply_chat_template(p + c, tokenize=False) if isinstance(p, list) else p + c + tok.eos_token
        with torch.no_grad():
            out.append(model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item())
    return out


# --------------------------------------------------------------------------- every method runs
CASES = [("RLOO", "full"), ("RLOO", "lora"), ("RLOO", "qlora"), ("GRPO", "full"), ("GRPO", "lora"),
         ("PPO", "full"), ("PPO", "lora")]


@pytest.mark.parametrize("rlhf_type,mode", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_online_method_trains_with_reward_model_and_function(rlhf_type, mode, tiny_dir, rl, tmp_path):
    out = tmp_path / "out"
    extra = ["--eval_split", "0.125"] if (rlhf_type, mode) == ("PPO", "lora") else []
    assert run_main(*_args(rlhf_type, mode, tiny_dir, rl, out, "--max_steps", "2", "--learning_rate", "1e-3",
                           "--reward_model_path", rl["rm_other"], "--reward_funcs", f"{rl['rewards']}:a_to_m",
                           "--reward_weights", "0.5", "1.0", *extra)) == 0
    history = log_history(out)
    train = [h for h in history if "loss" in h]
    assert len(train) == 2 and all(math.isfinite(h["loss"]) for h in train)
    for name in ["rewards/rm_other/mean", "rewards/rm_other/std", "rewards/a_to_m/mean", "rewards/a_to_m/std",
                 *(PPO_NAMES if rlhf_type == "PPO" else TRL_NAMES)]:
        assert math.isfinite(train[0][name]), name
    if extra:
        assert any("eval_objective/scores" in h for h in history)

    # A sample of completions, whose reward-model scores equal scoring their decoded text directly with the
    # reward model's own tokenizer (the policy's tokens would mean nothing to it).
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert rows and {"step", "prompt", "completion", "rewards"} <= rows[0].keys()
    sample = rows[:4]
    # The run scores with the reward model frozen in the compute dtype (bfloat16 where the CPU has it): so does the
    # reference, one unpadded row at a time, whose other matmul shapes round differently (a few bf16 steps of 0.04).
    bf16 = bf16_supported()
    direct = _direct_scores(rl["rm_other"], [r["prompt"] for r in sample], [r["completion"] for r in sample],
                            torch.bfloat16 if bf16 else torch.float32)
    assert [r["rewards"]["rm_other"] for r in sample] == pytest.approx(direct, abs=2e-3 if bf16 else 1e-4)

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    if mode == "full":
        before, after = load_file(tiny_dir / "model.safetensors"), load_file(out / "model.safetensors")
        assert any(not torch.equal(before[k], after[k]) for k in before), "no weight changed"
        model = AutoModelForCausalLM.from_pretrained(out)
    else:
        lora_b = [v for k, v in load_file(out / "adapter_model.safetensors").items() if "lora_B" in k]
        assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B matrices are still zero"
        model = AutoPeftModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 5, 9, 2]])).logits).all()


def test_reward_model_with_other_tokenizer_scores_the_text(tiny_dir, rl, tmp_path):
    """The reward model scores, called by our PPO and by TRL's RLOO / GRPO as wired by main_train, are the scores
    of the decoded text fed directly to the reward model, although the tokenizers differ; plain strings are
    scored as the RewardTrainer trained on them (EOS appended)."""
    import main_train
    from utils.model.loading import load_tokenizer
    from utils.model.rewards import RewardModelScorer

    prompts = [[{"role": "user", "content": "What is 2+3?"}], [{"role": "user", "content": "Say hello"}],
               [{"role": "user", "content": "What is 10+7?"}]]
    completions = [[{"role": "assistant", "content": "5"}], [{"role": "assistant", "content": "hello there, friend"}],
                   [{"role": "assistant", "content": "the sum is 17, sure"}]]
    direct = _direct_scores(rl["rm_other"], prompts, completions)
    policy_tok, rm_tok = load_tokenizer(str(tiny_dir)), load_tokenizer(str(rl["rm_other"]))
    text = "the sum is 17, sure"
    assert policy_tok(text)["input_ids"] != rm_tok(text)["input_ids"]  # the test means something

    assert RewardModelScorer(str(rl["rm_other"]))(prompts, completions) == pytest.approx(direct, abs=1e-5)

    method, common, config = main_train.parse_args(
        [str(a) for a in _args("RLOO", "lora", tiny_dir, rl, tmp_path / "o", "--reward_model_path", rl["rm_other"],
                               "--bf16", "false")])  # fp32: the scores compared to 1e-5
    train, _ = main_train.load_data(method, common, policy_tok)
    trainer = main_train.build_trainer(method, common, config, policy_tok, train, None, [])
    rows = [{"prompt": p, "answer": "0"} for p in prompts]
    ids = [policy_tok(c[0]["content"])["input_ids"] for c in completions]
    scores = trainer._calculate_rewards(rows, prompts, completions, ids)[:, 0].tolist()
    assert scores == pytest.approx(direct, abs=1e-5)

    plain_prompts, plain = ["What is 2+3? ", "Say hello "], ["5", "hello there, friend"]
    direct_plain = _direct_scores(rl["rm_other"], plain_prompts, plain)
    rows = [{"prompt": p, "answer": "0"} for p in plain_prompts]
    ids = [policy_tok(c)["input_ids"] for c in plain]
    assert trainer._calculate_rewards(rows, plain_prompts, plain, ids)[:, 0].tolist() == \
        pytest.approx(direct_plain, abs=1e-5)
    without_eos = [RewardModelScorer(str(rl["rm_other"])).score_texts([p + c])[0] for p, c in zip(plain_prompts, plain)]
    assert without_eos != pytest.approx(direct_plain, abs=1e-3)  # the EOS matters: the test can tell


# ---------------------------------------------------------------------------------- learning
def _first_last(out, key, n=3):
    values = [h[key] for h in log_history(out) if key in h]
    return sum(values[:n]) / n, sum(values[-n:]) / n, values


@pytest.mark.parametrize("rlhf_type,key,flags", [
    ("PPO", "objective/scores", ["--max_steps", "40", "--per_device_train_batch_size", "16", "--learning_rate", "1e-2",
                                 "--kl_coef", "0.01", "--temperature", "1.0"]),
    ("RLOO", "reward", ["--max_steps", "30", "--per_device_train_batch_size", "16", "--learning_rate", "1e-2",
                        "--beta", "0.01", "--normalize_advantages", "true"]),
    ("GRPO", "reward", ["--max_steps", "30", "--per_device_train_batch_size", "16", "--learning_rate", "1e-2"]),
], ids=["PPO", "RLOO", "GRPO"])
def test_rule_reward_is_learned(rlhf_type, key, flags, tiny_dir, rl, tmp_path):
    out = tmp_path / "learn"
    assert run_main(*_args(rlhf_type, "full", tiny_dir, rl, out, "--reward_funcs", f"{rl['rewards']}:a_to_m",
                           *flags)) == 0
    first, last, curve = _first_last(out, key)
    print(f"{rlhf_type} {key}: first {first:.3f} last {last:.3f}", [round(v, 2) for v in curve])
    assert last > first + 0.2


# --------------------------------------------------------------------------------- PPO memory
def _ppo_trainer(tiny_dir, rl, tmp_path, mode, *extra):
    import main_train
    from utils.model.loading import load_tokenizer

    argv = _args("PPO", mode, tiny_dir, rl, tmp_path / "mem", "--reward_funcs", f"{rl['rewards']}:a_to_m", *extra)
    method, common, config = main_train.parse_args([str(a) for a in argv])
    tok = load_tokenizer(str(tiny_dir))
    train, _ = main_train.load_data(method, common, tok)
    return main_train.build_trainer(method, common, config, tok, train, None, [])


def _frozen(module) -> set[int]:
    return {p.data_ptr() for p in module.parameters() if not p.requires_grad}


def test_ppo_lora_holds_one_copy_of_the_weights(tiny_dir, rl, tmp_path):
    trainer = _ppo_trainer(tiny_dir, rl, tmp_path, "lora")
    policy, critic = trainer.model.policy, trainer.model.critic
    assert trainer.ref_model is None  # the reference is the adapter switched off
    assert _frozen(critic.backbone) and _frozen(critic.backbone) <= _frozen(policy)  # no copied weight
    assert {n for n, p in critic.named_parameters() if p.requires_grad} >= {"head.weight"}
    # With a reward model that shares the policy's tokenizer, the critic starts from it and shares its weights.
    trainer = _ppo_trainer(tiny_dir, rl, tmp_path, "lora", "--reward_model_path", rl["rm_same"])
    rm = trainer.reward_funcs[0].model
    assert _frozen(trainer.model.critic.backbone) <= _frozen(rm)
    assert torch.equal(trainer.model.critic.head.weight, rm.score.weight)  # its score head, trained from there
    # full: policy, frozen reference and critic are three separate copies
    trainer = _ppo_trainer(tiny_dir, rl, tmp_path, "full")
    ptrs = [{p.data_ptr() for p in m.parameters()} for m in (trainer.model.policy, trainer.ref_model,
                                                              trainer.model.critic)]
    assert not (ptrs[0] & ptrs[1]) and not (ptrs[0] & ptrs[2])


def test_ppo_resume_from_checkpoint_is_exact(tiny_dir, rl, tmp_path):
    """Stopped at step 2 (a rollout boundary) and resumed, PPO ends with the same policy and critic as a run
    that never stopped: policy, critic, optimizer, scheduler and RNG all come back."""
    argv = ["--reward_funcs", f"{rl['rewards']}:a_to_m", "--max_steps", "4", "--save_strategy", "steps",
            "--save_steps", "2", "--learning_rate", "1e-3"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run_main(*_args("PPO", "lora", tiny_dir, rl, whole, *argv)) == 0
    assert run_main(*_args("PPO", "lora", tiny_dir, rl, resumed, *argv,
                           "--resume_from_checkpoint", whole / "checkpoint-2")) == 0
    for name in ["adapter_model.safetensors", "critic/adapter_model.safetensors", "critic/value_head.safetensors"]:
        a, b = load_file(whole / name), load_file(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [h["loss"] for h in log_history(whole) if "loss" in h] == \
           [h["loss"] for h in log_history(resumed) if "loss" in h]


# ------------------------------------------------------------------------------------ errors
def test_reward_function_that_raises_exits_2(tiny_dir, rl, tmp_path):
    proc = run_cli(*_args("PPO", "lora", tiny_dir, rl, tmp_path / "o", "--max_steps", "1",
                          "--reward_funcs", f"{rl['rewards']}:broken"), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "rewards.py:broken' raised RuntimeError: boom" in proc.stderr


def test_reward_function_wrong_length_and_critic_tokenizer_exit_2(tiny_dir, rl, tmp_path, capsys):
    assert run_main(*_args("RLOO", "lora", tiny_dir, rl, tmp_path / "o", "--max_steps", "1",
                           "--reward_funcs", f"{rl['rewards']}:too_few")) == 2
    assert "too_few' returned 1 values for 8 completions" in capsys.readouterr().err
    assert run_main(*_args("PPO", "lora", tiny_dir, rl, tmp_path / "p", "--max_steps", "1",
                           "--reward_model_path", rl["rm_other"], "--value_model_path", rl["rm_other"])) == 2
    assert "does not use the policy's tokenizer" in capsys.readouterr().err
    assert run_main(*_args("PPO", "lora", tiny_dir, rl, tmp_path / "q", "--reward_model_path", rl["rm_other"],
                           "--reward_weights", "1", "2")) == 2
    assert "--reward_weights has 2 values for 1 reward sources" in capsys.readouterr().err
