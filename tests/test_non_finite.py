"""The NaN guard tells weights from data: a poisoned row keeps the last good checkpoint and is named at its
FILE:LINE; weights blown up by the learning rate lose the checkpoint that holds them; a float16 overflow is named
as such. Killed runs leave no scratch data behind (the next run removes it; a live run's is never touched)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch

from conftest import ENV, ROOT, log_history, run_main, write_jsonl

BASE = ["--rlhf_type", "sft", "--max_length", "64", "--gradient_checkpointing", "false", "--seed", "0",
        "--disable_tqdm", "true", "--logging_steps", "1", "--per_device_train_batch_size", "2",
        "--train_sampling_strategy", "sequential"]
POISONED = 7  # index of the poisoned row: line 8 of the file, the second row of step 4's batch


def _rows(n=12):
    rows = [{"prompt": f"What is {a}+{a + 1}? ", "completion": f"{2 * a + 1}"} for a in range(n)]
    rows[POISONED]["completion"] = "@@@"
    return rows


def _poison(src, dst, token: int | None = None, head_scale: float | None = None):
    """A copy of the tiny model with one input embedding set to inf, or its output head scaled."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(dst / "model.safetensors")
    if token is not None:
        key = next(k for k in weights if k.endswith("embed_tokens.weight"))
        weights[key][token] = float("inf")
    if head_scale is not None:
        weights["lm_head.weight"] *= head_scale
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _unique_token(tiny_dir, rows, index: int = POISONED) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    ids = [set(tok(r["prompt"] + r["completion"])["input_ids"]) for r in rows]
    counts = Counter(t for s in ids for t in s)
    only = [t for t in ids[index] if counts[t] == 1]
    assert only, "no token appears in the poisoned row alone"
    return only[0]


def _kept(out):
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


def test_poisoned_row_keeps_the_good_checkpoint_and_is_named(tiny_dir, tmp_path, capsys):
    rows = _rows()
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    model = _poison(tiny_dir, tmp_path / "model", token=_unique_token(tiny_dir, rows))
    out = tmp_path / "out"
    rc = run_main(*BASE, "--train_mode", "full", "--model_name_or_path", model, "--train_data_path", data,
                  "--output_dir", out, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "1",
                  "--save_total_limit", "10",
                  "--learning_rate", "1e-4")
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    assert "caused by the data" in err and f"{data}:{POISONED + 1}" in err, err
    assert f"{data}:{POISONED}," not in err and f"{data}:{POISONED}." not in err  # the batch's clean row is not named
    assert _kept(out) == [1, 2, 3], _kept(out)  # every checkpoint before step 4 kept, none written after
    assert f"--resume_from_checkpoint {out / 'checkpoint-3'}" in err, err
    assert not (out / "model.safetensors").exists()
    # The evidence holds: the kept weights give a finite loss on every clean row, and not on the poisoned one.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    net, tok = AutoModelForCausalLM.from_pretrained(out / "checkpoint-3"), AutoTokenizer.from_pretrained(tiny_dir)
    with torch.no_grad():
        losses = [net(**(ids := tok(r["prompt"] + r["completion"], return_tensors="pt")),
                      labels=ids["input_ids"]).loss.item() for r in rows]
    assert [i for i, v in enumerate(losses) if not math.isfinite(v)] == [POISONED], losses


def test_blown_up_weights_lose_their_checkpoint(tiny_dir, tmp_path, capsys):
    rows = _rows()
    rows[POISONED]["completion"] = "15"
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    out = tmp_path / "out"
    rc = run_main(*BASE, "--train_mode", "full", "--model_name_or_path", tiny_dir, "--train_data_path", data,
                  "--output_dir", out, "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "1",
                  "--save_total_limit", "10",
                  "--learning_rate", "1e30", "--max_grad_norm", "0")
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    failed = next(h["step"] for h in log_history(out) if "loss" in h and not math.isfinite(h.get("grad_norm", 0)))
    assert "the weights give a non-finite loss on the last batch" in err and "caused by the data" not in err, err
    # The first step's weights already give NaN at step 2: their checkpoint goes, and none is left.
    assert failed == 2 and _kept(out) == [], (_kept(out), failed)
    assert "were removed (checkpoint-1)" in err and "No checkpoint from before it was kept" in err, err
    assert "--learning_rate" in err, err


def test_float16_overflow_is_told_apart(tiny_dir, tmp_path, capsys):
    """Logits past float16's range (65504) in every row: not finite in float16, finite in fp32."""
    data = write_jsonl(tmp_path / "train.jsonl", _rows())
    model = _poison(tiny_dir, tmp_path / "model", head_scale=5e5)
    out = tmp_path / "out"
    rc = run_main(*BASE, "--train_mode", "lora", "--dtype", "float16", "--bf16", "false", "--model_name_or_path", model,
                  "--train_data_path", data, "--output_dir", out, "--max_steps", "3", "--save_strategy", "no")
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    assert "half precision (float16)" in err and "--bf16 true" in err, err
    assert "caused by the data" not in err and "weights give a non-finite" not in err, err


# ------------------------------------------------------------------------------------------- scratch data
def _scratch_dirs(tmp):
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("rlhf-data-"))


def test_killed_run_leaves_no_scratch_data(tiny_dir, tmp_path):
    """SIGKILL a run mid-training: its scratch folder stays (no exit handler ran) until the next run removes it;
    a live process's folder and another host's are left alone."""
    scratch_tmp = tmp_path / "tmp"
    scratch_tmp.mkdir()
    env = dict(ENV, TMPDIR=str(scratch_tmp), OMP_NUM_THREADS="1")
    data = write_jsonl(tmp_path / "train.jsonl", _rows(64))
    from utils.data.arrow_sink import host_name

    host = host_name()
    live = scratch_tmp / f"rlhf-data-{host}-{os.getpid()}-live"  # this test's own process: alive
    other = scratch_tmp / "rlhf-data-elsewhere.example-1-other"  # pid 1 on another host: not ours to judge
    live.mkdir(), other.mkdir()
    argv = [sys.executable, str(ROOT / "main_train.py"), *BASE, "--train_mode", "lora", "--model_name_or_path",
            str(tiny_dir), "--train_data_path", str(data), "--max_steps", "500", "--save_strategy", "no"]
    run = subprocess.Popen([*argv, "--output_dir", str(tmp_path / "a")], cwd=ROOT, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in run.stdout:  # kill once training is under way
        if "'loss'" in line:
            break
    mine = [n for n in _scratch_dirs(scratch_tmp) if n.startswith(f"rlhf-data-{host}-{run.pid}-")]
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert len(mine) == 1 and (scratch_tmp / mine[0]).is_dir()  # left behind by the kill
    done = subprocess.run([*argv, "--max_steps", "1", "--output_dir", str(tmp_path / "b")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _scratch_dirs(scratch_tmp) == sorted([live.name, other.name])  # the killed one's gone, the second's too


def test_refusal_and_sigterm_remove_their_scratch_data(tiny_dir, tmp_path):
    scratch_tmp = tmp_path / "tmp"
    scratch_tmp.mkdir()
    env = dict(ENV, TMPDIR=str(scratch_tmp), OMP_NUM_THREADS="1")
    data = write_jsonl(tmp_path / "train.jsonl", _rows(64))
    argv = [sys.executable, str(ROOT / "main_train.py"), *BASE, "--train_mode", "lora", "--model_name_or_path",
            str(tiny_dir), "--train_data_path", str(data)]
    refused = subprocess.run([*argv, "--eval_split", "0.999", "--output_dir", str(tmp_path / "r")], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--eval_split" in refused.stderr, refused.stderr[-2000:]
    assert _scratch_dirs(scratch_tmp) == []
    run = subprocess.Popen([*argv, "--max_steps", "500", "--save_strategy", "no", "--output_dir", str(tmp_path / "t")],
                           cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while not _scratch_dirs(scratch_tmp) and run.poll() is None:
        time.sleep(0.05)
    seen = _scratch_dirs(scratch_tmp)
    run.send_signal(signal.SIGTERM)  # during the check phase or training: either way its folder goes
    run.communicate(timeout=120)
    assert seen and run.returncode in (143, 130), run.returncode
    assert _scratch_dirs(scratch_tmp) == []


@pytest.mark.distributed
def test_two_processes_name_their_own_rows(tiny_dir, tmp_path):
    """DDP, 2 processes x 2 rows, sequential: the process whose batch holds the poisoned row names it, the other
    says another process does; every checkpoint before the failing step is kept."""
    from test_distributed import _free_port

    rows = _rows(16)
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    model = _poison(tiny_dir, tmp_path / "model", token=_unique_token(tiny_dir, rows))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "script/ddp.yaml", "--num_processes",
           "2", "--main_process_port", str(_free_port()), str(ROOT / "main_train.py"), *BASE, "--train_mode", "full",
           "--model_name_or_path", str(model), "--train_data_path", str(data), "--output_dir", str(out),
           "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "10"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(ENV, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=240)
    log = proc.stdout + proc.stderr
    ours = log.split("torch/distributed/elastic")[0]  # before the launcher's own report of a non-zero exit
    assert proc.returncode != 0 and "Traceback" not in ours and "exitcode  : 3" in log, log[-5000:]
    named = [line for line in log.splitlines() if f"{data}:{POISONED + 1} gives a non-finite loss" in line]
    assert len(named) == 1 and "caused by the data" in named[0] and "On process " in named[0], log[-5000:]
    assert "On process 0, another process names the rows" in log, log[-5000:]
    failed = int(named[0].split(" at step ")[1].split(",")[0])
    assert _kept(out) == list(range(1, failed)), (_kept(out), failed)


def _grpo(model, tmp_path, prompts, *extra):
    (tmp_path / "rw.py").write_text("def length(completions, **kw):\n    return [float(len(str(c))) for c in completions]\n")
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in prompts])
    out = tmp_path / "out"
    rc = run_main("--rlhf_type", "grpo", "--train_mode", "full", "--model_name_or_path", model, "--train_data_path",
                  data, "--reward_funcs", f"{tmp_path / 'rw.py'}:length", "--output_dir", out, "--num_generations", "2",
                  "--per_device_train_batch_size", "4", "--max_completion_length", "8", "--max_steps", "4",
                  "--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "10", "--disable_tqdm", "true",
                  "--train_sampling_strategy", "sequential", *extra)
    return rc, out


def test_online_rl_sampling_on_blown_up_weights(tiny_dir, tmp_path, capsys):
    """GRPO samples before any loss: weights blown up by the learning rate fail in torch.multinomial, at step 2.
    The last finite batch re-run on them is not finite: their checkpoint goes."""
    rc, out = _grpo(tiny_dir, tmp_path, [f"What is {a}+1?" for a in range(16)], "--learning_rate", "1e30",
                    "--max_grad_norm", "0")
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    assert "a sampling probability became nan at step 2: the weights give non-finite values" in err, err
    assert _kept(out) == [] and "were removed (checkpoint-1)" in err, err


def test_online_rl_sampling_on_a_poisoned_prompt(tiny_dir, tmp_path, capsys):
    """A prompt of step 2 holds a token whose embedding is inf: the weights give a finite loss on step 1's batch,
    so every checkpoint stays and the prompts are named as the suspects."""
    prompts = [f"What is {a}+1?" for a in range(16)]
    prompts[3] = "What is @@@?"  # step 2 reads prompts 2 and 3 (in order: --shuffle_dataset false)
    rows = [{"prompt": p, "completion": ""} for p in prompts]
    model = _poison(tiny_dir, tmp_path / "model", token=_unique_token(tiny_dir, rows, index=3))
    rc, out = _grpo(model, tmp_path, prompts, "--learning_rate", "1e-5", "--shuffle_dataset", "false")
    err = capsys.readouterr().err
    assert rc == 3 and "Traceback" not in err, err
    assert "at step 2, while sampling completions" in err and "Check the prompts of that step" in err, err
    assert _kept(out) == [1] and f"--resume_from_checkpoint {out / 'checkpoint-1'}" in err, err
