"""KTO: TRL's KTOTrainer, on unpaired prompt / completion / label rows. `desirable_weight` and
`undesirable_weight` rebalance when one label is much rarer. The KL term is a batch estimate:
use per_device_train_batch_size >= 2 (TRL clamps a mean over the batch at 0). The reference is a frozen copy
of the start model in `full` mode and the policy with its adapter switched off in `lora` / `qlora` mode (with
the precompute default, only its log-probs are kept)."""

from dataclasses import dataclass

from trl import KTOConfig

from rlhf_args.base import Method, OurDefaults
from utils.cli.option_checks import no_sync_with_precompute, positive


def _kl_batch(config) -> str | None:
    # The KL estimate pairs each row with another of its batch (TRL's KTOTrainer refuses a batch of 1 when built).
    if config.loss_type == "kto" and config.per_device_train_batch_size < 2:
        return (f"--per_device_train_batch_size {config.per_device_train_batch_size} is too small for --loss_type kto: "
                "its KL term is estimated within each batch; expected an integer >= 2 (or --loss_type "
                "apo_zero_unpaired).")
    if config.loss_type == "kto" and config.train_sampling_strategy != "sequential":
        return (f"--train_sampling_strategy {config.train_sampling_strategy} breaks the KL term of --loss_type kto "
                "(each row's KL completion is its neighbour in a fixed-order batch); expected sequential.")
    return no_sync_with_precompute(config)


@dataclass
class KTOArgs(OurDefaults, KTOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1
    per_device_train_batch_size: int = 4
    # Reference log-probs computed once before training, then no reference model is kept (full mode) and no
    # reference forward runs per step: 1.50x tokens/s, -2.5 % peak RSS (bench/RESULTS.md, 3.5M params, full).
    precompute_ref_log_probs: bool = True
    option_rules = (positive("beta", "a number > 0 (the strength of the pull towards the reference)"),
                    positive("desirable_weight"), positive("undesirable_weight"), _kl_batch)


def trainer():
    from trl import KTOTrainer

    return KTOTrainer


def check(common, config, columns) -> None:
    from utils.model.gguf import refuse_reference_from_file

    refuse_reference_from_file(common, None if config.precompute_ref_log_probs else
                               "--precompute_ref_log_probs false", "--precompute_ref_log_probs true")


METHOD = Method("KTO", KTOArgs, trainer, data="kto", check=check, vision=("precompute_ref_log_probs",))
