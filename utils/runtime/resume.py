"""Which checkpoint a run resumes from (`--resume_from_checkpoint PATH | latest | auto`), and what each checkpoint
records of the run that wrote it (`checkpoint-N/rlhf_run.json`): the method, the model, the training data (size and
SHA-256 of each file) and the flags that set the data order and the batch. A resume with other data, another method
or model, or another batch layout is refused in the check phase, naming what differs and the ways on; changes that do
not touch them (logging, saving, a longer --max_steps, the learning rate) are accepted."""

from __future__ import annotations

import hashlib
import json
import logging
import os

from utils.core.errors import UserError, show

log = logging.getLogger("main_train")
RECORD = "rlhf_run.json"
WORDS = ("latest", "auto")
# The flags that decide which rows land in which batch (TRL's, transformers' and ours): a change makes the resumed run
# skip the wrong batches. --ignore_data_skip accepts them knowingly.
LAYOUT = ("per_device_train_batch_size", "gradient_accumulation_steps", "world_size", "seed", "data_seed",
          "dataloader_drop_last", "train_sampling_strategy", "packing", "max_length", "max_prompt_length",
          "num_generations", "steps_per_generation", "generation_batch_size", "shuffle_dataset", "data_weights",
          "train_split", "pairs", "min_score_gap", "eval_split")


# ------------------------------------------------------------------------------------- the record
def _digest(paths: list[str]) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    for path in paths:
        size += os.path.getsize(path)
        with open(path, "rb") as f:
            h.update(hashlib.file_digest(f, "sha256").digest())
    return size, h.hexdigest()


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        return sorted(os.path.join(d, f) for d, _, names in os.walk(path) for f in names)
    return [path] if os.path.isfile(path) else []


def data_identity(path: str) -> dict:
    """A data source by content: bytes and SHA-256 of its file (or of a folder's files); a hub id by its name."""
    real = os.path.expanduser(path)
    files = _files(real)
    if not files:
        return {"path": path}
    size, sha = _digest(files)
    return {"path": path, "bytes": size, "sha256": sha}


def model_identity(path: str) -> dict:
    """A model by its config.json's SHA-256 and its weight files' names and sizes (its path may move)."""
    real = os.path.expanduser(path)
    if os.path.isfile(real):  # a GGUF file
        return {"file": os.path.basename(real), "bytes": os.path.getsize(real)}
    if not os.path.isdir(real):
        return {"id": path}
    config = os.path.join(real, "config.json")
    weights = {f: os.path.getsize(os.path.join(real, f)) for f in sorted(os.listdir(real))
               if f.endswith((".safetensors", ".bin", ".gguf"))}
    return {"config_sha256": _digest([config])[1] if os.path.isfile(config) else None, "weights": weights}


def fingerprint(method, common, config) -> dict:
    """What this run trains on and how it batches, as a checkpoint records it."""
    layout = {}
    for name in LAYOUT:
        value = os.environ.get("WORLD_SIZE", "1") if name == "world_size" else \
            getattr(common, name, getattr(config, name, None))
        if value is not None:
            layout[name] = show(value)
    return {"method": method.name, "train_mode": common.train_mode, "model": common.model_name_or_path,
            "model_identity": model_identity(common.model_name_or_path),
            "data": [data_identity(p) for p in common.train_data_path], "layout": layout}


def write_record(checkpoint: str, record: dict) -> None:
    with open(os.path.join(checkpoint, RECORD), "w") as f:
        json.dump(record, f, indent=1)


# ----------------------------------------------------------------------------------- which checkpoint
def incomplete(path: str) -> str | None:
    """Why `path` is not a checkpoint a run can resume from (utils/model/checks.checkpoint_gaps, or its
    trainer_state.json unreadable), or None."""
    from utils.model.checks import checkpoint_gaps

    gaps = checkpoint_gaps(path)
    if gaps:
        return " and ".join(gaps)
    try:
        with open(os.path.join(path, "trainer_state.json")) as f:
            json.load(f)
    except (OSError, ValueError):
        return "an unreadable trainer_state.json"
    return None


def resolve(value: str | None, output_dir: str) -> str | None:
    """--resume_from_checkpoint as a path: `latest` the newest complete checkpoint in output_dir (refused when there is
    none), `auto` the same or None (a fresh start) when there is none; a path as given."""
    if value is None or value.lower() not in WORDS:
        return value
    from utils.runtime.outputs import checkpoints

    found = sorted(checkpoints(output_dir).items(), reverse=True)
    torn = []
    for step, path in found:
        why = incomplete(path)
        if why is None:
            if torn:
                log.info("--resume_from_checkpoint %s: skipped %s (incomplete: %s).", value.lower(),
                         ", ".join(p for p, _ in torn), "; ".join(w for _, w in torn))
            log.info("--resume_from_checkpoint %s: resuming from %s.", value.lower(), path)
            return path
        torn.append((os.path.basename(path), why))
    skipped = f" (incomplete: {', '.join(f'{p}, {w}' for p, w in torn)})" if torn else ""
    if value.lower() == "latest":
        raise UserError(f"--resume_from_checkpoint latest: {output_dir} holds no complete checkpoint{skipped}. "
                        "Give a checkpoint directory, or --resume_from_checkpoint auto to start from the beginning "
                        "when there is none.")
    log.info("--resume_from_checkpoint auto: no checkpoint in %s%s; starting from the beginning.", output_dir, skipped)
    return None


class Finished(Exception):
    """`latest` / `auto` in an output_dir whose run already reached its end: nothing to train (main_train: exit 0)."""


def check_finished(output_dir: str, checkpoint: str | None, config) -> None:
    """Raise Finished when output_dir's final model was saved at or after `checkpoint` by a run that reached its
    max_steps / epochs, and this run asks for no more: re-running a finished job's command is then a no-op (resuming
    would train a step past the end)."""
    try:
        with open(os.path.join(output_dir, "trainer_state.json")) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return
    step, end = state.get("global_step", 0), state.get("max_steps", 0)
    at = int(os.path.basename(checkpoint).split("-")[-1]) if checkpoint else 0
    if config.max_steps > 0:
        more = config.max_steps > step
    else:
        more = config.num_train_epochs > state.get("num_train_epochs", 0)
    if end and step >= end and step >= at and not more:
        raise Finished(f"{output_dir} holds this run's final model, saved at its last step ({step} of {end}): nothing "
                       "left to train. To train again, pass --overwrite_output_dir true (the old checkpoints and final "
                       "model are deleted) or give another --output_dir; to train longer, raise --max_steps.")


# ------------------------------------------------------------------------------------- the comparison
def _data_change(then: list, now: list) -> str | None:
    if [(d.get("bytes"), d.get("sha256")) for d in then] == [(d.get("bytes"), d.get("sha256")) for d in now]:
        return None

    def say(d):
        return f"{d['path']} ({d['bytes']} bytes, sha256 {d['sha256'][:12]})" if "sha256" in d else d["path"]

    return (f"other training data ({'; '.join(say(d) for d in then)} when it was written, "
            f"{'; '.join(say(d) for d in now)} now)")


def check_resume(checkpoint: str, now: dict, ignore_data_skip: bool) -> None:
    """Refuse a resume whose data, method, model or batch layout differs from the checkpoint's record."""
    try:
        with open(os.path.join(checkpoint, RECORD)) as f:
            then = json.load(f)
    except (OSError, ValueError):
        log.info("%s holds no record of the run that wrote it (%s missing): its data and flags are not compared.",
                 checkpoint, RECORD)
        return
    fixed = [f"another {what} ({then[key]} then, {now[key]} now)" for key, what in
             (("method", "method"), ("train_mode", "--train_mode")) if then.get(key) != now[key]]
    if then.get("model_identity") != now["model_identity"]:
        fixed.append(f"another model ({then.get('model')} then, {now['model']} now: its config or weights differ)")
    data = _data_change(then.get("data", []), now["data"])
    layout = [f"--{k} {then['layout'].get(k, 'unset')} then, {v} now" for k, v in now["layout"].items()
              if then.get("layout", {}).get(k, v) != v]
    knowingly = ([data] if data else []) + ([f"another batch layout ({'; '.join(layout)})"] if layout else [])
    base = f"Cannot resume from {checkpoint}: this run has "
    weights = (f"start a new run from the checkpoint's weights in another --output_dir (--model_name_or_path "
               f"{checkpoint} for full fine-tuning; a LoRA checkpoint merged first with `python -m utils.merge "
               f"{checkpoint} --output_dir MERGED`)")
    if fixed:
        raise UserError(base + "; ".join(fixed + knowingly) + f". A checkpoint continues the run that wrote it. Ways "
                        f"on: {weights}; or resume with that run's {' and '.join(f.split(' (')[0][8:] for f in fixed)}.")
    if knowingly and not ignore_data_skip:
        raise UserError(base + "; ".join(knowingly) + ". Resuming would skip as many batches as the old run had "
                        f"seen, of data laid out otherwise. Ways on: {weights}; or accept the change knowingly "
                        "with --ignore_data_skip true (the optimizer and schedule go on from the checkpoint's step; "
                        "the data is read again from its start).")
    if knowingly:
        log.warning("Resuming from %s with %s: accepted (--ignore_data_skip); the data is read from its start.",
                    checkpoint, "; ".join(knowingly))
