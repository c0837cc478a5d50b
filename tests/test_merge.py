"""utils.model.merge: the merged model's logits equal base + adapter logits, for a causal-LM adapter (LoRA and
DoRA) and a reward-model adapter (score head saved with the adapter); the output is a plain model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import run_cli

IDS = torch.tensor([[1, 282, 263, 201, 74, 75, 2, 201, 1, 322, 511, 201],
                    [5, 9, 17, 33, 65, 129, 257, 300, 2, 7, 8, 9]])


def _adapter(base: Path, out: Path, head: str, use_dora: bool = False) -> Path:
    """An adapter with non-zero weights (as after training), saved with the tokenizer, as main_train saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    if head == "score":
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
        config = LoraConfig(r=4, target_modules="all-linear", task_type="SEQ_CLS", modules_to_save=["score"],
                            init_lora_weights=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM", use_dora=use_dora,
                            init_lora_weights=False)
    model = get_peft_model(model, config)
    if head == "score":  # a trained score head, not the random one a fresh load would make
        with torch.no_grad():
            model.base_model.model.score.modules_to_save["default"].weight.normal_(0, 1.0)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits


@pytest.mark.parametrize("head,use_dora", [("causal", False), ("causal", True), ("score", False)],
                         ids=["causal-lora", "causal-dora", "reward-lora"])
def test_merged_logits_equal_base_plus_adapter(head, use_dora, tiny_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from utils.model import merge

    adapter = _adapter(tiny_dir, tmp_path / "adapter", head, use_dora)
    out = tmp_path / "merged"
    if head == "causal" and not use_dora:
        run_cli("--base", tiny_dir, "--adapter", adapter, "--output", out, module="utils.merge")  # the real CLI once
    else:
        assert merge.main(["--base", str(tiny_dir), "--adapter", str(adapter), "--output", str(out)]) == 0
    assert (out / "model.safetensors").exists() and (out / "tokenizer_config.json").exists()
    assert not (out / "adapter_config.json").exists()

    peft_cls = AutoPeftModelForSequenceClassification if head == "score" else AutoPeftModelForCausalLM
    plain_cls = AutoModelForSequenceClassification if head == "score" else AutoModelForCausalLM
    kwargs = {"num_labels": 1} if head == "score" else {}
    expected = _logits(peft_cls.from_pretrained(adapter, **kwargs))  # base + adapter, unmerged
    merged = _logits(plain_cls.from_pretrained(out))  # a plain model: no peft needed to load it
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-5)
    if head == "causal":  # the adapter changed the model, so equality above is not trivial
        assert not torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(tiny_dir)), merged, atol=1e-3)


def test_merge_refusals(tiny_dir, tmp_path, capsys):
    from utils.model import merge

    assert merge.main(["--base", str(tiny_dir), "--adapter", str(tiny_dir), "--output", str(tmp_path / "x")]) == 2
    assert "is not an adapter directory" in capsys.readouterr().err
    adapter = _adapter(tiny_dir, tmp_path / "adapter", "causal")
    assert merge.main(["--adapter", str(adapter), "--output", str(adapter)]) == 2  # base from adapter_config
    assert "write the merged model to a new directory" in capsys.readouterr().err
