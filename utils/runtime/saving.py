"""Saves that are whole or absent. Every checkpoint, and the final model, is written under `output_dir/.saving/` and
renamed into place once every process has written its part, so any `checkpoint-N` in output_dir is complete (a run
killed while saving leaves only `.saving/`, which the next run on that output_dir removes). A save that fails (a full
disk, a quota, an I/O error) removes what it wrote and ends the run with one paragraph: what failed, where, the free
space left, the newest complete checkpoint and the command that resumes it (main_train: exit code 4). `finish`: how
a run that trained ends (the NaN guard's verdict, an interrupt, the final save)."""

from __future__ import annotations

import errno
import logging
import math
import os
import shutil
import sys

from utils.runtime.outputs import EXIT_NON_FINITE, EXIT_SAVE_FAILED, STAGING, resume_command

log = logging.getLogger("main_train")


class SaveFailed(Exception):
    """A checkpoint or the final model could not be written; the message is the one paragraph the user sees."""


def _save_errors() -> tuple:
    try:
        from safetensors import SafetensorError
    except ImportError:  # older safetensors
        return OSError, RuntimeError
    return OSError, RuntimeError, SafetensorError


def _free(path: str) -> str:
    try:
        return _size(shutil.disk_usage(path).free)
    except OSError:
        return "an unknown amount"


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


def _full(error: Exception, output_dir: str) -> bool:
    """A full disk or quota: by its errno, its words, or (torch's stream writer says only "unexpected pos ...")
    under 1 MB left where the save failed."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if "No space left" in str(error) or "quota" in str(error).lower():
        return True
    try:
        return shutil.disk_usage(output_dir).free < 2**20
    except OSError:
        return False


def failed(what: str, output_dir: str, error: Exception, argv: list[str], full: bool) -> SaveFailed:
    from utils.runtime.outputs import checkpoints
    from utils.runtime.resume import incomplete

    complete = [p for _, p in sorted(checkpoints(output_dir).items()) if incomplete(p) is None]
    cause = " ".join(str(error).split()) or type(error).__name__
    cause = f"the disk is full ({cause})" if full else cause
    then = (f"The newest complete checkpoint is {complete[-1]}; once there is room, resume with: "
            f"{resume_command(argv, complete[-1])} (or the same command with --resume_from_checkpoint auto)."
            if complete else "No complete checkpoint was saved before it; once there is room, run the command again.")
    return SaveFailed(f"Saving {what} into {output_dir} failed: {cause}. The disk holding it has {_free(output_dir)} free "
                      f"now. What this save had written was removed, so every checkpoint-N in {output_dir} is "
                      f"complete. {then}")


def _publish(source: str, target: str) -> None:
    """Rename a staged folder into place (an older one of that name replaced)."""
    if os.path.isdir(target):
        old = source + ".replaced"
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def _tidy(staging: str) -> None:
    try:
        os.rmdir(staging)  # only when empty: another process may still be writing there
    except OSError:
        pass


def atomic_checkpoints(trainer, argv: list[str], record: dict | None) -> None:
    """Make `trainer` write each checkpoint under .saving/ and rename it into output_dir when complete, with this
    run's record (utils/runtime/resume.py) inside. Wraps its `_save_checkpoint` (TRL's overrides included), pointing
    transformers' `_get_output_dir` at the staging folder while it runs."""
    original, errors = trainer._save_checkpoint, _save_errors()

    def save(model, trial):
        from transformers.trainer_utils import rotate_checkpoints

        args = trainer.args
        name, staging = f"checkpoint-{trainer.state.global_step}", os.path.join(args.output_dir, STAGING)
        staged = os.path.join(staging, name)
        trainer._get_output_dir = lambda trial=None: staging
        try:
            original(model, trial)
            if args.should_save and record is not None:
                from utils.runtime.resume import write_record

                write_record(staged, record)
        except errors as e:
            full = _full(e, args.output_dir)
            shutil.rmtree(staged, ignore_errors=True)
            _tidy(staging)
            raise failed(name, args.output_dir, e, argv, full) from e
        finally:
            del trainer._get_output_dir
        trainer.accelerator.wait_for_everyone()  # every process has written its part (DeepSpeed: its shards)
        if args.should_save:
            target = os.path.join(args.output_dir, name)
            _publish(staged, target)
            if trainer.state.best_model_checkpoint == staged:
                trainer.state.best_model_checkpoint = target
            rotate_checkpoints(args.output_dir, args.save_total_limit, trainer.state.best_model_checkpoint)
            _tidy(staging)
        trainer.accelerator.wait_for_everyone()

    trainer._save_checkpoint = save


def save_final(trainer, tokenizer, output_dir: str, argv: list[str]) -> None:
    """The final model (utils/runtime/outputs.save_outputs) staged, then moved into output_dir file by file."""
    from utils.runtime.outputs import save_outputs

    staged = os.path.join(output_dir, STAGING, "final")
    try:
        save_outputs(trainer, tokenizer, staged)
    except _save_errors() as e:
        full = _full(e, output_dir)
        shutil.rmtree(staged, ignore_errors=True)
        _tidy(os.path.dirname(staged))
        raise failed("the final model", output_dir, e, argv, full) from e
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        for name in os.listdir(staged):
            _publish(os.path.join(staged, name), os.path.join(output_dir, name))
        shutil.rmtree(os.path.join(output_dir, STAGING), ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


# ------------------------------------------------------------------------------------ the check phase
def checkpoint_bytes(model_path: str, train_mode: str, lora_rank: int) -> int | None:
    """About how much one checkpoint of this run takes: the trained weights in float32 and AdamW's two moments, 12 bytes
    a trained parameter (LoRA: r x (in + out) per 2-D weight but the embeddings and output head), counted from the
    shapes in the safetensors headers (no weights read); None where the model is not a folder of safetensors."""
    import glob

    files = glob.glob(os.path.join(os.path.expanduser(model_path), "*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    trained = 0
    for path in files:
        with safe_open(path, "pt") as f:
            for name in f.keys():
                shape = f.get_slice(name).get_shape()
                if train_mode == "full":
                    trained += math.prod(shape)
                elif len(shape) == 2 and not any(k in name for k in ("embed", "lm_head", "wte", "wpe", "score")):
                    trained += lora_rank * (shape[0] + shape[1])
    return 12 * trained


def warn_if_disk_small(common, config) -> None:
    if config.save_strategy == "no":
        return
    need = checkpoint_bytes(common.model_name_or_path, common.train_mode, common.lora_rank)
    where = os.path.abspath(config.output_dir)
    while not os.path.isdir(where):  # output_dir is created later: the disk of its nearest existing parent
        where = os.path.dirname(where)
    free = shutil.disk_usage(where).free
    if need is not None and free < need:
        log.warning("The disk holding %s has %s free; one checkpoint of this run takes about %s (trained weights and "
                    "optimizer state, counted from the shapes in its safetensors files). Free some space, or point --output_dir at "
                    "a larger disk: a save that fails stops the run (the checkpoints before it stay complete).",
                    config.output_dir, _size(free), _size(need))


def finish(trainer, guard, stop, argv: list[str], tokenizer, evals, after=None) -> int:
    """After `trainer.train` returned: the NaN guard's verdict, an interrupt's resume line, or the final evaluation and
    save, then `after()` (--evaluate_after; its exit code is the run's). Returns the exit code."""
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
    try:
        save_final(trainer, tokenizer, output_dir, argv)
    except SaveFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_SAVE_FAILED
    log.info("saved to %s", output_dir)
    return after() if after is not None else 0
