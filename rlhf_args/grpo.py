"""GRPO: TRL's GRPOTrainer (through `utils.trainers.online_rl.GRPOTrainer`, which only adds completions.jsonl).

For each prompt the policy samples `num_generations` completions; advantages are the rewards
normalised within each prompt's group (`scale_rewards`: group | batch | none; Shao et al. 2024,
arXiv 2402.03300). `loss_type` picks TRL's aggregation (dapo, grpo, dr_grpo, bnpo, cispo, ...).
`beta` (default 0: no reference model is loaded at all) adds a KL penalty to the reference: a frozen
copy in `full` mode, the adapter switched off in `lora` / `qlora` mode.

Rewards: --reward_model_path and/or --reward_funcs, weighted by --reward_weights (reward models
first, then functions); verifiable Python rewards receive every extra dataset column (e.g. `answer`).
Every other TRL GRPOConfig field is a flag.
"""

from dataclasses import dataclass

from trl import GRPOConfig

from rlhf_args.base import Method, OurDefaults
from utils.cli.option_checks import (at_least_one, check_online_reference, generation_batch, in_range, integer,
                                     no_sync_without_reference, one_of)


@dataclass
class GRPOArgs(OurDefaults, GRPOConfig):
    # TRL's default (1e-6) suits full fine-tuning of billion-parameter models; LoRA usually wants ~1e-5.
    learning_rate: float = 1e-6
    # TRL defaults to 512 tokens, which makes every step wait for the longest sample; most RL prompts need less.
    max_completion_length: int | None = 256
    # A sample of this many completions per logged step goes to output_dir/completions.jsonl (None = all).
    num_completions_to_print: int | None = 8
    option_rules = (
        in_range("num_generations", lambda v: integer(v) and v >= 2,
                 "an integer >= 2: the advantages compare the completions of one prompt"),
        generation_batch, in_range("beta", lambda v: v >= 0, "a KL weight >= 0 (0: no reference model)"),
        at_least_one("num_iterations"), no_sync_without_reference,
        # TRL 1.16 checks these only at the first training step.
        one_of("loss_type", ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"),
               "a GRPO loss of TRL"),
        one_of("scale_rewards", ("group", "batch", "none", True, False), "a reward scaling of TRL"),
        one_of("importance_sampling_level", ("token", "sequence"), "an importance sampling level of TRL"),
        one_of("multi_objective_aggregation", ("sum_then_normalize", "normalize_then_sum"),
               "a reward aggregation of TRL"),
    )


def trainer():
    from utils.trainers.online_rl import GRPOTrainer

    return GRPOTrainer


METHOD = Method("GRPO", GRPOArgs, trainer, data="prompt", rewards=True, check=check_online_reference, tools="run",
                vision=("use_transformers_continuous_batching",))
