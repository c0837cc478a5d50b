"""Ctrl-C under `accelerate launch` (2 DDP processes on CPU): the terminal's SIGINT reaches the launcher and both
workers; every process stops at the same step, one checkpoint is saved, and the run resumes from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ENV, ROOT

pytestmark = pytest.mark.distributed


def test_ctrl_c_under_accelerate_launch(tiny_dir, data_dir, tmp_path):
    out = tmp_path / "o"
    common = [str(a) for a in ["--rlhf_type", "DPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
                               "--train_data_path", data_dir / "pref.jsonl", "--output_dir", out,
                               "--per_device_train_batch_size", "2", "--max_length", "64", "--save_strategy", "no",
                               "--disable_tqdm", "true", "--seed", "0"]]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "script/ddp.yaml",
              "--num_processes", "2", "main_train.py"]
    env = dict(ENV, OMP_NUM_THREADS="1")
    run = subprocess.Popen([*launch, *common, "--max_steps", "400"], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)  # its own process group, as a terminal's foreground job
    lines = []
    for line in run.stdout:
        lines.append(line)
        if "'loss'" in line and sum("'loss'" in x for x in lines) >= 4:
            os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group gets it
            break
    log = "".join(lines) + run.communicate(timeout=300)[0]
    checkpoints = sorted(out.glob("checkpoint-*"))
    assert len(checkpoints) == 1, log[-4000:]
    step = int(checkpoints[0].name.split("-")[1])
    assert 0 < step < 400 and log.count(f"Interrupted at step {step}:") == 2, log[-4000:]  # both workers, one step
    assert json.loads((checkpoints[0] / "trainer_state.json").read_text())["global_step"] == step
    resume = [*launch, *common, "--max_steps", str(step + 2), "--resume_from_checkpoint", str(checkpoints[0])]
    proc = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "adapter_model.safetensors").exists()
