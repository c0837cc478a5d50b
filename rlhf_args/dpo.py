"""DPO: TRL's DPOTrainer. `loss_type` takes any of TRL's DPO losses (sigmoid, ipo, hinge, robust,
bco_pair, sppo_hard, nca_pair, aot, apo_zero, apo_down, discopop, sft, ...). The reference is a
frozen copy of the start model in `full` mode and the policy with its adapter switched off in
`lora` / `qlora` mode."""

from dataclasses import dataclass, field

from trl import DPOConfig

from rlhf_args.base import Method, OurDefaults


@dataclass
class DPOArgs(OurDefaults, DPOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1
    # Reference log-probs computed once before training, then no reference model is kept (full mode) and no
    # reference forward runs per step: 1.36x tokens/s, -1.4 % peak RSS (bench/RESULTS.md, 3.5M params, full).
    precompute_ref_log_probs: bool = True
    # Rows packed without padding (utils/padding_free.py; TRL 1.16 ignores the option): the same loss, rewards and
    # gradients (within 1e-5, fp32), and 1.18x CPU time per step on SmolLM2-135M, rows of 20-400 + 20-400 tokens,
    # batch 2 (1.18x on a 4-layer model at batch 8); a batch that cannot be packed runs as padded (0.97-1.00x)
    # (bench/RESULTS.md, "Padding-free").
    padding_free: bool = field(default=True, metadata={"help": "Pack each batch's sequences into as few rows as "
                               "fit, without padding (any attention implementation); exact. Default: on."})


def trainer():
    from utils.padding_free import PaddingFreeDPOTrainer  # TRL's DPOTrainer, with `padding_free` working

    return PaddingFreeDPOTrainer


def check(common, config, columns) -> None:
    from utils.gguf import refuse_reference_from_file

    refuse_reference_from_file(common, None if config.precompute_ref_log_probs else
                               "--precompute_ref_log_probs false", "--precompute_ref_log_probs true")


METHOD = Method("DPO", DPOArgs, trainer, data="preference", check=check)
