"""What TRL's trainers need from us: what RLOO/GRPO/PPO share, GKD glue, padding-free training."""
