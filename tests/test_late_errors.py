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
