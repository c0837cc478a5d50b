"""GRPO: TRL's GRPOTrainer (through `utils.online_rl.GRPOTrainer`, which only adds completions.jsonl).

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


@dataclass
class GRPOArgs(OurDefaults, GRPOConfig):
    # TRL's default (1e-6) suits full fine-tuning of billion-parameter models; LoRA usually wants ~1e-5.
    learning_rate: float = 1e-6
    # TRL defaults to 512 tokens, which makes every step wait for the longest sample; most RL prompts need less.
    max_completion_length: int | None = 256
    # A sample of this many completions per logged step goes to output_dir/completions.jsonl (None = all).
    num_completions_to_print: int | None = 8


def trainer():
    from utils.online_rl import GRPOTrainer

    return GRPOTrainer


def check(common, config, columns) -> None:
    from utils.gguf import refuse_reference_from_file

    refuse_reference_from_file(common, f"--beta {config.beta}" if config.beta else None, "--beta 0")


METHOD = Method("GRPO", GRPOArgs, trainer, data="prompt", rewards=True, check=check)
