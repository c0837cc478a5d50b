"""CPO, SimPO and CPO-SimPO: TRL's CPOTrainer (trl.experimental). Reference-free.

- CPO:       loss_type sigmoid (or hinge / ipo), cpo_alpha = 1 (the NLL term on chosen).
- SimPO:     loss_type simpo, cpo_alpha = 0 (no NLL term), beta ~ 2, simpo_gamma the margin.
- CPO-SimPO: loss_type simpo, cpo_alpha > 0.

TRL's `cpo_alpha` defaults to 1.0, so TRL with loss_type=simpo alone is CPO-SimPO; our SimPO sets 0 and
refuses cpo_alpha > 0 (use CPOSimPO). fp16 is refused for the whole family (their log-sigmoid losses
overflow in half precision): use bf16 or fp32."""

from dataclasses import dataclass, field

from trl.experimental.cpo import CPOConfig

from rlhf_args.base import Method, OurDefaults
from utils.core.errors import UserError
from utils.cli.option_checks import in_range, one_of, positive


@dataclass
class CPOArgs(OurDefaults, CPOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1
    loss_type: str = "sigmoid"
    cpo_alpha: float = 1.0
    # Not a field of TRL's CPOConfig: utils/trainers/padding_free.py packs each batch into as few rows as fit, no padding.
    padding_free: bool = field(default=False, metadata={"help": "Pack each batch into rows without padding."})
    # TRL's CPOTrainer knows these (alphapo: simpo with cpo_alpha 0); another would fail at the first step.
    option_rules = (positive("beta"), one_of("loss_type", ("sigmoid", "hinge", "ipo", "simpo", "alphapo"),
                                             "a CPO loss of TRL"),
                    in_range("cpo_alpha", lambda v: v >= 0, "a weight >= 0 (of the NLL term)"))


@dataclass
class SimPOArgs(CPOArgs):
    loss_type: str = "simpo"
    cpo_alpha: float = 0.0
    beta: float = 2.0
    simpo_gamma: float = 0.5


@dataclass
class CPOSimPOArgs(SimPOArgs):
    cpo_alpha: float = 0.5


def check_simpo(common, config, columns) -> None:
    if config.loss_type != "simpo":
        raise UserError(f"--rlhf_type {common.rlhf_type} uses --loss_type simpo, got {config.loss_type!r}; for other "
                        "CPO losses use --rlhf_type CPO.")
    if common.rlhf_type == "SimPO" and config.cpo_alpha != 0:
        raise UserError(f"--rlhf_type SimPO has no NLL term (cpo_alpha = 0), got --cpo_alpha {config.cpo_alpha}; "
                        "SimPO with an NLL term is --rlhf_type CPOSimPO.")
    if common.rlhf_type == "CPOSimPO" and config.cpo_alpha <= 0:
        raise UserError("--rlhf_type CPOSimPO needs --cpo_alpha > 0 (the weight of the NLL term); with 0 it is "
                        "--rlhf_type SimPO.")


def trainer():
    from utils.trainers.padding_free import PaddingFreeCPOTrainer  # TRL's CPOTrainer, plus `padding_free`

    return PaddingFreeCPOTrainer


CPO = Method("CPO", CPOArgs, trainer, data="preference", fp16_ok=False)
SIMPO = Method("SimPO", SimPOArgs, trainer, data="preference", fp16_ok=False, check=check_simpo)
CPOSIMPO = Method("CPOSimPO", CPOSimPOArgs, trainer, data="preference", fp16_ok=False, check=check_simpo)
