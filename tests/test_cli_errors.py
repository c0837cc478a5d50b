"""User mistakes: one paragraph naming the problem, exit code 2, nothing written to output_dir."""

from __future__ import annotations

import json

import pytest

from conftest import FAST, run_cli, run_main, write_jsonl


def _run_bad(capsys, tmp_path, *args):
    out = tmp_path / "out"
    rc = run_main(*args, "--output_dir", out)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert not out.exists(), "output_dir was created for a bad input"
    assert "Traceback" not in err
    return err


def _base(tiny_dir, data):
    return ["--rlhf_type", "dpo", "--model_name_or_path", tiny_dir, "--train_data_path", data, *FAST]


def test_unknown_flag_suggests(capsys, tmp_path, tiny_dir, data_dir):
    err = _run_bad(capsys, tmp_path, *_base(tiny_dir, data_dir / "pref.jsonl"), "--betta", "0.2")
    assert "--betta" in err and "did you mean --beta" in err


def test_wrong_type(capsys, tmp_path, tiny_dir, data_dir):
    err = _run_bad(capsys, tmp_path, *_base(tiny_dir, data_dir / "pref.jsonl"), "--beta", "high")
    assert "--beta" in err and "high" in err


def test_bad_rlhf_type_lists_methods(capsys, tmp_path, tiny_dir, data_dir):
    err = _run_bad(capsys, tmp_path, "--rlhf_type", "dpp", "--model_name_or_path", tiny_dir,
                   "--train_data_path", data_dir / "pref.jsonl")
    assert "'dpp'" in err and "DPO" in err and "KTO" in err and "SimPO" in err


def test_bad_train_mode(capsys, tmp_path, tiny_dir, data_dir):
    err = _run_bad(capsys, tmp_path, *_base(tiny_dir, data_dir / "pref.jsonl"), "--train_mode", "half")
    assert "'half'" in err and "full, lora, qlora" in err


@pytest.mark.parametrize("rlhf_type", ["cpo", "simpo", "cposimpo", "orpo"])
def test_fp16_refused_for_cpo_family(capsys, tmp_path, tiny_dir, data_dir, rlhf_type):
    err = _run_bad(capsys, tmp_path, "--rlhf_type", rlhf_type, "--model_name_or_path", tiny_dir,
                   "--train_data_path", data_dir / "pref.jsonl", "--fp16", "true", "--use_cpu", "true")
    assert "fp16" in err and "bf16" in err


def test_simpo_with_nll_term_refused(capsys, tmp_path, tiny_dir, data_dir):
    err = _run_bad(capsys, tmp_path, "--rlhf_type", "simpo", "--model_name_or_path", tiny_dir,
                   "--train_data_path", data_dir / "pref.jsonl", "--cpo_alpha", "1.0")
    assert "CPOSimPO" in err and "cpo_alpha" in err


def test_cposimpo_without_nll_term_refused(capsys, tmp_path, tiny_dir, data_dir):
    err = _run_bad(capsys, tmp_path, "--rlhf_type", "cposimpo", "--model_name_or_path", tiny_dir,
                   "--train_data_path", data_dir / "pref.jsonl", "--cpo_alpha", "0")
    assert "SimPO" in err and "cpo_alpha" in err


def test_missing_data_file(capsys, tmp_path, tiny_dir):
    err = _run_bad(capsys, tmp_path, *_base(tiny_dir, tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in err


def test_bad_row_reports_file_and_line(capsys, tmp_path, tiny_dir, data_dir):
    rows = [json.loads(line) for line in (data_dir / "pref.jsonl").read_text().splitlines()[:3]]
    del rows[2]["rejected"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    err = _run_bad(capsys, tmp_path, *_base(tiny_dir, bad))
    assert "bad.jsonl:3" in err and "rejected" in err


def test_conversational_data_without_chat_template(capsys, tmp_path, data_dir):
    from utils.toy.tiny_model import make_tiny

    model = make_tiny(str(tmp_path / "notemplate"), chat_template=False)
    err = _run_bad(capsys, tmp_path, *_base(model, data_dir / "pref.jsonl"))
    assert "chat template" in err


def test_trl_refusal_is_a_user_error(capsys, tmp_path, tiny_dir, data_dir):
    """An option combination TRL itself rejects (exo_pair needs label smoothing) is exit 2, not a traceback."""
    err = _run_bad(capsys, tmp_path, *_base(tiny_dir, data_dir / "pref.jsonl"), "--loss_type", "exo_pair")
    assert "exo_pair" in err or "abel smoothing" in err


def test_cli_exit_code_and_help(tmp_path, tiny_dir, data_dir):
    proc = run_cli("--rlhf_type", "DPO", "--model_name_or_path", tiny_dir, "--train_data_path",
                   data_dir / "pref.jsonl", "--output_dir", tmp_path / "o", "--not_an_option", "1", check=False)
    assert proc.returncode == 2 and "--not_an_option" in proc.stderr and "Traceback" not in proc.stderr
    help_ = run_cli("--rlhf_type", "DPO", "--help")
    for option in ("--beta", "--loss_type", "--train_mode", "--lora_rank", "--use_dora", "--learning_rate",
                   "--precompute_ref_log_probs", "--trust_remote_code"):
        assert option in help_.stdout
    general = run_cli("--help")
    assert "--rlhf_type" in general.stdout and "CPOSimPO" in general.stdout
