"""PPO's math (utils/ppo/math.py) equals a naive per-sequence, per-token loop on random inputs, and the
clipping in both losses engages exactly when the ratio (or value change) leaves its band."""

from __future__ import annotations

import math

import pytest
import torch

from utils.ppo.math import (clipped_policy_loss, clipped_value_loss, explained_variance, gae_advantages,
                            kl_penalty_rewards, whiten)

B, T = 5, 9


@pytest.fixture
def batch():
    """Random tensors and a prefix mask of random lengths (1..T real tokens per row), as PPO rollouts have."""
    g = torch.Generator().manual_seed(0)
    lengths = [1, T, 4, 7, 2]
    mask = torch.tensor([[1.0] * n + [0.0] * (T - n) for n in lengths])
    r = lambda: torch.randn(B, T, generator=g, dtype=torch.float64)  # noqa: E731
    return dict(mask=mask.double(), lengths=lengths, a=r(), b=r(), c=r(), d=r(),
                scores=torch.randn(B, generator=g, dtype=torch.float64))


def _real(x, lengths):
    """The real-token values as one flat Python list (the naive loops' view of a batch)."""
    return [float(x[i, t]) for i, n in enumerate(lengths) for t in range(n)]


def _mean(xs):
    return sum(xs) / len(xs)


def _var(xs, unbiased=True):
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - (1 if unbiased else 0))


def test_whiten_matches_loop(batch):
    x, mask, lengths = batch["a"], batch["mask"], batch["lengths"]
    vals = _real(x, lengths)
    mean, std = _mean(vals), math.sqrt(_var(vals) + 1e-8)
    out = whiten(x, mask)
    for i, n in enumerate(lengths):
        for t in range(T):
            expected = (float(x[i, t]) - mean) / std if t < n else 0.0
            assert out[i, t].item() == pytest.approx(expected, abs=1e-9)
    kept = whiten(x, mask, shift_mean=False)  # rewards keep their mean
    assert _mean(_real(kept, lengths)) == pytest.approx(mean, abs=1e-9)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_penalty_rewards_match_loop(batch, estimator):
    logp, ref, mask, scores, lengths = batch["a"], batch["b"], batch["mask"], batch["scores"], batch["lengths"]
    rewards, kl = kl_penalty_rewards(logp, ref, mask, scores, kl_coef=0.3, estimator=estimator)
    for i, n in enumerate(lengths):
        for t in range(T):
            log_r = float(ref[i, t]) - float(logp[i, t])
            k = -log_r if estimator == "k1" else (math.exp(log_r) - 1) - log_r
            exp_kl = k if t < n else 0.0
            exp_reward = -0.3 * exp_kl + (float(scores[i]) if t == n - 1 else 0.0)
            assert kl[i, t].item() == pytest.approx(exp_kl, abs=1e-9)
            assert rewards[i, t].item() == pytest.approx(exp_reward, abs=1e-9)
    if estimator == "k3":
        assert (kl >= 0).all()


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0)])
def test_gae_matches_loop(batch, gamma, lam):
    values, rewards, mask, lengths = batch["a"], batch["b"], batch["mask"], batch["lengths"]
    adv, returns = gae_advantages(values, rewards, mask, gamma, lam)
    for i, n in enumerate(lengths):
        v = [float(values[i, t]) for t in range(n)] + [0.0]  # the episode ends after the last real token
        deltas = [float(rewards[i, t]) + gamma * v[t + 1] - v[t] for t in range(n)]
        for t in range(T):
            # the textbook sum: A_t = sum_l (gamma * lam)^l * delta_{t+l}
            expected = sum((gamma * lam) ** l * deltas[t + l] for l in range(n - t)) if t < n else 0.0
            assert adv[i, t].item() == pytest.approx(expected, abs=1e-9)
            assert returns[i, t].item() == pytest.approx(expected + v[t] if t < n else 0.0, abs=1e-9)
    if gamma == 1.0 and lam == 1.0:  # Monte-Carlo: returns are the sums of future rewards
        for i, n in enumerate(lengths):
            assert returns[i, 0].item() == pytest.approx(sum(float(rewards[i, t]) for t in range(n)), abs=1e-9)


def test_clipped_policy_loss_matches_loop(batch):
    new, old, adv, mask, lengths = 0.3 * batch["a"], 0.3 * batch["b"], batch["c"], batch["mask"], batch["lengths"]
    eps = 0.2
    loss, clipfrac, approxkl, ratio = clipped_policy_loss(new, old, adv, mask, eps)
    losses, clipped, sq = [], [], []
    for i, n in enumerate(lengths):
        for t in range(n):
            r = math.exp(float(new[i, t]) - float(old[i, t]))
            a = float(adv[i, t])
            l1, l2 = -a * r, -a * min(max(r, 1 - eps), 1 + eps)
            losses.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
            sq.append((float(new[i, t]) - float(old[i, t])) ** 2)
    assert loss.item() == pytest.approx(_mean(losses), abs=1e-9)
    assert clipfrac.item() == pytest.approx(_mean(clipped), abs=1e-9)
    assert approxkl.item() == pytest.approx(0.5 * _mean(sq), abs=1e-9)
    assert 0 < clipfrac.item() < 1  # the random inputs exercise both branches


def test_clipped_value_loss_matches_loop(batch):
    new, old, ret, mask, lengths = batch["a"], batch["b"], batch["c"], batch["mask"], batch["lengths"]
    eps = 0.5
    loss, clipfrac = clipped_value_loss(new, old, ret, mask, eps)
    losses, clipped = [], []
    for i, n in enumerate(lengths):
        for t in range(n):
            v, vo, r = float(new[i, t]), float(old[i, t]), float(ret[i, t])
            vc = vo + min(max(v - vo, -eps), eps)
            l1, l2 = (v - r) ** 2, (vc - r) ** 2
            losses.append(max(l1, l2))
            clipped.append(1.0 if l2 > l1 else 0.0)
    assert loss.item() == pytest.approx(0.5 * _mean(losses), abs=1e-9)
    assert clipfrac.item() == pytest.approx(_mean(clipped), abs=1e-9)
    assert 0 < clipfrac.item() < 1


def test_explained_variance_matches_loop(batch):
    values, returns, mask, lengths = batch["a"], batch["b"], batch["mask"], batch["lengths"]
    diff = [r - v for r, v in zip(_real(returns, lengths), _real(values, lengths))]
    expected = 1 - _var(diff) / _var(_real(returns, lengths))
    assert explained_variance(values, returns, mask).item() == pytest.approx(expected, abs=1e-9)
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)  # a perfect critic


@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_policy_clipping_engages_outside_the_band(advantage):
    """Inside [1-eps, 1+eps] the gradient is the unclipped -A * dr; once the ratio has moved past the band in the
    direction the advantage rewards, the clipped term wins: clipfrac 1 and no gradient (no further push)."""
    eps, mask, old = 0.2, torch.ones(1, 3), torch.zeros(1, 3)
    adv = torch.full((1, 3), advantage)
    inside = torch.log(torch.tensor([[0.9, 1.0, 1.1]])).requires_grad_(True)
    loss, clipfrac, _, _ = clipped_policy_loss(inside, old, adv, mask, eps)
    loss.backward()
    assert clipfrac.item() == 0.0
    assert torch.allclose(inside.grad, -advantage * torch.tensor([[0.9, 1.0, 1.1]]) / 3)

    past = 1.5 if advantage > 0 else 0.5  # moved too far in the advantage's direction
    outside = torch.log(torch.full((1, 3), past)).requires_grad_(True)
    loss, clipfrac, _, _ = clipped_policy_loss(outside, old, adv, mask, eps)
    loss.backward()
    assert clipfrac.item() == 1.0
    assert torch.all(outside.grad == 0)
    assert loss.item() == pytest.approx(-advantage * (1 + eps if advantage > 0 else 1 - eps))


def test_value_clipping_engages_outside_the_band():
    mask, old, ret = torch.ones(1, 2), torch.zeros(1, 2), torch.full((1, 2), 1.0)
    within = torch.tensor([[0.1, 0.15]], requires_grad=True)
    loss, clipfrac = clipped_value_loss(within, old, ret, mask, 0.2)
    assert clipfrac.item() == 0.0
    # moved towards the return by more than the band in one rollout: the clipped, larger error is used and gives
    # no gradient, so the critic moves at most cliprange_value per rollout
    beyond = torch.tensor([[0.9, 1.0]], requires_grad=True)
    loss, clipfrac = clipped_value_loss(beyond, old, ret, mask, 0.2)
    loss.backward()
    assert clipfrac.item() == 1.0 and torch.all(beyond.grad == 0)
    assert loss.item() == pytest.approx(0.5 * (0.2 - 1.0) ** 2)
