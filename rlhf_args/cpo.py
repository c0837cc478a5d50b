"""CPO, SimPO and CPO-SimPO: TRL's CPOTrainer (trl.experimental). Reference-free.

- CPO:       loss_type sigmoid (or hinge / ipo), cpo_alpha = 1 (the NLL term on chosen).
- SimPO:     loss_type simpo, cpo_alpha = 0 (no NLL term), beta ~ 2, simpo_gamma the margin.
- CPO-SimPO: loss_type simpo, cpo_alpha > 0.
TRL's `cpo_alpha` defaults to 1.0, so TRL with loss_type=simpo alone is CPO-SimPO; our SimPO sets
0 and main_train refuses a SimPO run with cpo_alpha > 0 (use CPOSimPO). fp16 is refused for the
whole family (their log-sigmoid losses overflow in half precision): use bf16 or fp32."""

from dataclasses import dataclass

from trl.experimental.cpo import CPOConfig

from rlhf_args.base import OurDefaults


@dataclass
class CPOArgs(OurDefaults, CPOConfig):
    learning_rate: float = 5e-6
    beta: float = 0.1
    loss_type: str = "sigmoid"
    cpo_alpha: float = 1.0


@dataclass
class SimPOArgs(CPOArgs):
    loss_type: str = "simpo"
    cpo_alpha: float = 0.0
    beta: float = 2.0
    simpo_gamma: float = 0.5


@dataclass
class CPOSimPOArgs(SimPOArgs):
    cpo_alpha: float = 0.5
