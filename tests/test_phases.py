"""Two phases: every kind of check reports its mistake (exit 2, nothing written) before any model weights are read,
with and without the options cache; the checks that need no torch run without importing it; `--config FILE` takes
flag overrides; abbreviated flags and YAML keys are refused; old flag names work with a notice."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ENV, ROOT, run_cli, run_main, write_jsonl

REWARDS = "def length(completions, **kwargs):\n    return [float(len(str(c))) for c in completions]\n"


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """A model of another tokenizer (another vocabulary), for teacher / critic mismatches."""
    from utils.toy.tiny_model import make_tiny

    return make_tiny(str(tmp_path_factory.mktemp("other") / "model"), hidden_size=32, vocab_size=300, seed=3)


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_dir, data_dir):
    d = tmp_path_factory.mktemp("phases")
    (d / "rewards.py").write_text(REWARDS)
    no_weights = d / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_dir / "config.json", no_weights / "config.json")
    half = d / "half_checkpoint"
    half.mkdir()
    (half / "trainer_state.json").write_text("{}")
    (d / "a_file").write_text("not a directory")
    rows = [json.loads(line) for line in (data_dir / "pref.jsonl").read_text().splitlines()[:5]]
    del rows[2]["rejected"]
    write_jsonl(d / "bad.jsonl", rows)
    return d


def _case(kind, tiny_dir, data_dir, files, other_dir):
    """argv and the words the error must contain, for one kind of check."""
    pref, prompts = data_dir / "pref.jsonl", data_dir / "prompts.jsonl"
    dpo = ["--rlhf_type", "DPO", "--model_name_or_path", tiny_dir, "--train_data_path", pref]
    ppo = ["--rlhf_type", "PPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir, "--train_data_path",
           prompts, "--reward_funcs", f"{files / 'rewards.py'}:length"]
    gkd = ["--rlhf_type", "GKD", "--model_name_or_path", tiny_dir, "--train_data_path", data_dir / "sft.jsonl"]
    return {
        "misspelt flag": (dpo + ["--learning_rat", "0.1"], "did you mean --learning_rate"),
        "bad data row": (dpo[:-1] + [files / "bad.jsonl"], "bad.jsonl:3"),
        "reward function import": (["--rlhf_type", "GRPO", "--model_name_or_path", tiny_dir, "--train_data_path",
                                    prompts, "--reward_funcs", "no_such_module_xyz:f"], "importing"),
        "reward weight count": (ppo + ["--reward_weights", "1", "2"], "--reward_weights has 2 values for 1"),
        "reward model without weights": (ppo + ["--reward_model_path", files / "no_weights"], "holds no weights"),
        "teacher tokenizer": (gkd + ["--teacher_model_name_or_path", other_dir], "does not use the student's"),
        "critic tokenizer": (ppo + ["--value_model_path", other_dir], "does not use the policy's tokenizer"),
        "range": (ppo + ["--num_ppo_epochs", "0"], "--num_ppo_epochs must be >= 1"),
        "combination": (["--rlhf_type", "SimPO", "--model_name_or_path", tiny_dir, "--train_data_path", pref,
                         "--cpo_alpha", "1"], "CPOSimPO"),
        "missing model": (["--rlhf_type", "DPO", "--model_name_or_path", files / "nope", "--train_data_path", pref],
                          "does not exist"),
        "model without weights": (["--rlhf_type", "DPO", "--model_name_or_path", files / "no_weights",
                                   "--train_data_path", pref], "holds no weights"),
        "missing checkpoint": (dpo + ["--resume_from_checkpoint", files / "nope"], "does not exist"),
        "half-written checkpoint": (dpo + ["--resume_from_checkpoint", files / "half_checkpoint"],
                                    "not a complete checkpoint"),
    }[kind]


KINDS = ["misspelt flag", "bad data row", "reward function import", "reward weight count",
         "reward model without weights", "teacher tokenizer", "critic tokenizer", "range", "combination",
         "missing model", "model without weights", "missing checkpoint", "half-written checkpoint"]


@pytest.fixture(params=[True, False], ids=["cache", "no-cache"])
def cache(request, monkeypatch):
    """With a current options cache (the checks run before the imports) and without one (after them)."""
    import main_train
    from utils.cli import args as cli

    if request.param:
        if cli.load_cache() is None:
            from rlhf_args import METHODS

            main_train.write_options_cache(METHODS)
        assert cli.load_cache() is not None
    else:
        monkeypatch.setattr(cli, "load_cache", lambda: None)
        monkeypatch.setattr(cli, "save_cache", lambda data: None)
    return request.param


class WeightsRead(BaseException):
    """Not an Exception: no `except Exception` on the way (load_model turns those into UserErrors) can hide it."""


@pytest.fixture
def no_weights_read(monkeypatch):
    """Any weight loading fails the test: the check phase reads configs and tokenizers only."""
    import transformers
    from peft import PeftModel
    from transformers import PreTrainedModel

    def refuse(*args, **kwargs):
        raise WeightsRead("model weights were read during the check phase")

    for cls in (PreTrainedModel, transformers.AutoModelForCausalLM, transformers.AutoModelForSequenceClassification,
                PeftModel):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(refuse))


@pytest.mark.parametrize("kind", KINDS)
def test_check_phase_reports_before_weights(kind, cache, no_weights_read, tiny_dir, data_dir, files, other_dir,
                                            tmp_path, capsys):
    argv, words = _case(kind, tiny_dir, data_dir, files, other_dir)
    out = tmp_path / "out"
    assert run_main(*argv, "--max_steps", "1", "--save_strategy", "no", "--output_dir", out) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err, err
    assert not out.exists()


def test_the_guard_bites(no_weights_read, tiny_dir):
    """The fixture above does catch a weight load (the phase-order tests could not fail otherwise)."""
    from utils.model.loading import load_model, load_tokenizer

    with pytest.raises(WeightsRead, match="weights were read"):
        load_model(str(tiny_dir), load_tokenizer(str(tiny_dir)))


def test_output_dir_that_is_a_file(tiny_dir, data_dir, files, capsys):
    assert run_main("--rlhf_type", "DPO", "--model_name_or_path", tiny_dir, "--train_data_path",
                    data_dir / "pref.jsonl", "--output_dir", files / "a_file") == 2
    assert "is a file" in capsys.readouterr().err


# ------------------------------------------------------------------------ checks without torch
PROBE = ("import sys, main_train\n"
         "try:\n    code = main_train.main(sys.argv[1:])\nexcept SystemExit as e:\n    code = e.code\n"
         "print('TORCH', 'torch' in sys.modules, 'CODE', code)\n")


def test_early_mistakes_import_no_torch(tiny_dir, data_dir, files, tmp_path):
    from rlhf_args import METHODS

    import main_train
    from utils.cli import args as cli

    if cli.load_cache() is None:
        main_train.write_options_cache(METHODS)
    dpo = ["--rlhf_type", "DPO", "--output_dir", str(tmp_path / "o")]
    cases = {"help": (["--help"], 0), "method help": (["--rlhf_type", "DPO", "--help"], 0),
             "misspelt flag": (dpo + ["--model_name_or_path", str(tiny_dir), "--train_data_path",
                                      str(data_dir / "pref.jsonl"), "--learning_rat", "1"], 2),
             "bad row": (dpo + ["--model_name_or_path", str(tiny_dir), "--train_data_path",
                                str(files / "bad.jsonl")], 2),
             "missing model": (dpo + ["--model_name_or_path", str(files / "nope"), "--train_data_path",
                                      str(data_dir / "pref.jsonl")], 2)}
    for name, (argv, code) in cases.items():
        proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True)
        assert f"TORCH False CODE {code}" in proc.stdout, (name, proc.stdout[-500:], proc.stderr[-2000:])


# ------------------------------------------------------------------------------ config files
def _yaml(path, tiny_dir, data_dir, **extra):
    import yaml

    config = {"rlhf_type": "DPO", "train_mode": "lora", "model_name_or_path": str(tiny_dir),
              "train_data_path": str(data_dir / "pref.jsonl"), "output_dir": str(path.parent / "from_yaml"),
              "learning_rate": "1e-3", "beta": 0.3, "lora_target_modules": "q_proj", **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_file_with_overrides(tiny_dir, data_dir, tmp_path):
    import main_train

    run = _yaml(tmp_path / "run.yaml", tiny_dir, data_dir)
    for argv in (["--config", run], [f"--config={run}"], [run]):
        _, common, config = main_train.parse_args([str(a) for a in argv])
        assert (config.learning_rate, config.beta, common.lora_target_modules) == (1e-3, 0.3, ["q_proj"])
        assert config.output_dir == str(tmp_path / "from_yaml") and common.train_mode == "lora"
    _, common, config = main_train.parse_args(["--config", str(run), "--learning_rate", "2e-3", "--train_mode",
                                               "full", "--output_dir", str(tmp_path / "flag")])
    assert (config.learning_rate, config.beta, common.train_mode) == (2e-3, 0.3, "full")  # flags win, the rest stays
    assert config.output_dir == str(tmp_path / "flag")


def test_config_file_override_trains(tiny_dir, data_dir, tmp_path):
    """The real command line: the override reaches the optimizer (constant schedule: the logged lr is the lr)."""
    run = _yaml(tmp_path / "run.yaml", tiny_dir, data_dir, lr_scheduler_type="constant", max_steps=2,
                per_device_train_batch_size=4, save_strategy="no", max_length=64)
    run_cli("--config", run, "--learning_rate", "7e-4", "--output_dir", tmp_path / "o")
    history = json.loads((tmp_path / "o" / "trainer_state.json").read_text())["log_history"]
    assert [h["learning_rate"] for h in history if "loss" in h] == [7e-4, 7e-4]


def test_abbreviations_refused(tiny_dir, data_dir, tmp_path, capsys):
    base = ["--rlhf_type", "DPO", "--model_name_or_path", tiny_dir, "--train_data_path", data_dir / "pref.jsonl",
            "--output_dir", tmp_path / "o"]
    assert run_main(*base, "--learning_rat", "0.1") == 2
    assert "--learning_rat (did you mean --learning_rate" in capsys.readouterr().err
    run = _yaml(tmp_path / "run.yaml", tiny_dir, data_dir, learning_rat=0.1)
    assert run_main("--config", run) == 2
    assert f"--learning_rat (in {run}) (did you mean --learning_rate" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "from_yaml").exists()
    from utils.model import merge

    assert merge.main(["--model_name_or", str(tiny_dir), "--output_dir", str(tmp_path / "m")]) == 2
    assert "--model_name_or" in capsys.readouterr().err


def test_old_flag_names_still_work_with_a_notice(tiny_dir, data_dir, tmp_path, capsys):
    import main_train

    _, common, _ = main_train.parse_args(["--rlhf_type", "DPO", "--model_name_or_path", str(tiny_dir),
                                          "--train_data_path", str(data_dir / "pref.jsonl"), "--output_dir",
                                          str(tmp_path / "o"), "--model_dtype", "float32"])
    assert common.dtype == "float32"
    assert "--model_dtype is deprecated, use --dtype" in capsys.readouterr().err
    run = _yaml(tmp_path / "run.yaml", tiny_dir, data_dir, model_dtype="bfloat16")
    _, common, _ = main_train.parse_args([str(run)])
    assert common.dtype == "bfloat16"
    assert "--model_dtype is deprecated, use --dtype" in capsys.readouterr().err
    from utils.model import merge

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_dir)}))
    args = merge.parse_args(["--adapter", str(adapter), "--output", str(tmp_path / "m")])
    assert (args.model_name_or_path, args.base_model_name_or_path, args.output_dir) == \
        (str(adapter), str(tiny_dir), str(tmp_path / "m"))
    err = capsys.readouterr().err
    assert "--adapter is deprecated, use --model_name_or_path" in err
    assert "--output is deprecated, use --output_dir" in err


def test_main_train_names_no_method_and_help_lists_the_table():
    from rlhf_args import METHODS

    source = (ROOT / "main_train.py").read_text()
    for m in METHODS.values():
        assert f'"{m.name}"' not in source and f"'{m.name}'" not in source, m.name
    general = run_cli("--help").stdout
    assert f"Methods: {', '.join(m.name for m in METHODS.values())}." in general
