"""RLOO: TRL's RLOOTrainer (through `utils.trainers.online_rl.RLOOTrainer`, which only adds completions.jsonl).

For each prompt the policy samples `num_generations` completions; each completion's advantage is
its reward minus the mean reward of the *other* completions of the same prompt (the leave-one-out
baseline, Ahmadian et al. 2024, arXiv 2402.14740). `beta` weighs the KL to the reference, folded
into the reward as in the paper. The reference is a frozen copy of the start model in `full` mode
and the policy with its adapter switched off in `lora` / `qlora` mode (no second copy).

Rewards: --reward_model_path (each scored on the decoded text with its own tokenizer and chat
template) and/or --reward_funcs (module:function or file.py:function); --reward_weights gives one
weight per source, reward models first, then functions. Every other TRL RLOOConfig field is a flag.

Batch sizes: generation_batch_size (default per_device_train_batch_size x processes x
steps_per_generation) must be a multiple of num_generations; each optimizer step sees
per_device_train_batch_size completions per process.
"""

from dataclasses import dataclass

from trl import RLOOConfig

from rlhf_args.base import Method, OurDefaults
from utils.cli.option_checks import (at_least_one, check_online_reference, generation_batch, in_range, integer,
                                     no_sync_without_reference)


@dataclass
class RLOOArgs(OurDefaults, RLOOConfig):
    # TRL's default (1e-6) suits full fine-tuning of billion-parameter models; LoRA usually wants ~1e-5.
    learning_rate: float = 1e-6
    # TRL defaults to 2; 4 gives the leave-one-out baseline three other samples and is what we tested.
    num_generations: int | None = 4
    # TRL defaults to 512 tokens, which makes every step wait for the longest sample; most RL prompts need less.
    max_completion_length: int | None = 256
    # A sample of this many completions per logged step goes to output_dir/completions.jsonl (None = all).
    num_completions_to_print: int | None = 8
    option_rules = (
        in_range("num_generations", lambda v: integer(v) and v >= 2,
                 "an integer >= 2: the leave-one-out baseline needs another completion of the same prompt"),
        generation_batch, in_range("beta", lambda v: v >= 0, "a KL weight >= 0 (0: no reference model)"),
        at_least_one("num_iterations"), no_sync_without_reference,
    )


def trainer():
    from utils.trainers.online_rl import RLOOTrainer

    return RLOOTrainer


METHOD = Method("RLOO", RLOOArgs, trainer, data="prompt", rewards=True, check=check_online_reference,
                no_tools="TRL's RLOOTrainer (1.16) has no tool-calling loop; GRPO has one (--rlhf_type GRPO --tools ...)",
                vision=("use_transformers_continuous_batching",))
