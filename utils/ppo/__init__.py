"""PPO: the math, the policy/critic/reference models, the rollout, the trainer."""
