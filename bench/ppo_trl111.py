"""TRL 1.11's experimental PPOTrainer on the same job as `main_train.py --rlhf_type PPO` (run it with the
venv from bench/setup_trl111.sh; bench/run_bench.py does). Same policy, reward model and critic
initialisation (the reward model, as our PPO's default), same rollout (per_device_train_batch_size
prompts, one completion each, `response_length` tokens), same PPO loop (num_ppo_epochs x
num_mini_batches optimizer steps per rollout) and the same loss settings, which both default to.

    bench/.venv-trl111/bin/python bench/ppo_trl111.py --model M --reward_model RM --data prompts.jsonl \
        --updates 4 --output_dir OUT [--response_length 128 --gradient_checkpointing false]

TRL 1.11 never stops a sample early when `stop_token` is None (its default), so every completion is
`response_length` tokens long; our PPO stops at EOS, which a random tiny model samples about once in
1000 tokens, so the token counts match to within a few per cent (both are logged).
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser()
    for name, default in [("model", None), ("reward_model", None), ("data", None), ("output_dir", None),
                          ("updates", 4), ("response_length", 128), ("batch", 4), ("num_ppo_epochs", 4),
                          ("num_mini_batches", 1), ("learning_rate", 1e-5), ("seed", 0),
                          ("gradient_checkpointing", "false")]:
        p.add_argument(f"--{name}", default=default, type=type(default) if default is not None else str)
    a = p.parse_args()
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tok = AutoTokenizer.from_pretrained(a.model, padding_side="left")
    data = load_dataset("json", data_files=a.data, split="train")
    data = data.map(lambda r: {"input_ids": tok(r["prompt"])["input_ids"]}, remove_columns=data.column_names)
    config = PPOConfig(
        output_dir=a.output_dir, per_device_train_batch_size=a.batch, num_ppo_epochs=a.num_ppo_epochs,
        num_mini_batches=a.num_mini_batches, total_episodes=a.updates * a.batch, response_length=a.response_length,
        learning_rate=a.learning_rate, seed=a.seed, bf16=False, report_to="none", save_strategy="no",
        num_sample_generations=0, logging_steps=1, disable_tqdm=True,
        gradient_checkpointing=a.gradient_checkpointing == "true")
    trainer = PPOTrainer(
        args=config, processing_class=tok, model=AutoModelForCausalLM.from_pretrained(a.model),
        ref_model=AutoModelForCausalLM.from_pretrained(a.model),
        reward_model=AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1),
        value_model=AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1),
        train_dataset=data)
    trainer.train()


if __name__ == "__main__":
    main()
