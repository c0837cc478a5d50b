"""Long runs on shared machines: one run per output_dir (utils/runtime/run_dir.py), and resume that refuses another
run's data or layout and finds its own checkpoint (utils/runtime/resume.py). Saves that are whole or absent:
tests/test_saving.py."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ENV, ROOT, complete_checkpoints, log_history, long_run_argv, run_main, write_jsonl

pytestmark = pytest.mark.usefixtures("main_train_info")


def _popen(argv, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "main_train.py"), *map(str, argv)], cwd=ROOT,
                            env=dict(ENV, OMP_NUM_THREADS="1"), text=True, **kw)


def _wait_for(path, proc, timeout=120):
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {path} appeared"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------- one run per output_dir
def test_second_run_on_a_live_runs_output_dir_is_refused_and_a_killed_runs_lock_taken_over(tiny_dir, data_dir,
                                                                                            tmp_path, capsys, caplog):
    out = tmp_path / "o"
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--save_strategy", "no")
    first = _popen([*argv, "--max_steps", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / ".rlhf-run.lock", first)
        assert run_main(*argv, "--max_steps", "1") == 2
        err = capsys.readouterr().err
        assert f"is in use by another run: process {first.pid} on host" in err and "--output_dir" in err, err
        assert "Traceback" not in err
    finally:
        first.kill()  # SIGKILL: no exit handler runs, the lock stays
        first.wait()
    assert (out / ".rlhf-run.lock").exists()
    assert run_main(*argv, "--max_steps", "1") == 0
    assert f"process {first.pid} no longer exists" in caplog.text
    assert not (out / ".rlhf-run.lock").exists()  # released at the end


def test_locks_of_other_hosts_and_of_a_requeued_job(tiny_dir, data_dir, tmp_path, capsys, monkeypatch):
    from utils.runtime.run_dir import LOCK, STALE_S

    out = tmp_path / "o"
    out.mkdir()
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--save_strategy", "no", "--max_steps", "1")
    lock = out / LOCK
    lock.write_text(json.dumps({"run": "r", "host": "node7", "pid": 4242, "slurm_job": "99", "slurm_restart": 0,
                                "command": "python main_train.py --rlhf_type DPO"}))
    assert run_main(*argv) == 2  # another host, heartbeat fresh: alive
    err = capsys.readouterr().err
    assert "process 4242 on host node7 (SLURM job 99)" in err and "python main_train.py --rlhf_type DPO" in err, err
    monkeypatch.setenv("SLURM_JOB_ID", "99")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # the same job, requeued: its earlier start is gone
    assert run_main(*argv) == 0 and not lock.exists()
    monkeypatch.delenv("SLURM_JOB_ID")
    lock.write_text(json.dumps({"run": "r", "host": "node7", "pid": 4242}))
    os.utime(lock, (time.time() - STALE_S - 5,) * 2)  # heartbeat stopped: taken over
    assert run_main(*argv, "--overwrite_output_dir", "true") == 0 and not lock.exists()
    unwritable = argv[:argv.index("--output_dir") + 1] + ["/proc/rlhf-lite-test/o"] + argv[argv.index("--output_dir") + 2:]
    assert run_main(*unwritable) == 2
    assert "--output_dir /proc/rlhf-lite-test/o cannot be written: " in capsys.readouterr().err


def test_another_runs_output_dir_is_refused_unless_overwritten(tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "o"
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--save_steps", "1", "--max_steps", "2")
    assert run_main(*argv) == 0
    before = sorted(os.listdir(out))
    assert run_main(*argv) == 2
    err = capsys.readouterr().err
    assert "already holds another run's checkpoint-1, checkpoint-2, adapter_config.json" in err, err
    assert "--overwrite_output_dir true" in err and "--resume_from_checkpoint" in err
    assert sorted(os.listdir(out)) == before  # the refused run changed nothing
    assert run_main(*argv[:-4], "--save_steps", "3", "--max_steps", "3", "--overwrite_output_dir", "true") == 0
    assert sorted(complete_checkpoints(out)) == [3]  # the old run's checkpoints are gone, not mixed with the new one's


# ------------------------------------------------------------------------------------- resume
def test_sigkill_after_a_checkpoint_then_the_same_command_ends_with_the_same_weights(tiny_dir, data_dir, tmp_path,
                                                                                     caplog):
    from safetensors.torch import load_file

    killed, whole = tmp_path / "killed", tmp_path / "whole"
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", killed, "--save_steps", "4", "--max_steps", "24",
                 "--resume_from_checkpoint", "auto")
    run = _popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(killed / "checkpoint-4", run)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not (killed / "adapter_model.safetensors").exists(), "the run finished before it was killed"
    assert run_main(*argv) == 0  # the identical command
    resumed = re.search(r"resuming from .*checkpoint-(\d+)\.", caplog.text)
    assert resumed and int(resumed.group(1)) in (4, 8, 12, 16, 20), caplog.text
    assert run_main(*argv[:argv.index("--output_dir")], "--output_dir", whole,
                    *argv[argv.index("--output_dir") + 2:]) == 0
    a, b = (load_file(d / "adapter_model.safetensors") for d in (killed, whole))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_resume_refuses_other_data_method_model_or_layout(tiny_dir, data_dir, tmp_path, capsys, caplog):
    from utils.toy.tiny_model import make_tiny

    data = write_jsonl(tmp_path / "d.jsonl", [json.loads(x) for x in (data_dir / "pref.jsonl").read_text().split("\n")
                                              if x])
    out = tmp_path / "o"
    argv = long_run_argv(tiny_dir, data, out, "--save_steps", "2", "--max_steps", "2")
    assert run_main(*argv) == 0
    latest = [*argv[:-2], "--max_steps", "4", "--resume_from_checkpoint", "latest"]

    def refused(*extra):
        assert run_main(*latest, *extra) == 2
        return capsys.readouterr().err

    with open(data, "a") as f:
        f.write(data.read_text().splitlines()[0] + "\n")
    err = refused()
    assert f"Cannot resume from {out / 'checkpoint-2'}: this run has other training data ({data} (" in err, err
    assert "--ignore_data_skip true" in err and f"--model_name_or_path {out / 'checkpoint-2'}" in err
    err = refused("--per_device_train_batch_size", "2")
    assert "another batch layout (--per_device_train_batch_size 4 then, 2 now)" in err, err
    err = refused("--rlhf_type", "ORPO")
    assert "another method (DPO then, ORPO now)" in err and "--ignore_data_skip" not in err.split("Ways on")[1], err
    other = make_tiny(str(tmp_path / "other"), hidden_size=48)
    err = refused("--model_name_or_path", other)
    assert "another model (" in err and "its config or weights differ" in err, err
    assert sorted(complete_checkpoints(out)) == [2]  # nothing written by the refused runs
    # Accepted knowingly, and harmless changes: logging, saving, a longer run
    assert run_main(*latest, "--ignore_data_skip", "true", "--logging_steps", "2", "--save_steps", "3") == 0
    assert "accepted (--ignore_data_skip)" in caplog.text
    assert log_history(out)[-1]["step"] == 4


def test_latest_and_auto(tiny_dir, data_dir, tmp_path, capsys, caplog, monkeypatch):
    out = tmp_path / "o"
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--save_steps", "2", "--max_steps", "4")
    assert run_main(*argv, "--resume_from_checkpoint", "latest") == 2
    assert "holds no complete checkpoint" in capsys.readouterr().err and not out.exists()
    assert run_main(*argv, "--resume_from_checkpoint", "auto") == 0
    assert "no checkpoint in" in caplog.text and sorted(complete_checkpoints(out)) == [2, 4]
    # a torn checkpoint (a run of an older version killed mid-save) and a killed run's staging folder
    (out / "checkpoint-6").mkdir()
    (out / ".saving" / "checkpoint-8").mkdir(parents=True)
    assert run_main(*argv, "--max_steps", "5", "--resume_from_checkpoint", "latest") == 0
    assert "skipped checkpoint-6 (incomplete: no trainer_state.json and no model or adapter weights)" in caplog.text
    assert f"resuming from {out / 'checkpoint-4'}" in caplog.text and "removed .saving/checkpoint-8" in caplog.text
    assert run_main(*argv, "--max_steps", "5", "--resume_from_checkpoint", "auto") == 0  # finished: nothing to do
    assert "nothing left to train" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latest").mkdir()
    assert run_main(*argv, "--resume_from_checkpoint", "latest") == 2
    assert "could mean the newest checkpoint in --output_dir or the directory ./latest" in capsys.readouterr().err


@pytest.mark.distributed
def test_one_of_two_ddp_processes_killed(tiny_dir, data_dir, tmp_path):
    """SIGKILL to one worker of `accelerate launch --num_processes 2`: every process ends within 60 s, the
    checkpoints left are complete, and the same command (auto) resumes from the last one."""
    import psutil

    out = tmp_path / "o"
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--per_device_train_batch_size", "2", "--save_steps", "2",
                 "--max_steps", "400", "--resume_from_checkpoint", "auto")
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "script/ddp.yaml",
              "--num_processes", "2", "main_train.py"]
    env = dict(ENV, OMP_NUM_THREADS="1")
    run = subprocess.Popen([*launch, *map(str, argv)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(out / "checkpoint-2", run, timeout=300)
        workers = [p for p in psutil.Process(run.pid).children(recursive=True) if "main_train.py" in " ".join(p.cmdline())]
        assert len(workers) == 2, workers
        killed_at = time.monotonic()
        workers[1].kill()
        run.wait(timeout=60)
        psutil.wait_procs(workers, timeout=max(1.0, 60 - (time.monotonic() - killed_at)))
        assert time.monotonic() - killed_at < 60 and not any(w.is_running() for w in workers)
    finally:
        os.killpg(run.pid, signal.SIGKILL) if run.poll() is None else None
    last = max(complete_checkpoints(out))
    resume = subprocess.run([*launch, *map(str, argv[:-4]), "--max_steps", str(last + 2), *argv[-2:]], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert resume.returncode == 0, resume.stderr[-4000:]
    assert f"resuming from {out / f'checkpoint-{last}'}" in resume.stderr, resume.stderr[-4000:]
    assert not (out / ".rlhf-run.lock").exists()  # released (or, had the launcher died with it, taken over)
    assert (out / "adapter_model.safetensors").exists() and log_history(out)[-1]["step"] == last + 2
