"""DPO: TRL's DPOTrainer. `loss_type` takes any of TRL's DPO losses (sigmoid, ipo, hinge, robust,
bco_pair, sppo_hard, nca_pair, aot, apo_zero, apo_down, discopop, sft, ...). The reference is a
frozen copy of the start model in `full` mode and the policy with its adapter switched off in
`lora` / `qlora` mode."""

from dataclasses import dataclass, field

from trl import DPOConfig

from rlhf_args.base import Method, OurDefaults
from utils.cli.option_checks import no_sync_with_precompute, one_of, positive

# TRL 1.16's DPO losses (dpo_trainer.py); an unknown one would fail only at the first training step.
LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
          "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
# The losses built on the chosen-rejected reward difference: the only ones an f-divergence other than reverse KL
# generalises (TRL refuses the others when the trainer is built).
F_DIVERGENCE_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft")


def _combinations(config) -> str | None:
    losses = [config.loss_type] if isinstance(config.loss_type, str) else list(config.loss_type)
    if config.loss_weights is not None and len(config.loss_weights) != len(losses):
        return (f"--loss_weights has {len(config.loss_weights)} values for {len(losses)} --loss_type values "
                f"({' '.join(losses)}); expected one weight per loss.")
    if "exo_pair" in losses and config.label_smoothing <= 0:
        return (f"--loss_type exo_pair needs --label_smoothing > 0, got {config.label_smoothing}; expected e.g. "
                "--label_smoothing 0.001 (the EXO paper's value).")
    others = [loss for loss in losses if loss not in F_DIVERGENCE_LOSSES]
    if config.f_divergence_type != "reverse_kl" and others:
        return (f"--f_divergence_type {config.f_divergence_type} does not apply to --loss_type {' '.join(others)}; "
                f"expected --f_divergence_type reverse_kl, or a loss among {', '.join(F_DIVERGENCE_LOSSES)}.")
    if config.use_weighting and {"aot", "aot_unpaired"} & set(losses):
        return ("--use_weighting true is not available with --loss_type aot / aot_unpaired (they sort the samples, "
                "which would misalign the weights); expected --use_weighting false or another loss.")
    return no_sync_with_precompute(config)


@dataclass
class DPOArgs(OurDefaults, DPOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1
    # Reference log-probs computed once before training, then no reference model is kept (full mode) and no
    # reference forward runs per step: 1.36x tokens/s, -1.4 % peak RSS (bench/RESULTS.md, 3.5M params, full).
    precompute_ref_log_probs: bool = True
    # Rows packed without padding (utils/trainers/padding_free.py; TRL 1.16 ignores the option): the same loss, rewards and
    # gradients (within 1e-5, fp32), and 1.18x CPU time per step on SmolLM2-135M, rows of 20-400 + 20-400 tokens,
    # batch 2 (1.18x on a 4-layer model at batch 8); a batch that cannot be packed runs as padded (0.97-1.00x)
    # (bench/RESULTS.md, "Padding-free").
    padding_free: bool = field(default=True, metadata={"help": "Pack each batch's sequences into as few rows as "
                               "fit, without padding (any attention implementation); exact. Default: on."})
    option_rules = (positive("beta", "a number > 0 (the strength of the pull towards the reference)"),
                    one_of("loss_type", LOSSES, "a DPO loss of TRL"),
                    one_of("f_divergence_type", ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"),
                           "an f-divergence of TRL's DPO"),
                    _combinations)


def trainer():
    from utils.trainers.padding_free import PaddingFreeDPOTrainer  # TRL's DPOTrainer, with `padding_free` working

    return PaddingFreeDPOTrainer


def check(common, config, columns) -> None:
    from utils.model.gguf import refuse_reference_from_file

    refuse_reference_from_file(common, None if config.precompute_ref_log_probs else
                               "--precompute_ref_log_probs false", "--precompute_ref_log_probs true")


METHOD = Method("DPO", DPOArgs, trainer, data="preference", check=check, tools="schemas",
                vision=("padding_free", "precompute_ref_log_probs"))
