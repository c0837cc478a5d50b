"""What a run leaves in output_dir: the final save, nothing new when the run was refused, the command that
resumes it from a checkpoint, and how a run that trained ends (`finish`, with main_train's exit codes)."""

from __future__ import annotations

import os
import re
import shutil
import sys

EXIT_USER_ERROR, EXIT_NON_FINITE, EXIT_SAVE_FAILED = 2, 3, 4


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


def finish(trainer, guard, stop, argv: list[str], tokenizer, evals, evaluation) -> int:
    """After `trainer.train` returned: the NaN guard's verdict, an interrupt's resume line, or the final evaluation and
    save (then --evaluate_after). Returns the exit code."""
    import logging

    output_dir = trainer.args.output_dir
    if guard.tripped:
        print(f"error: {guard.message(lambda checkpoint: resume_command(argv, checkpoint))}", file=sys.stderr)
        if trainer.is_world_process_zero():
            trainer.state.save_to_json(os.path.join(output_dir, "trainer_state.json"))
        return EXIT_NON_FINITE
    if stop.signum is not None:
        checkpoint = os.path.join(output_dir, f"checkpoint-{stop.step}")
        print(f"Interrupted at step {stop.step}: checkpoint saved in {checkpoint}. Resume with:\n  "
              f"{resume_command(argv, checkpoint)}\nor, from a scheduler that re-runs the same command, give it "
              "--resume_from_checkpoint auto (the newest checkpoint, or a fresh start when there is none).",
              file=sys.stderr)
        return 128 + stop.signum
    if evals is not None:
        trainer.evaluate()
    from utils.runtime.saving import SaveFailed, save_final

    try:
        save_final(trainer, tokenizer, output_dir, argv)
    except SaveFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SAVE_FAILED
    logging.getLogger("main_train").info("saved to %s", output_dir)
    if evaluation is not None:  # the final model against the starting model, into output_dir/eval
        from utils.evaluation.run import run_after_training

        return run_after_training(evaluation)
    return 0
