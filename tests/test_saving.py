"""Saves that are whole or absent (utils/runtime/saving.py): a save that fails, on a real full disk or an injected
ENOSPC, leaves only complete checkpoints and one paragraph (exit 4); the check phase warns when the disk cannot hold
one checkpoint."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
import torch

from conftest import complete_checkpoints, log_history, long_run_argv, run_main

pytestmark = pytest.mark.usefixtures("main_train_info")


def _fill_at(monkeypatch, where: str):
    """Every torch.save into a path containing `where` fails as on a full disk (after writing part of its file)."""
    real = torch.save

    def save(obj, f, *a, **k):
        if isinstance(f, (str, os.PathLike)) and where in str(f):
            with open(f, "wb") as half:
                half.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


def test_a_failing_save_leaves_only_complete_checkpoints(tiny_dir, data_dir, tmp_path, capsys, monkeypatch):
    """Injected ENOSPC (the tmpfs test below fills a real disk): checkpoint-3's optimizer save fails half-way."""
    out = tmp_path / "o"
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--save_steps", "1", "--save_total_limit", "5",
                 "--max_steps", "5", "--resume_from_checkpoint", "auto")
    _fill_at(monkeypatch, "checkpoint-3")
    assert run_main(*argv) == 4
    err = capsys.readouterr().err
    assert "Saving checkpoint-3 into" in err and "the disk is full ([Errno 28] No space left on device)" in err, err
    assert "free now" in err and f"every checkpoint-N in {out} is complete" in err
    assert f"newest complete checkpoint is {out / 'checkpoint-2'}" in err and "--resume_from_checkpoint auto" in err
    assert "Traceback" not in err
    assert sorted(complete_checkpoints(out)) == [1, 2] and not (out / ".saving").exists()
    assert not (out / "adapter_model.safetensors").exists()
    monkeypatch.undo()
    _fill_at(monkeypatch, os.path.join(".saving", "final"))  # room for the checkpoints, not for the final model
    assert run_main(*argv) == 4
    err = capsys.readouterr().err
    assert "Saving the final model into" in err and f"{out / 'checkpoint-5'}" in err, err
    assert sorted(complete_checkpoints(out)) == [1, 2, 3, 4, 5] and not (out / "adapter_model.safetensors").exists()
    monkeypatch.undo()
    assert run_main(*argv) == 0  # disk freed, the same command: resumes from checkpoint-5 and saves the model
    assert (out / "adapter_model.safetensors").exists() and not (out / ".saving").exists()


def _mount_tmpfs(path, size: str) -> bool:
    path.mkdir()
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_a_disk_that_fills_leaves_only_complete_checkpoints(tiny_dir, data_dir, tmp_path, capsys, caplog):
    """A real full disk: output_dir on a 1.2 MB tmpfs, checkpoints of ~0.5 MB (LoRA adapter + optimizer)."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "1200k"):
        pytest.skip("mounting a tmpfs needs root (and a kernel that allows it); the injected-ENOSPC test covers this")
    try:
        out = disk / "o"
        argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--save_steps", "1", "--save_total_limit", "10",
                     "--max_steps", "8", "--resume_from_checkpoint", "auto")
        assert run_main(*argv) == 4
        err = capsys.readouterr().err
        assert "failed: the disk is full (" in err and "Traceback" not in err, err
        kept = complete_checkpoints(out)
        assert kept and f"newest complete checkpoint is {kept[max(kept)]}" in err
        assert not (out / ".saving").exists()  # the half-written checkpoint is gone
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        assert run_main(*argv) == 0
        assert f"resuming from {kept[max(kept)]}" in caplog.text and log_history(out)[-1]["step"] == 8
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_check_phase_warns_when_the_disk_cannot_hold_a_checkpoint(tiny_dir, data_dir, tmp_path, caplog, monkeypatch):
    """The estimate (12 bytes a trained parameter, shapes from the safetensors headers) against a real full-mode
    checkpoint: within 10 %; the LoRA estimate against a LoRA checkpoint's adapter and optimizer state: within 25 %."""
    import shutil

    from utils.runtime import saving

    out = tmp_path / "o"
    argv = long_run_argv(tiny_dir, data_dir / "pref.jsonl", out, "--train_mode", "full", "--save_steps", "1",
                 "--max_steps", "1")
    assert run_main(*argv) == 0 and "one checkpoint of this run takes about" not in caplog.text
    ckpt = out / "checkpoint-1"
    real = sum(os.path.getsize(ckpt / f) for f in ("model.safetensors", "optimizer.pt"))

    estimate = saving.checkpoint_bytes(str(tiny_dir), "full", 16)
    assert abs(estimate - real) / real < 0.10, (estimate, real)
    lora = tmp_path / "lora"
    assert run_main(*long_run_argv(tiny_dir, data_dir / "pref.jsonl", lora, "--save_steps", "1", "--max_steps", "1")) == 0
    real = sum(os.path.getsize(lora / "checkpoint-1" / f) for f in ("adapter_model.safetensors", "optimizer.pt"))
    estimate = saving.checkpoint_bytes(str(tiny_dir), "lora", 16)
    assert abs(estimate - real) / real < 0.25, (estimate, real)
    monkeypatch.setattr(saving.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    assert run_main(*argv, "--overwrite_output_dir", "true") == 0
    assert "has 1000 bytes free; one checkpoint of this run takes about" in caplog.text


