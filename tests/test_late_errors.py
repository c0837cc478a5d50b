"""What a library still refuses only once the model has loaded (when the trainer is built) is reworded at one place
(main_train.build_trainer -> utils/errors.reword): our flag and its value named, exit 2, no traceback, output_dir
as it was. These load the tiny model; the early checks are in test_option_checks.py."""

from __future__ import annotations

import pytest

from conftest import FAST, run_main


@pytest.mark.parametrize("extra,words", [
    # DPOTrainer on a dense model (whether the model returns router logits is known from the model only)
    (["--router_aux_loss_coef", "0.5"], ["The DPO trainer refused --router_aux_loss_coef 0.5:",
                                         "not a Mixture-of-Experts model"]),
    # an adapter on the output head: DPOTrainer computes log-probs from lm_head.weight directly
    (["--lora_target_modules", "lm_head"], ["The DPO trainer refused --lora_target_modules lm_head:",
                                           "`target_modules` is our --lora_target_modules"]),
], ids=["router_aux_loss_coef", "adapter on lm_head"])
def test_trainer_refusal_names_our_flag(extra, words, tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    rc = run_main("--rlhf_type", "DPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
                  "--train_data_path", data_dir / "pref.jsonl", *FAST, *extra, "--output_dir", out)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    message = err[err.index("error: "):].strip()
    assert "\n" not in message and all(w in message for w in words), message
    assert not out.exists()


def test_refusal_while_training_names_our_flag(tiny_dir, data_dir, tmp_path, capsys, monkeypatch):
    """A library that refuses a value only at its first step (simulated: transformers' train raising as TRL's losses
    do) comes out reworded with our flag; an error that names no flag of ours is a bug and keeps its traceback."""
    import transformers

    def refuse(self, *args, **kwargs):
        raise ValueError("Unknown `label_smoothing` combination for this loss.")

    monkeypatch.setattr(transformers.Trainer, "train", refuse)
    argv = ["--rlhf_type", "DPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir, "--train_data_path",
            data_dir / "pref.jsonl", *FAST, "--label_smoothing", "0.1", "--output_dir", tmp_path / "out"]
    assert run_main(*argv) == 2
    err = capsys.readouterr().err
    assert "DPO training refused --label_smoothing 0.1: Unknown `label_smoothing` combination" in err, err

    def bug(self, *args, **kwargs):
        raise ValueError("shapes (3,) and (4,) do not match")

    monkeypatch.setattr(transformers.Trainer, "train", bug)
    with pytest.raises(ValueError, match="do not match"):
        run_main(*argv[:-1], tmp_path / "out2")
