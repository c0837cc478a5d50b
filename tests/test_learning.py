"""Learning, not just running: on a small synthetic preference set, DPO's reward margin and
accuracy rise on held-out pairs, and a reward model's held-out accuracy rises well above chance."""

from __future__ import annotations

from conftest import log_history, run_main, style_pairs, to_reward_rows, write_jsonl

STEPS = ["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--save_strategy", "no",
         "--max_length", "64", "--gradient_checkpointing", "false", "--seed", "0", "--disable_tqdm", "true",
         "--eval_strategy", "steps", "--eval_on_start", "true"]


def _evals(out, key):
    return [h[key] for h in log_history(out) if key in h]


def test_dpo_margin_and_accuracy_rise(tiny_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", style_pairs(128, seed=1))
    held = write_jsonl(tmp_path / "held.jsonl", style_pairs(32, seed=2))
    out = tmp_path / "dpo"
    assert run_main("--rlhf_type", "dpo", "--train_mode", "full", "--model_name_or_path", tiny_dir,
                    "--train_data_path", train, "--eval_data_path", held, "--output_dir", out,
                    "--learning_rate", "5e-4", "--max_steps", "30", "--eval_steps", "30", *STEPS) == 0
    margins, accs = _evals(out, "eval_rewards/margins"), _evals(out, "eval_rewards/accuracies")
    print("DPO held-out margin", margins, "accuracy", accs)
    assert abs(margins[0]) < 1e-3  # policy == reference before training
    assert margins[-1] > 0.5
    assert accs[-1] >= 0.9


def test_reward_model_accuracy_rises(tiny_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", to_reward_rows(style_pairs(128, seed=1)))
    held = write_jsonl(tmp_path / "held.jsonl", to_reward_rows(style_pairs(64, seed=2)))
    out = tmp_path / "rm"
    assert run_main("--rlhf_type", "reward", "--train_mode", "full", "--model_name_or_path", tiny_dir,
                    "--train_data_path", train, "--eval_data_path", held, "--output_dir", out,
                    "--learning_rate", "1e-3", "--max_steps", "30", "--eval_steps", "30", *STEPS) == 0
    accs = _evals(out, "eval_accuracy")
    print("RM held-out accuracy", accs)
    assert accs[-1] >= 0.9 and accs[-1] - accs[0] >= 0.3
