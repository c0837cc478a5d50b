"""PPO's math as small functions on padded (batch, time) tensors with a 0/1 `mask` of real tokens.

Each one is checked against a naive per-sequence loop in tests/test_ppo_math.py. Notation follows
Schulman et al. 2017 (PPO, arXiv 1707.06347) and 2016 (GAE, arXiv 1506.02438), and the RLHF
recipe of Ouyang et al. 2022 / TRL 1.11's PPOTrainer (whose metric names we keep).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over the real tokens; Bessel-corrected by default (as TRL 1.11's masked_var)."""
    centered = x - masked_mean(x, mask)
    var = masked_mean(centered**2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp(min=1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the real tokens of the whole batch. With `shift_mean=False` the mean is kept
    (used for rewards, whose sign carries meaning). Padding positions are set to 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_penalty_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
                       scores: torch.Tensor, kl_coef: float, estimator: str = "k1"):
    """Per-token rewards: -kl_coef * KL_t on every real token, plus the sequence score on its last real token.

    KL_t estimates KL(policy || reference) from the sampled token: k1 = log p - log p_ref (unbiased, can be
    negative per token); k3 = (r - 1) - log r with r = p_ref / p (unbiased, never negative; Schulman 2020,
    "Approximating KL divergence"). Returns (rewards, kl), both (batch, time), zero on padding.
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        kl = -log_ratio
    elif estimator == "k3":
        kl = torch.expm1(log_ratio) - log_ratio
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected k1 or k3")
    kl = kl * mask
    rewards = -kl_coef * kl
    last = (mask.sum(1).long() - 1).clamp(min=0)  # real tokens are a prefix: the last one ends the episode
    rewards[torch.arange(len(scores), device=scores.device), last] += scores.to(rewards.dtype)
    return rewards, kl


def gae_advantages(values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation, one reverse pass over time:
    delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lam * A_{t+1},   returns_t = A_t + V_t,
    with V and r zero past the last real token (the episode ends there). Returns (advantages, returns)."""
    values, rewards = values * mask, rewards * mask
    steps = rewards.shape[1]
    last_gae = torch.zeros_like(rewards[:, 0])
    reversed_adv = []
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] if t + 1 < steps else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        reversed_adv.append(last_gae)
    advantages = torch.stack(reversed_adv[::-1], dim=1) * mask
    return advantages, (advantages + values) * mask


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, cliprange: float):
    """PPO's clipped surrogate: mean over real tokens of max(-A * r, -A * clip(r, 1 - eps, 1 + eps)), r = p / p_old.
    Returns (loss, clipfrac, approxkl, ratio): clipfrac is the share of tokens where the clipped term won,
    approxkl = 0.5 * mean((log r)^2)."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approxkl = 0.5 * masked_mean(log_ratio**2, mask)
    return loss, clipfrac, approxkl, ratio


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       cliprange_value: float):
    """0.5 * mean over real tokens of max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, +-eps_v).
    Returns (loss, clipfrac)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(returns - values) / Var(returns) over real tokens: 1 = the critic predicts the returns, 0 = no better
    than their mean, < 0 = worse."""
    return 1.0 - masked_var(returns - values, mask) / masked_var(returns, mask).clamp(min=1e-8)
