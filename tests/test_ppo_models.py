"""PPO's models (utils/ppo/models.py): which model the critic starts from and whether it shares frozen weights,
decided once in the check phase; the policy's and the critic's gradients clipped apart."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch


REWARDS = "def length(completions, **kwargs):\n    return [float(len(str(c))) for c in completions]\n"


def _reward_model(path, vocab_size: int, seed: int) -> str:
    """A tiny sequence-classification model (the reward-model shape) saved with its own tokenizer."""
    from transformers import AutoModelForSequenceClassification

    from utils.toy.tiny_model import make_tiny

    make_tiny(str(path), hidden_size=32, vocab_size=vocab_size, seed=seed)
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def rms(tmp_path_factory):
    d = tmp_path_factory.mktemp("rms")
    return {"same": _reward_model(d / "same", 512, 0), "other": _reward_model(d / "other", 300, 3)}


def _plan(mode, tokenizer_dir, reward_dirs, value_model_path=None):
    from utils.model.loading import load_tokenizer
    from utils.ppo.models import check_critic
    from utils.model.rewards import check_reward_sources

    rewards = check_reward_sources([str(d) for d in reward_dirs], [], None)
    return check_critic(SimpleNamespace(train_mode=mode), SimpleNamespace(value_model_path=value_model_path,
                                                                          trust_remote_code=False),
                        load_tokenizer(str(tokenizer_dir)), rewards)


def test_critic_plan(tiny_dir, rms):
    from utils.core.errors import UserError

    same, other = rms["same"], rms["other"]
    # A reward model of the policy's tokenizer is the critic's start (its score head already values text) ...
    assert _plan("lora", tiny_dir, [other, same]) == _plan_of(same, True)
    # ... one of another tokenizer never is: the critic then starts from the policy, over the policy's weights.
    assert _plan("lora", tiny_dir, [other]) == _plan_of(None, True)
    # full fine-tuning: a trainable copy, nothing shared.
    assert _plan("full", tiny_dir, [same]) == _plan_of(same, False)
    assert _plan("full", tiny_dir, [other]) == _plan_of(None, False)
    # an explicit value model that is no reward model: loaded on its own, even in lora mode.
    assert _plan("lora", tiny_dir, [other], value_model_path=str(tiny_dir)) == _plan_of(str(tiny_dir), False)
    with pytest.raises(UserError, match="does not use the policy's tokenizer"):
        _plan("lora", tiny_dir, [same], value_model_path=other)


def _plan_of(path, share):
    from utils.ppo.models import CriticPlan

    return CriticPlan(path, share)


def _norm(params) -> float:
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params))


def test_policy_and_critic_gradients_clipped_apart(tiny_dir, data_dir, tmp_path):
    """A value-loss gradient 100x over max_grad_norm is clipped to it; the policy's own gradient, under the limit,
    is left as it is (one joint norm would have scaled it by 1/100)."""
    import main_train
    from utils.model.loading import load_tokenizer

    (tmp_path / "rewards.py").write_text(REWARDS)
    method, common, config = main_train.parse_args(
        [str(a) for a in ["--rlhf_type", "PPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
                          "--train_data_path", data_dir / "prompts.jsonl", "--output_dir", tmp_path / "o",
                          "--reward_funcs", f"{tmp_path / 'rewards.py'}:length", "--max_steps", "1",
                          "--max_new_tokens", "4", "--save_strategy", "no"]])
    tok = load_tokenizer(str(tiny_dir))
    train, _ = main_train.load_data(method, common, tok)
    trainer = main_train.build_trainer(method, common, config, tok, train, None, [])
    wrapper = trainer.model
    parts = {name: [p for p in part.parameters() if p.requires_grad]
             for name, part in (("policy", wrapper.policy), ("critic", wrapper.critic))}
    assert parts["policy"] and parts["critic"]
    for name, target in (("policy", 0.5), ("critic", 100.0)):
        for p in parts[name]:
            p.grad = torch.ones_like(p)
        scale = target / _norm(parts[name])
        for p in parts[name]:
            p.grad.mul_(scale)
    joint = float(trainer._clip_grad_norm(trainer.model))
    assert config.max_grad_norm == 1.0
    assert _norm(parts["policy"]) == pytest.approx(0.5, rel=1e-5)
    assert _norm(parts["critic"]) == pytest.approx(1.0, rel=1e-5)
    assert joint == pytest.approx(math.hypot(0.5, 100.0), rel=1e-5)
    assert trainer._metrics["policy/grad_norm"][-1] == pytest.approx(0.5, rel=1e-5)
    assert trainer._metrics["val/grad_norm"][-1] == pytest.approx(100.0, rel=1e-5)
