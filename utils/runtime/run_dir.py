"""One run per output_dir. A run holds its output_dir from the end of the check phase to its exit with a lock file,
`output_dir/.rlhf-run.lock`, naming the host, the process and the command. A second run on a held output_dir is
refused (exit 2) naming the live one; a lock whose run is gone is taken over:

- on this host, when its process (the launcher's, under `accelerate launch` / torchrun) no longer exists, as scratch
  folders are reclaimed (utils/data/arrow_sink.reclaim);
- written by an earlier start of the same SLURM job (a requeued job: same SLURM_JOB_ID, higher SLURM_RESTART_COUNT);
- on another host, when its heartbeat (the holder touches the file every 30 s) is more than 5 minutes old.

Every process of a launched run shares one lock (the same MASTER_ADDR, MASTER_PORT and TORCHELASTIC_RUN_ID); the first
process writes it and removes it at exit (main_train.main's `finally`, and the exit handlers). A new run into an
output_dir that holds another run's checkpoints or final model is refused unless it resumes or
--overwrite_output_dir is given (the old checkpoints and final files are then removed when training starts)."""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import threading
import time
import uuid

from utils.core.errors import UserError
from utils.runtime.outputs import STAGING

log = logging.getLogger("main_train")
LOCK = ".rlhf-run.lock"
HEARTBEAT_S, STALE_S = 30, 300
# What a finished run leaves at the top of output_dir (besides checkpoint-N): a model, an adapter, its state.
FINAL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "adapter_config.json",
               "adapter_model.safetensors", "trainer_state.json")
_HELD: list = []  # [(lock path, run id, stop event)] of this process


def identity() -> dict:
    """Who this run is: its run id (shared by the processes of one launch), host, the process whose life is the
    run's (the launcher under `accelerate launch` / torchrun), the SLURM job if any."""
    from utils.core.distributed import launched
    from utils.data.arrow_sink import host_name

    host = host_name()
    if launched():
        pid = os.getppid()
        master = os.environ.get("MASTER_ADDR", "127.0.0.1")  # a local address names no run across hosts: add ours
        run = ":".join(["launch", host if master in ("127.0.0.1", "localhost") else "", master,
                        *(os.environ.get(k, "") for k in ("MASTER_PORT", "TORCHELASTIC_RUN_ID"))])
    else:
        pid, run = os.getpid(), f"{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return {"run": run, "host": host, "pid": pid, "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": " ".join(sys.argv)}


def _read(path: str) -> dict | None:
    try:
        with open(path) as f:
            return {**json.load(f), "mtime": os.path.getmtime(path)}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # unreadable or torn: written by something else; its age decides
        return {"run": None, "host": None, "pid": None, "mtime": os.path.getmtime(path)}


def gone(other: dict, me: dict) -> str | None:
    """Why the run that wrote lock `other` is over (a phrase), or None while it may be alive."""
    from utils.data.arrow_sink import _alive

    if other.get("host") == me["host"] and other.get("pid") is not None:
        if other["pid"] == os.getpid() and other.get("run") != me["run"]:
            return "an earlier run of this process that did not release it"
        return None if _alive(int(other["pid"])) else f"process {other['pid']} no longer exists"
    if me["slurm_job"] and other.get("slurm_job") == me["slurm_job"] and \
            int(other.get("slurm_restart") or 0) < me["slurm_restart"]:
        return f"an earlier start of SLURM job {me['slurm_job']} (requeued)"
    age = time.time() - other["mtime"]
    return f"its heartbeat stopped {age / 60:.0f} minutes ago" if age > STALE_S else None


def hold(output_dir: str) -> None:
    """Take output_dir for this run (the first process writes the lock; the others check it). UserError when a live
    run holds it."""
    from utils.core.distributed import first_process
    from utils.data.arrow_sink import _alive

    me, path = identity(), os.path.join(output_dir, LOCK)
    for _ in range(5):
        other = _read(path)
        if other is not None and other.get("run") == me["run"]:
            if not (first_process() and other.get("host") == me["host"] and other.get("pid") not in (None, me["pid"])
                    and not _alive(int(other["pid"]))):
                return  # another process of this launch wrote it (its launcher may be another: --nnodes on one host)
            other["run"] = None  # an earlier launch with the same address and port, now gone
        if other is not None:
            why = gone(other, me)
            if why is None:
                raise UserError(_held(output_dir, path, other))
            if not first_process():
                return
            log.info("%s: taking over the lock of a run that ended without releasing it (%s).", output_dir, why)
            _remove(path)
        if not first_process():
            return
        try:
            created = _create(output_dir, path, me)
        except OSError as e:  # not writable, a full disk, a read-only file system
            raise UserError(f"--output_dir {output_dir} cannot be written: {e}. Give a directory this user can "
                            "write to, on a disk with free space.") from None
        if created:
            stop = threading.Event()
            _HELD.append((path, me["run"], stop))
            threading.Thread(target=_heartbeat, args=(path, stop), daemon=True, name="rlhf-lock-heartbeat").start()
            if len(_HELD) == 1:  # once per process is enough: release() empties the list
                atexit.unregister(release)
                atexit.register(release)
            return
    raise UserError(f"--output_dir {output_dir}: could not take its lock file {path} (another run keeps taking it); "
                    "give this run another --output_dir.")


def _create(output_dir: str, path: str, me: dict) -> bool:
    """Write the lock whole under a temporary name, then link it into place: False if one appeared meanwhile."""
    os.makedirs(output_dir, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(me, f)
    try:
        os.link(tmp, path)  # atomic, and fails if the lock exists
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    finally:
        _remove(tmp)


def _held(output_dir: str, path: str, other: dict) -> str:
    age = time.time() - other["mtime"]
    who = (f"process {other.get('pid')} on host {other.get('host')}" +
           (f" (SLURM job {other['slurm_job']})" if other.get("slurm_job") else "") +
           (f", started {other['started']}" if other.get("started") else ""))
    command = f"; its command: {other['command']}" if other.get("command") else ""
    return (f"--output_dir {output_dir} is in use by another run: {who}{command}. Its lock file {path} was last "
            f"touched {age:.0f} s ago. Two runs in one output_dir overwrite each other's checkpoints: give this run "
            "another --output_dir, or wait until that run ends. A lock whose run is gone is taken over by itself (on "
            f"this host at once, from another host {STALE_S // 60} minutes after its last heartbeat); if you know "
            f"that run is gone, delete {path}.")


def _heartbeat(path: str, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            os.utime(path)
        except OSError:
            return


def release() -> None:
    """Remove this process's lock (every exit path; a no-op when it holds none, and for a lock no longer ours)."""
    while _HELD:
        path, run, stop = _HELD.pop()
        stop.set()
        other = _read(path)
        if other is not None and other.get("run") == run:
            _remove(path)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------------ what output_dir holds
def previous_run(output_dir: str) -> list[str]:
    """The names of another run's checkpoints and final-model files in output_dir."""
    if not os.path.isdir(output_dir):
        return []
    from utils.runtime.outputs import checkpoints

    found = [os.path.basename(p) for _, p in sorted(checkpoints(output_dir).items())]
    return found + [f for f in FINAL_FILES if os.path.isfile(os.path.join(output_dir, f))]


def check_fresh_start(output_dir: str, overwrite: bool) -> None:
    """A run that does not resume starts in an output_dir without another run's checkpoints or final model."""
    found = previous_run(output_dir)
    if found and not overwrite:
        shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        raise UserError(f"--output_dir {output_dir} already holds another run's {shown}. A new run there would mix "
                        "its checkpoints and final model with those. Resume that run (--resume_from_checkpoint "
                        "latest, or auto to start fresh when there is no checkpoint), give another --output_dir, or "
                        "pass --overwrite_output_dir true to replace them (they are deleted when training starts).")


def clear_previous_run(output_dir: str) -> None:
    """--overwrite_output_dir: another run's checkpoints and final files go, once the model is built."""
    from utils.core.distributed import first_process

    found = previous_run(output_dir)
    if found and first_process():
        for name in found:
            target = os.path.join(output_dir, name)
            shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
        log.info("--overwrite_output_dir: removed the previous run's %s from %s.", ", ".join(found), output_dir)


def clear_staging(output_dir: str) -> None:
    """What a killed run left half-written (it never became a checkpoint-N); this run holds the lock."""
    from utils.core.distributed import first_process

    staging = os.path.join(output_dir, STAGING)
    if first_process() and os.path.isdir(staging):
        left = sorted(os.listdir(staging))
        shutil.rmtree(staging, ignore_errors=True)
        if left:
            log.info("%s: removed %s, left half-written by a run that was stopped while saving.", output_dir,
                     ", ".join(f"{STAGING}/{n}" for n in left))


def claim(method, common, config) -> dict:
    """The check phase's last step, once every other check passed: hold output_dir, pick the checkpoint to resume
    (`latest` / `auto`), compare its record with this run, refuse another run's leftovers, warn of a small disk.
    Returns this run's record, written into each of its checkpoints."""
    from utils.runtime import resume
    from utils.runtime.saving import warn_if_disk_small

    hold(config.output_dir)
    clear_staging(config.output_dir)
    asked = (config.resume_from_checkpoint or "").lower()
    config.resume_from_checkpoint = resume.resolve(config.resume_from_checkpoint, config.output_dir)
    record = resume.fingerprint(method, common, config)
    if config.resume_from_checkpoint:
        resume.check_resume(config.resume_from_checkpoint, record, config.ignore_data_skip)
    if asked in resume.WORDS:
        resume.check_finished(config.output_dir, config.resume_from_checkpoint, config)
    if not config.resume_from_checkpoint:
        check_fresh_start(config.output_dir, common.overwrite_output_dir)
    warn_if_disk_small(common, config)
    return record


def start(trainer, argv: list[str], record: dict, overwrite: bool) -> None:
    """Just before training: another run's leftovers cleared (--overwrite_output_dir, when not resuming), and every
    checkpoint written whole or not at all with this run's record (utils/runtime/saving.py)."""
    from utils.runtime.saving import atomic_checkpoints

    if overwrite and not trainer.args.resume_from_checkpoint:
        clear_previous_run(trainer.args.output_dir)
    atomic_checkpoints(trainer, argv, record)
