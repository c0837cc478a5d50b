"""GKD: TRL's GKDTrainer (trl.experimental), through our subclass `utils.trainers.distill.GKDTrainer`.
Supervised KD, SeqKD and on-policy GKD are three settings of this one method:

    supervised KD   --lmbda 0                  teacher logits on the dataset's completions
    SeqKD           --lmbda 0 --seq_kd true    the teacher generates the completions first
    GKD             --lmbda 0.5 (or 1)         that share of batches uses the student's own samples

`beta` picks the divergence: 0 = KL(teacher || student), 1 = KL(student || teacher), in between the
generalised JSD of Agarwal et al. (arXiv 2306.13649). `temperature` divides both models' logits in
the loss (TRL 1.16 uses it only for sampling; see utils/trainers/distill.py) and is the sampling temperature.

Data: SFT rows (`prompt` + `completion`, or `messages` whose last turn is the assistant's). With
`lmbda 1` the dataset's completions are never trained on, but the rows still need one (they fix the
prompt boundary); any placeholder completion will do.
"""

from dataclasses import dataclass, field

from trl.experimental.gkd import GKDConfig

from rlhf_args.base import Method, OurDefaults
from utils.core.errors import UserError
from utils.cli.option_checks import fraction


@dataclass
class GKDArgs(OurDefaults, GKDConfig):
    # TRL defaults to 0.9. We apply temperature to the loss too, so 1.0 makes the loss the divergence between
    # the models as they are and samples come from the models' own distributions (the paper's setting).
    temperature: float = field(
        default=1.0,
        metadata={"help": "Divides both models' logits in the loss (JSD at this temperature) and is the sampling "
                          "temperature of on-policy / SeqKD generation."},
    )
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Required: the frozen teacher causal LM (a local directory or hub id). It must use the "
                          "student's tokenizer; its embedding may have more or fewer padding rows."},
    )
    # No compute_metrics: gathering every eval batch's full-vocabulary logits would only cost memory.
    prediction_loss_only: bool = True
    teacher_load_in_4bit: bool = field(
        default=False,
        metadata={"help": "Load the frozen teacher in 4-bit NF4 (bitsandbytes) to save memory; the student follows "
                          "--train_mode."},
    )
    # TRL's GKDConfig refuses both outside [0, 1] in its own words; `temperature` > 0 is a shared rule.
    option_rules = (fraction("lmbda"), fraction("beta"))


def check(common, config, columns) -> None:
    # TRL would silently fall back to no teacher and fail later.
    if not config.teacher_model_name_or_path:
        raise UserError("--teacher_model_name_or_path is required for GKD: the frozen teacher causal LM (it must use "
                        "the student's tokenizer).")


def trainer():
    from utils.trainers.distill import GKDTrainer

    return GKDTrainer


METHOD = Method("GKD", GKDArgs, trainer, data="sft", teacher=True, check=check)
