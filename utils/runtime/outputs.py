"""What a run leaves in output_dir: the final save, nothing new when the run was refused, the command that
resumes it from a checkpoint, the checkpoints there, main_train's exit codes."""

from __future__ import annotations

import os
import re
import shutil

EXIT_USER_ERROR, EXIT_NON_FINITE, EXIT_SAVE_FAILED = 2, 3, 4
STAGING = ".saving"  # checkpoints and the final model are written here, then renamed into place (saving.py)


def save_outputs(trainer, tokenizer, output_dir: str) -> None:
    from utils.core.distributed import prepare_final_save

    prepare_final_save(trainer)  # FSDP / ZeRO-3: gather a whole model, whatever the checkpoint settings
    trainer.save_model(output_dir)  # safetensors; a PEFT adapter directory in lora / qlora mode
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)
        trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))


def undo_output_dir(path: str | None, before: set | None) -> None:
    """A refused run leaves output_dir as it found it: what the trainer created while being built goes."""
    if path is None or not os.path.isdir(path):
        return
    if before is None:
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in set(os.listdir(path)) - before:
        target = os.path.join(path, name)
        shutil.rmtree(target, ignore_errors=True) if os.path.isdir(target) else os.remove(target)


def resume_command(argv: list[str], checkpoint: str) -> str:
    """The command line that resumes this run from `checkpoint` (any --resume_from_checkpoint replaced)."""
    import shlex

    argv = [str(a) for a in argv]
    if "--resume_from_checkpoint" in argv:
        i = argv.index("--resume_from_checkpoint")
        del argv[i:i + 2]
    return shlex.join(["python", "main_train.py", *argv, "--resume_from_checkpoint", checkpoint])


def checkpoints(output_dir: str) -> dict[int, str]:
    """step -> path of every `checkpoint-N` directory in output_dir."""
    if not os.path.isdir(output_dir):
        return {}
    found = (re.fullmatch(r"checkpoint-(\d+)", name) for name in os.listdir(output_dir))
    return {int(m.group(1)): os.path.join(output_dir, m.group(0)) for m in found if m}
