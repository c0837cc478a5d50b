"""The frozen teacher of GKD and Distillation: its tokenizer checked against the student's before any weights load
(`check_teacher`; Distillation's embedding rows too, `check_same_vocab_size`) and its loading (`load_teacher`).
No experimental TRL here: an upgrade that moves GKD's trainer leaves Distillation's checks working."""

from __future__ import annotations

from utils.core.errors import UserError


def check_teacher(config, tokenizer):
    """Check phase: the teacher's tokenizer is the student's (its directory was checked with every other path,
    utils/cli.check_paths). Returns the teacher's tokenizer."""
    from utils.model.loading import load_tokenizer

    path = config.teacher_model_name_or_path
    teacher_tokenizer = load_tokenizer(path, config.trust_remote_code)
    if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            f"The teacher at {path!r} does not use the student's tokenizer ({len(teacher_tokenizer)} vs "
            f"{len(tokenizer)} tokens, or the same size with different ids). The loss compares the two models' "
            "next-token distributions id by id, so they must share one vocabulary: pick a teacher of the same "
            "model family, or pass --tokenizer_name_or_path if the student's tokenizer was saved elsewhere."
        )
    return teacher_tokenizer


def check_same_vocab_size(student_path: str, teacher_path: str, trust_remote_code: bool) -> None:
    """Check phase, Distillation: TRL's DistillationTrainer compares the two output layers row by row and refuses
    a teacher with another `vocab_size` only once both models have loaded; read from config.json here (no weights).
    GGUF files and directories without a config.json are left to TRL's own check, reworded."""
    from transformers import AutoConfig

    from utils.model import gguf

    sizes = []
    for path in (student_path, teacher_path):
        if gguf.is_gguf(path):
            return
        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError):  # an adapter directory, ...: load_model says more in the build phase
            return
        sizes.append(getattr(config.get_text_config(), "vocab_size", None))
    if None not in sizes and sizes[0] != sizes[1]:
        raise UserError(
            f"The teacher at {teacher_path!r} has {sizes[1]} embedding rows (vocab_size in its config.json) and the "
            f"student at {student_path!r} has {sizes[0]}. TRL's DistillationTrainer compares the two models' whole "
            "output layers row by row, so the sizes must be equal: pick a teacher with the student's tokenizer and "
            "vocab_size, or, for one with the same tokenizer and more or fewer padding rows, use --rlhf_type GKD, "
            "which compares the two models over the tokenizer's real vocabulary."
        )


def load_teacher(config, teacher_tokenizer, dtype):
    """Build phase: the frozen teacher, 4-bit with --teacher_load_in_4bit."""
    from utils.model.loading import load_model

    teacher = load_model(config.teacher_model_name_or_path, teacher_tokenizer, dtype=dtype,
                         load_in_4bit=config.teacher_load_in_4bit, trust_remote_code=config.trust_remote_code)
    return teacher.eval().requires_grad_(False)
