"""Every offline method x train mode trains a few steps through main_train: finite loss, weights
change, the output reloads with from_pretrained."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import FAST, log_history, run_cli, run_main, write_jsonl

DATA = {"sft": "sft.jsonl", "reward": "reward.jsonl", "dpo": "pref.jsonl", "cpo": "pref.jsonl",
        "simpo": "pref.jsonl", "cposimpo": "pref.jsonl", "orpo": "pref.jsonl", "kto": "kto.jsonl"}
CASES = [(m, mode) for m in DATA for mode in ("full", "lora")]
CASES += [("sft", "qlora"), ("dpo", "qlora"), ("reward", "qlora"), ("dpo", "dora"), ("reward", "dora")]


def _reload(out, rlhf_type, mode):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if mode == "full":
        cls = AutoModelForSequenceClassification if rlhf_type == "reward" else AutoModelForCausalLM
        return cls.from_pretrained(out)
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

    if rlhf_type == "reward":  # peft rebuilds the base from its own config, which says nothing of labels
        return AutoPeftModelForSequenceClassification.from_pretrained(out, num_labels=1)
    return AutoPeftModelForCausalLM.from_pretrained(out)


@pytest.mark.parametrize("rlhf_type,mode", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_method_trains_and_reloads(rlhf_type, mode, tiny_dir, data_dir, tmp_path):
    out = tmp_path / "out"
    train_mode = "lora" if mode == "dora" else mode
    extra = ["--use_dora", "true"] if mode == "dora" else []
    lr = ["--learning_rate", "1e-3"]
    rc = run_main("--rlhf_type", rlhf_type, "--train_mode", train_mode, "--model_name_or_path", tiny_dir,
                  "--train_data_path", data_dir / DATA[rlhf_type], "--output_dir", out, *FAST, *lr, *extra)
    assert rc == 0
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)

    if mode == "full":
        before, after = load_file(tiny_dir / "model.safetensors"), load_file(out / "model.safetensors")
        changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
        assert changed, "no weight changed"
    else:
        adapter = load_file(out / "adapter_model.safetensors")
        lora_b = [v for k, v in adapter.items() if "lora_B" in k]
        assert lora_b and any(v.abs().sum() > 0 for v in lora_b), "LoRA B matrices are still zero"
        if mode == "dora":
            assert any("lora_magnitude_vector" in k for k in adapter)
        if rlhf_type == "reward":  # the score head is trained in full and saved with the adapter
            assert any("score" in k for k in adapter)
    model = _reload(out, rlhf_type, mode)
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_cli_subprocess_and_yaml(tiny_dir, data_dir, tmp_path):
    """The real command line, and the same run from a YAML file."""
    out = tmp_path / "cli"
    run_cli("--rlhf_type", "DPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
            "--train_data_path", data_dir / "pref_plain.jsonl", "--output_dir", out, *FAST)
    assert (out / "adapter_model.safetensors").exists() and (out / "trainer_state.json").exists()

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"rlhf_type: simpo\ntrain_mode: full\nmodel_name_or_path: {tiny_dir}\n"
                   f"train_data_path: {data_dir / 'pref.jsonl'}\noutput_dir: {tmp_path / 'yaml'}\n"
                   "max_steps: 2\nper_device_train_batch_size: 4\nsave_strategy: 'no'\nmax_length: 64\n"
                   "gradient_checkpointing: false\nsimpo_gamma: 0.3\n")
    run_cli(cfg)
    state = log_history(tmp_path / "yaml")
    assert sum("loss" in h for h in state) == 2
    args = torch.load(tmp_path / "yaml" / "training_args.bin", weights_only=False)
    assert args.loss_type == "simpo" and args.cpo_alpha == 0.0 and args.simpo_gamma == 0.3


@pytest.mark.parametrize("rows", ["plain", "text"])
def test_sft_plain_strings_train(rows, tiny_dir, data_dir, tmp_path):
    """SFT on plain prompt + completion strings and on `text` rows (no chat template; assistant-only loss, our
    default for `messages`, is not asked of them)."""
    import json

    data = data_dir / "sft_plain.jsonl"
    if rows == "text":
        plain = [json.loads(line) for line in data.read_text().splitlines()]
        data = write_jsonl(tmp_path / "text.jsonl", [{"text": r["prompt"] + r["completion"]} for r in plain])
    out = tmp_path / "out"
    assert run_main("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
                    "--train_data_path", data, "--output_dir", out, *FAST) == 0
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
