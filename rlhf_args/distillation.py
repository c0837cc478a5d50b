"""Distillation: TRL's stable DistillationTrainer (`trl.DistillationTrainer`), on-policy distillation as it is.

For each prompt the student samples a completion; the frozen teacher scores every token of it, and the
loss is the generalised JSD between the two models' next-token distributions over the completion tokens
(Agarwal et al., arXiv 2306.13649). `beta` picks the divergence: 0 = KL(teacher || student), forward;
1 = KL(student || teacher), reverse (TRL's default); in between the generalised JSD. `temperature` is the
sampling temperature and divides both models' logits in the loss. No dataset completion is ever trained
on: the rows only give prompts (other fields, e.g. a `completion`, are ignored).

Teacher: --teacher_model_name_or_path, checked as GKD's is (same tokenizer, before any weights load) and
loaded by us (4-bit with --teacher_load_in_4bit). TRL compares the full output layers, so both models must
also have the same number of embedding rows (`vocab_size`); GKD (`rlhf_args/gkd.py`) compares over the
tokenizer's real vocabulary instead. Every other TRL DistillationConfig field is a flag.
"""

from dataclasses import dataclass, field

from trl import DistillationConfig

from rlhf_args.base import Method, OurDefaults
from utils.cli.option_checks import at_least_one, fraction, one_of
from utils.core.errors import UserError


def _loaded_by_us(config) -> str | None:
    # main_train loads both models (dtype, 4-bit, GGUF) and hands TRL the objects: TRL ignores these, or refuses
    # --teacher_model_init_kwargs only once both models have loaded.
    for name in ("model_init_kwargs", "teacher_model_init_kwargs", "teacher_model_revision"):
        if getattr(config, name, None) is not None:
            return (f"--{name} is not used: main_train loads the student and the teacher itself (--dtype / --bf16, "
                    "--train_mode qlora, --teacher_load_in_4bit, a local directory or hub id); expected it unset.")
    return None


def _vllm_installed(config) -> str | None:
    # TRL raises ImportError only when the trainer is built, after both models have loaded.
    if config.use_vllm:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            return ("--use_vllm true needs vLLM, which is not installed here; expected `pip install vllm` (GPU "
                    "machines) or --use_vllm false (the student samples with transformers' generate).")
    return None


@dataclass
class DistillationArgs(OurDefaults, DistillationConfig):
    # TRL defaults to 512 tokens, which makes every step wait for the longest sample; most prompts need less.
    max_completion_length: int | None = 256
    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Required: the frozen teacher causal LM (a local directory or hub id). It must use the "
                          "student's tokenizer and have as many embedding rows (vocab_size)."},
    )
    teacher_load_in_4bit: bool = field(
        default=False,
        metadata={"help": "Load the frozen teacher in 4-bit NF4 (bitsandbytes) to save memory; the student follows "
                          "--train_mode."},
    )
    # TRL refuses --beta outside [0, 1] in its own words; the vLLM options only when it builds the trainer (after
    # the models have loaded), or not at all when --use_vllm is off.
    option_rules = (
        fraction("beta"), _loaded_by_us, _vllm_installed,
        one_of("vllm_mode", ("colocate", "server"), "a vLLM mode of TRL"),
        one_of("vllm_model_impl", ("vllm", "transformers"), "a vLLM model implementation"),
        fraction("vllm_gpu_memory_utilization", low_open=True), at_least_one("vllm_tensor_parallel_size"),
    )


def check(common, config, columns) -> None:
    # TRL would build a trainer without a teacher and fail at the first step.
    if not config.teacher_model_name_or_path:
        raise UserError("--teacher_model_name_or_path is required for Distillation: the frozen teacher causal LM "
                        "that scores the student's samples (it must use the student's tokenizer).")
    from utils.trainers.teacher import check_same_vocab_size

    check_same_vocab_size(common.model_name_or_path, config.teacher_model_name_or_path, config.trust_remote_code)


def trainer():
    from utils.trainers.online_rl import DistillationTrainer  # TRL's, sampling in the training's precision

    return DistillationTrainer


METHOD = Method("Distillation", DistillationArgs, trainer, data="prompt", teacher=True, check=check)
