"""Rejection sampling: the three output files agree with each other; a run interrupted midway (stopped by
--max_prompts with a torn line and a half-written prompt left behind, or really killed with SIGKILL)
and resumed gives byte-identical files to an uninterrupted run; an adapter directory samples like its
merged model; failing reward functions and bad flags are one-paragraph errors with exit code 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENV, ROOT, addition_pairs, run_cli, write_jsonl

REWARDS = '''
import time

def _text(c):
    return c if isinstance(c, str) else c[0]["content"]

def length(prompts, completions, answer, **kw):  # `answer` is a column of the prompt file
    assert len(answer) == len(completions)
    return [float(len(_text(c))) for c in completions]

def slow_length(prompts, completions, **kw):
    time.sleep(0.3)
    return [float(len(_text(c))) for c in completions]

def broken(prompts, completions, **kw):
    raise KeyError("answer")
'''
FILES = ("samples.jsonl", "best.jsonl", "pairs.jsonl")


@pytest.fixture(scope="module")
def rs_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rs")
    (d / "rewards.py").write_text(REWARDS)
    write_jsonl(d / "chat.jsonl", [{"prompt": r["prompt"], "answer": r["chosen"][0]["content"]}
                                   for r in addition_pairs(9, seed=1)])
    write_jsonl(d / "plain.jsonl", [{"prompt": r["prompt"]} for r in addition_pairs(12, seed=2, conversational=False)])
    return d


def _args(model, data, out, reward, *extra):
    return ["--model_name_or_path", str(model), "--train_data_path", str(data), "--output_dir", str(out),
            "--reward_funcs", reward, "--num_samples", "4", "--max_new_tokens", "10", "--batch_size", "2",
            "--seed", "0", *extra]


def _sample(*args) -> int:
    from utils.sampling import rejection as rejection_sampling

    return rejection_sampling.main([str(a) for a in args])


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _same_files(a: Path, b: Path):
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_outputs_consistent_and_resume(tiny_dir, rs_data, tmp_path):
    reward = f"{rs_data / 'rewards.py'}:length"
    extra = ("--min_score", "25", "--min_margin", "5")
    full = tmp_path / "full"
    assert _sample(*_args(tiny_dir, rs_data / "chat.jsonl", full, reward, *extra)) == 0

    samples, best, pairs = (_read(full / n) for n in FILES)
    assert len(samples) == 9 * 4 and [(r["index"], r["sample"]) for r in samples] == [(i, j) for i in range(9)
                                                                                       for j in range(4)]
    kept_best = kept_pairs = 0
    for i in range(9):
        group = samples[4 * i:4 * i + 4]
        for r in group:  # conversational prompt -> conversational completion, scored by the reward function
            assert r["completion"][0]["role"] == "assistant" and r["prompt"] == group[0]["prompt"]
            assert r["score"] == r["rewards"]["length"] == len(r["completion"][0]["content"])
        top = max(group, key=lambda r: r["score"])
        low = min(group, key=lambda r: r["score"])
        if top["score"] >= 25:
            assert best[kept_best] == {"prompt": top["prompt"], "completion": top["completion"]}
            kept_best += 1
        if top["score"] - low["score"] >= 5:
            assert pairs[kept_pairs] == {"prompt": top["prompt"], "chosen": top["completion"],
                                         "rejected": low["completion"]}
            kept_pairs += 1
    assert (kept_best, kept_pairs) == (len(best), len(pairs)) and 0 < len(pairs)
    summary = json.loads((full / "summary.json").read_text())
    assert summary["score"]["n"] == 36 and summary["best_rows"] == len(best) and summary["pair_rows"] == len(pairs)

    # Interrupted: 3 prompts (mid-way through the second chunk of 2), then the leftovers of a kill in the middle
    # of writing: two whole lines of prompt 3 and half a line of its third sample.
    part = tmp_path / "part"
    assert _sample(*_args(tiny_dir, rs_data / "chat.jsonl", part, reward, *extra, "--max_prompts", "3")) == 0
    assert len(_read(part / "samples.jsonl")) == 12
    lines = (full / "samples.jsonl").read_text().splitlines(keepends=True)
    with open(part / "samples.jsonl", "a") as f:
        f.write(lines[12] + lines[13] + lines[14][:40])
    assert _sample(*_args(tiny_dir, rs_data / "chat.jsonl", part, reward, *extra)) == 0
    _same_files(full, part)
    assert _sample(*_args(tiny_dir, rs_data / "chat.jsonl", part, reward, *extra)) == 0  # all done: nothing changes
    _same_files(full, part)
    # Other sampling settings in the same output_dir are refused (a resumed run must sample the same way).
    assert _sample(*_args(tiny_dir, rs_data / "chat.jsonl", part, reward, *extra, "--num_samples", "3")) == 2


def test_resume_after_sigkill(tiny_dir, rs_data, tmp_path):
    reward = f"{rs_data / 'rewards.py'}:slow_length"
    data = rs_data / "plain.jsonl"
    full = tmp_path / "full"
    assert _sample(*_args(tiny_dir, data, full, reward)) == 0
    assert isinstance(_read(full / "best.jsonl")[0]["completion"], str)  # plain prompts -> plain completions

    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "utils.rejection_sampling", *_args(tiny_dir, data, killed, reward)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples, deadline = killed / "samples.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_text().count("\n") >= 8:  # two prompts done
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 8 <= samples.read_text().count("\n") < 48  # killed midway
    assert _sample(*_args(tiny_dir, data, killed, reward)) == 0
    _same_files(full, killed)


def test_adapter_samples_like_its_merged_model(tiny_dir, rs_data, tmp_path):
    from test_merge import _adapter

    from utils.model import merge

    adapter = _adapter(tiny_dir, tmp_path / "adapter", "causal")
    merged = tmp_path / "merged"
    assert merge.main(["--base", str(tiny_dir), "--adapter", str(adapter), "--output", str(merged)]) == 0
    reward = f"{rs_data / 'rewards.py'}:length"
    assert _sample(*_args(adapter, rs_data / "chat.jsonl", tmp_path / "a", reward, "--max_prompts", "2")) == 0
    assert _sample(*_args(merged, rs_data / "chat.jsonl", tmp_path / "m", reward, "--max_prompts", "2")) == 0
    a, m = _read(tmp_path / "a" / "samples.jsonl"), _read(tmp_path / "m" / "samples.jsonl")
    assert [r["completion"] for r in a] == [r["completion"] for r in m]
    base = tmp_path / "b"
    assert _sample(*_args(tiny_dir, rs_data / "chat.jsonl", base, reward, "--max_prompts", "2")) == 0
    assert [r["completion"] for r in _read(base / "samples.jsonl")] != [r["completion"] for r in a]


def test_errors(tiny_dir, rs_data, tmp_path, capsys):
    proc = run_cli(*_args(tiny_dir, rs_data / "chat.jsonl", tmp_path / "x", f"{rs_data / 'rewards.py'}:broken"),
                   module="utils.rejection_sampling", check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken" in errors[0] and "KeyError" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr

    assert _sample("--model_name_or_path", tiny_dir, "--train_data_path", rs_data / "chat.jsonl",
                   "--output_dir", tmp_path / "y") == 2
    assert "No reward source" in capsys.readouterr().err
    assert _sample(*_args(tiny_dir, rs_data / "missing.jsonl", tmp_path / "y", "m:f")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert _sample(*_args(tiny_dir, rs_data / "chat.jsonl", tmp_path / "y", "m:f", "--num_samples", "0")) == 2
    assert not (tmp_path / "y").exists()
