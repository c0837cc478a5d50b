"""Distillation (TRL's stable DistillationTrainer, on-policy): trains from the command line in lora and full mode
(with a 4-bit teacher) and reloads; a missing teacher, a teacher with another tokenizer or another number of
embedding rows are refused before any weights load; and learning: the student's divergence to the teacher on
held-out prompts falls. The teacher, the data and the divergence are GKD's (tests/test_gkd.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import test_gkd
from conftest import log_history, run_cli, run_main
from test_gkd import LEARN, _padded, assert_trained_and_reloads, heldout_divergence

# GKD's fixtures: a teacher of another width with the student's tokenizer, the task's rows, that teacher after SFT
teacher_dir, gkd_data, sft_teacher = test_gkd.teacher_dir, test_gkd.gkd_data, test_gkd.sft_teacher

FAST = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--save_strategy", "no", "--seed", "0",
        "--gradient_checkpointing", "false", "--disable_tqdm", "true", "--max_completion_length", "6",
        "--learning_rate", "1e-3"]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_distillation_trains_and_reloads(mode, tiny_dir, teacher_dir, gkd_data, tmp_path):
    out = tmp_path / "out"
    args = ["--rlhf_type", "Distillation", "--train_mode", mode, "--model_name_or_path", tiny_dir,
            "--teacher_model_name_or_path", teacher_dir, "--train_data_path", gkd_data / "train.jsonl",
            "--output_dir", out, *FAST]
    if mode == "lora":  # the real command line once
        run_cli(*args, "--beta", "0.5")
    else:
        assert run_main(*args, "--teacher_load_in_4bit", "true") == 0
    assert_trained_and_reloads(out, tiny_dir, mode)


def test_distillation_refusals(tiny_dir, teacher_dir, gkd_data, tmp_path, capsys):
    """Exit 2, one error line, no output directory; every model's weights file is garbage, so a refusal that came
    after loading weights would read as a load error instead."""
    from utils.toy.tiny_model import make_tiny

    def garbage(path):
        (path / "model.safetensors").write_bytes(b"not a safetensors file")
        return path

    student = garbage(shutil.copytree(tiny_dir, tmp_path / "student"))
    other = garbage(Path(make_tiny(str(tmp_path / "other_tok"), seed=1)))  # another BPE: another vocabulary
    padded = garbage(_padded(teacher_dir, tmp_path / "teacher520", 520))  # the student's tokenizer, 520 rows
    base = ["--rlhf_type", "Distillation", "--train_mode", "lora", "--model_name_or_path", student,
            "--train_data_path", gkd_data / "train.jsonl", *FAST]
    out = tmp_path / "never"
    cases = [([], "--teacher_model_name_or_path is required for Distillation"),
             (["--teacher_model_name_or_path", other], "does not use the student's tokenizer"),
             (["--teacher_model_name_or_path", padded], "has 520 embedding rows"),
             (["--teacher_model_name_or_path", teacher_dir, "--beta", "1.5"], "--beta 1.5 is out of range")]
    for flags, words in cases:
        assert run_main(*base, "--output_dir", out, *flags) == 2, flags
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and words in errors[0], err[-2000:]
        assert "Traceback" not in err and "Could not load" not in err and not out.exists()


def test_distillation_student_moves_to_teacher(tiny_dir, sft_teacher, gkd_data, tmp_path):
    """TRL's default divergence (beta 1: KL(student || teacher) on the student's own samples). Measured before and
    after on held-out rows two ways: KL(teacher || student) per token of the teacher's answers (not what is trained
    on), and TRL's eval loss, the trained divergence on the student's samples of the held-out prompts."""
    student = tmp_path / "student"
    assert run_main("--rlhf_type", "Distillation", "--train_mode", "full", "--model_name_or_path", tiny_dir,
                    "--teacher_model_name_or_path", sft_teacher, "--train_data_path", gkd_data / "train.jsonl",
                    "--eval_data_path", gkd_data / "held.jsonl", "--output_dir", student, "--learning_rate", "3e-3",
                    "--max_steps", "30", "--max_completion_length", "8", "--eval_strategy", "steps",
                    "--eval_steps", "30", "--eval_on_start", "true", *LEARN) == 0
    held = [json.loads(line) for line in (gkd_data / "held.jsonl").read_text().splitlines()]
    before, after = heldout_divergence(tiny_dir, sft_teacher, held), heldout_divergence(student, sft_teacher, held)
    evals = [h["eval_loss"] for h in log_history(student) if "eval_loss" in h]
    print(f"held-out KL(teacher || student) per answer token: {before:.4f} -> {after:.4f}; "
          f"eval KL(student || teacher) on its samples: {evals[0]:.4f} -> {evals[-1]:.4f}")
    assert len(evals) >= 2  # at the start, at step 30 (and main_train's final evaluation)
    assert after < 0.5 * before
    assert evals[-1] < 0.5 * evals[0]
