"""Model loading we own: pad-token repair, 4-bit, adapters as reference, score heads, and what the
trainer sees (prompt tokens out of the loss)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import FAST, log_history, run_main
from utils.core.errors import UserError


def test_pad_repair_tokenizer_and_config(tiny_nopad_dir):
    from transformers import AutoTokenizer

    from utils.model.loading import load_model, load_tokenizer

    assert AutoTokenizer.from_pretrained(tiny_nopad_dir).pad_token is None
    tok = load_tokenizer(str(tiny_nopad_dir))
    assert tok.pad_token == tok.eos_token
    for head in ("causal", "score"):
        model = load_model(str(tiny_nopad_dir), tok, head=head)
        assert model.config.pad_token_id == tok.pad_token_id
    # A score model pools the last non-pad token: with the repaired config a padded batch > 1 works
    # and each row scores as it does alone.
    enc = tok(["sure thanks great", "no"], return_tensors="pt", padding=True)
    with torch.no_grad():
        batch = model(**enc).logits[:, 0]
        alone = model(**tok(["no"], return_tensors="pt")).logits[:, 0]
    assert torch.allclose(batch[1], alone[0], atol=1e-5)


@pytest.mark.parametrize("rlhf_type,data", [("reward", "reward.jsonl"), ("dpo", "pref.jsonl")])
def test_pad_repair_trains_with_batches(rlhf_type, data, tiny_nopad_dir, data_dir, tmp_path):
    out = tmp_path / "out"
    assert run_main("--rlhf_type", rlhf_type, "--train_mode", "full", "--model_name_or_path", tiny_nopad_dir,
                    "--train_data_path", data_dir / data, "--output_dir", out, *FAST) == 0
    config = json.loads((out / "config.json").read_text())
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["pad_token_id"] is not None and tok_config.get("pad_token")


def test_qlora_loads_4bit(tiny_dir):
    import bitsandbytes as bnb

    from utils.model.loading import load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_dir))
    model = load_model(str(tiny_dir), tok, load_in_4bit=True)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    q = model.config.quantization_config
    q = q if isinstance(q, dict) else q.to_dict()
    assert q["bnb_4bit_quant_type"] == "nf4" and q["bnb_4bit_use_double_quant"] is True


def test_architecture_without_score_head_gets_advice(tmp_path):
    """Granite has no *ForSequenceClassification class in transformers: say what to do."""
    from transformers import AutoModelForCausalLM, GraniteConfig

    from utils.model.loading import load_model, load_tokenizer
    from utils.toy.tiny_model import build_tokenizer

    tok = build_tokenizer()
    cfg = GraniteConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="AutoModelForSequenceClassification"):
        load_model(str(tmp_path), load_tokenizer(str(tmp_path)), head="score")


def _trainer(argv):
    """Build the trainer exactly as main_train does, without training."""
    import main_train
    from utils.runtime.non_finite import StopOnNonFinite
    from utils.model.loading import load_tokenizer

    method, common, config = main_train.parse_args([str(a) for a in argv])
    tok = load_tokenizer(common.model_name_or_path)
    train, evals = main_train.load_data(method, common, tok)
    return main_train.build_trainer(method, common, config, tok, train, evals, [StopOnNonFinite()]), tok


def test_lora_reference_is_the_adapter_switched_off(tiny_dir, data_dir, tmp_path):
    args = ["--rlhf_type", "dpo", "--model_name_or_path", tiny_dir, "--train_data_path", data_dir / "pref.jsonl",
            "--output_dir", tmp_path / "o", *FAST]
    lora, _ = _trainer(args + ["--train_mode", "lora"])
    assert lora.ref_model is None  # no second copy: TRL disables the adapter for reference log-probs
    full, _ = _trainer(args + ["--train_mode", "full", "--precompute_ref_log_probs", "false"])
    assert full.ref_model is not None and full.ref_model is not full.model
    # Our default precomputes the reference log-probs from the untrained policy: no reference copy at all.
    precomputed, _ = _trainer(args + ["--train_mode", "full"])
    assert precomputed.args.precompute_ref_log_probs and precomputed.ref_model is None


def _decoded_targets(batch, tok, mask_key):
    ids, mask = batch["input_ids"], batch[mask_key]
    return [tok.decode(ids[i][mask[i].bool()]) for i in range(ids.shape[0])]


def test_prompt_tokens_not_in_loss(tiny_dir, data_dir, tmp_path):
    base = ["--model_name_or_path", tiny_dir, "--output_dir", tmp_path / "o", "--train_mode", "lora", *FAST]
    rows = [json.loads(line) for line in (data_dir / "pref.jsonl").read_text().splitlines()]
    answers = {r["chosen"][0]["content"] for r in rows} | {r["rejected"][0]["content"] for r in rows}

    sft, tok = _trainer(["--rlhf_type", "sft", "--train_data_path", data_dir / "sft.jsonl", *base])
    batch = next(iter(sft.get_train_dataloader()))
    labels = batch["labels"]
    for i in range(labels.shape[0]):
        target = tok.decode(labels[i][labels[i] != -100])
        assert target.replace("<|im_end|>", "").strip() in answers and "user" not in target

    msgs, tok = _trainer(["--rlhf_type", "sft", "--train_data_path", data_dir / "sft_messages.jsonl", *base])
    batch = next(iter(msgs.get_train_dataloader()))
    for i in range(batch["labels"].shape[0]):
        target = tok.decode(batch["labels"][i][batch["labels"][i] != -100])
        assert target.replace("<|im_end|>", "").strip() in answers

    dpo, tok = _trainer(["--rlhf_type", "dpo", "--train_data_path", data_dir / "pref.jsonl", *base])
    batch = next(iter(dpo.get_train_dataloader()))
    for text in _decoded_targets(batch, tok, "completion_mask"):
        assert text.replace("<|im_end|>", "").strip() in answers


def test_non_finite_loss_stops_the_run(tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "nan"
    rc = run_main("--rlhf_type", "sft", "--train_mode", "full", "--model_name_or_path", tiny_dir,
                  "--train_data_path", data_dir / "sft.jsonl", "--output_dir", out, *FAST,
                  "--learning_rate", "1e30", "--max_grad_norm", "0", "--max_steps", "20")
    err = capsys.readouterr().err
    assert rc == 3 and "step" in err
    steps = [h["step"] for h in log_history(out) if "loss" in h]
    assert steps[-1] < 20  # stopped early
    assert not (out / "model.safetensors").exists()


def test_resume_from_checkpoint(tiny_dir, data_dir, tmp_path):
    common = ["--rlhf_type", "dpo", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
              "--train_data_path", data_dir / "pref.jsonl", "--per_device_train_batch_size", "4",
              "--max_length", "64", "--gradient_checkpointing", "false", "--seed", "0", "--disable_tqdm", "true",
              "--learning_rate", "1e-3", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
    full_run, resumed = tmp_path / "a", tmp_path / "b"
    assert run_main(*common, "--output_dir", full_run) == 0
    # Resume the same run from its step-2 checkpoint: steps 3 and 4 must repeat the uninterrupted run.
    assert run_main(*common, "--output_dir", resumed, "--resume_from_checkpoint", full_run / "checkpoint-2") == 0
    a = {h["step"]: h["loss"] for h in log_history(full_run) if "loss" in h}
    b = {h["step"]: h["loss"] for h in log_history(resumed) if "loss" in h}
    assert a[3] == pytest.approx(b[3], rel=1e-5) and a[4] == pytest.approx(b[4], rel=1e-5)


def test_bitsandbytes_hidden_unless_needed(tiny_dir, tmp_path):
    """The CLI imports bitsandbytes (and with it torch's compiler) only for runs that can need it."""
    import subprocess
    import sys

    from conftest import ENV, ROOT

    quantized = tmp_path / "q"
    quantized.mkdir()
    (quantized / "config.json").write_text(json.dumps({"quantization_config": {"load_in_4bit": True}}))
    yaml = tmp_path / "run.yaml"  # a YAML config naming that directory
    yaml.write_text(f"rlhf_type: dpo\ntrain_mode: lora\nmodel_name_or_path: '{quantized}'\n")
    probe = ("import sys, utils.core.imports\n"
             "hidden = utils.core.imports.hide_unused_bitsandbytes(sys.argv[1:])\n"
             "import peft, transformers.utils.import_utils as iu\n"
             "print(hidden, 'bitsandbytes' in sys.modules and sys.modules['bitsandbytes'] is not None,"
             " iu.is_bitsandbytes_available())\n")
    cases = {("--train_mode", "lora", "--model_name_or_path", str(tiny_dir)): "True False False",
             ("--train_mode", "qlora"): "False True True",
             ("--optim", "paged_adamw_8bit"): "False True True",
             ("--model_name_or_path", str(quantized)): "False True True",
             (str(yaml),): "False True True", ("--config", str(yaml)): "False True True",
             (f"--config={yaml}",): "False True True"}
    for argv, expected in cases.items():
        proc = subprocess.run([sys.executable, "-c", probe, *argv], cwd=ROOT, env=ENV, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split("\n")[-2] == expected, (argv, proc.stdout)
