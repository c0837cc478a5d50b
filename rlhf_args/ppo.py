"""PPO: our `utils.ppo.trainer.PPOTrainer` (TRL dropped its PPOTrainer after 1.11); option and metric
names follow TRL 1.11's PPOConfig where it had them.

Per rollout batch the policy samples one completion for each of
    per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches   prompts per process;
the reward sources score them, the reference gives a per-token KL penalty (`kl_coef`), GAE (`gamma`,
`lam`) turns rewards and the critic's values into advantages, and then `num_ppo_epochs` passes go over
that batch, each split into `num_mini_batches` optimizer steps (clipped policy loss `cliprange`,
clipped value loss `cliprange_value` weighted by `vf_coef`).

`num_ppo_epochs` is not `num_train_epochs`: the first is how many optimizer passes reuse one batch of
samples (the PPO inner loop); the second is how many times the prompt dataset is walked through, each
walk generating fresh samples. Optimizer steps per epoch = rollouts x num_ppo_epochs x num_mini_batches;
`max_steps` counts those optimizer steps.
"""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from rlhf_args.base import Method, OurDefaults
from utils.core.errors import UserError


@dataclass
class PPOArgs(OurDefaults, TrainingArguments):
    learning_rate: float = field(default=3e-6, metadata={"help": "AdamW learning rate, policy and critic."})
    # bf16 where the hardware has it; gradient checkpointing off as for every method (OurDefaults): 1.15x faster
    # per PPO update than on, for +11 % peak RSS (bench/RESULTS.md, 3.5M params).
    bf16: bool | None = None
    # The prompts and every extra column (e.g. `answer`) must reach the reward functions.
    remove_unused_columns: bool | None = False
    # PPO loop
    num_ppo_epochs: int = field(default=4, metadata={"help": "Optimizer passes over each rollout batch."})
    num_mini_batches: int = field(default=1, metadata={"help": "Optimizer steps per pass over a rollout batch."})
    cliprange: float = field(default=0.2, metadata={"help": "Clip range of the policy ratio p/p_old."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Clip range of the value change from the rollout."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of GAE."})
    lam: float = field(default=0.95, metadata={"help": "Lambda of GAE (bias / variance trade-off)."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the per-token rewards before GAE."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Whiten the advantages per rollout batch."})
    # KL to the reference
    kl_coef: float = field(default=0.05, metadata={"help": "Weight of the per-token KL penalty in the reward."})
    kl_estimator: str = field(default="k1", metadata={
        "help": "Per-token KL estimator in the reward penalty: k1 (log ratio; recommended) or k3. k3 as a reward "
                "penalty is biased: its gradient adds kl_coef x the gradient of KL(ref || policy), pulling away from "
                "the KL-regularised optimum that k1 reaches."})
    # Sampling
    max_new_tokens: int = field(default=128, metadata={"help": "Longest completion sampled (stops at EOS)."})
    max_prompt_length: int | None = field(default=512, metadata={"help": "Prompts are cut to their last N tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (also divides the logits "
                                                                   "when log-probs are computed)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 = off."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 = off."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of every completion that ends without EOS."})
    local_rollout_forward_batch_size: int = field(
        default=64, metadata={"help": "Sequences per generate / scoring forward while collecting a rollout."})
    # Models
    reward_weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per reward source (reward models first, then functions); "
                                        "score = weighted sum. Default: all 1."})
    value_model_path: str | None = field(
        default=None, metadata={"help": "Critic initialisation (backbone + score head of a sequence-classification "
                                        "model sharing the policy's tokenizer). Default: the first reward model "
                                        "that shares the policy's tokenizer, else the policy (new zero value head)."})
    disable_dropout: bool = field(default=True, metadata={"help": "Dropout off in every model, so that the first "
                                                                  "PPO pass starts at ratio 1 exactly."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom modelling code from the hub."})
    num_completions_to_print: int | None = field(
        default=8, metadata={"help": "Completions per rollout written to output_dir/completions.jsonl (None = all)."})


def check(common, config, columns) -> None:
    # --max_new_tokens, --temperature, --top_p, --top_k: shared rules (utils/cli/option_checks.py).
    checks = [
        (config.num_ppo_epochs >= 1, f"--num_ppo_epochs must be >= 1, got {config.num_ppo_epochs}"),
        (config.num_mini_batches >= 1, f"--num_mini_batches must be >= 1, got {config.num_mini_batches}"),
        (config.kl_estimator in ("k1", "k3"), f"--kl_estimator must be k1 or k3, got {config.kl_estimator!r}"),
        (config.cliprange > 0 and config.cliprange_value > 0, "--cliprange and --cliprange_value must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message + ".")


def trainer():
    from utils.ppo.trainer import PPOTrainer

    return PPOTrainer


METHOD = Method("PPO", PPOArgs, trainer, data="prompt", rewards=True, critic=True, check=check)
