"""GGUF files (llama.cpp, Ollama) as a model source, utils/model/gguf.py: a real one (SmolLM2-135M-Instruct, Q4_1,
utils/toy/smollm2.py) trains with LoRA from the command line, its adapter merges onto the same file, and what comes out
is plain safetensors that `from_pretrained` reloads without `gguf_file`, tokenizer and chat template included. Every
GGUF mistake (missing file, truncated or corrupt file, an architecture transformers cannot read, no `gguf` package,
4-bit loading, a GGUF reward model) is refused in the check phase: exit 2, one paragraph, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ENV, ROOT, log_history, run_cli, write_jsonl
from utils.toy.smollm2 import gguf_file

SFT = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "64", "--save_strategy", "no",
       "--gradient_checkpointing", "false", "--seed", "0", "--disable_tqdm", "true"]


@pytest.fixture(scope="module")
def smol():
    return gguf_file()


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory):
    rows = [{"prompt": [{"role": "user", "content": f"What is {a}+{a}?"}],
             "completion": [{"role": "assistant", "content": str(2 * a)}]} for a in range(8)]
    return write_jsonl(tmp_path_factory.mktemp("gguf_data") / "sft.jsonl", rows)


def test_sft_lora_from_gguf_merges_to_plain_safetensors(smol, sft_data, tmp_path):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, merged = tmp_path / "out", tmp_path / "merged"
    proc = run_cli("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", smol,
                   "--train_data_path", sft_data, "--output_dir", out, *SFT)
    assert "Could not find a config file" not in proc.stderr  # peft's warning about the GGUF base is handled
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    # The adapter names the file as its base; its weights stayed fp32 (not treated as a quantized model's).
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(smol)
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(out).chat_template  # the file's ChatML template

    # merge finds the GGUF base through adapter_config.json and saves what the GGUF loader would refuse to save
    run_cli("--model_name_or_path", out, "--output_dir", merged, module="utils.merge")
    assert (merged / "model.safetensors").is_file() and not list(merged.glob("*.gguf"))
    config = json.loads((merged / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    model = AutoModelForCausalLM.from_pretrained(merged)  # plain: no gguf_file
    tok = AutoTokenizer.from_pretrained(merged)
    assert getattr(model, "hf_quantizer", None) is None and model.dtype == torch.float32
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    assert text.rstrip().endswith("<|im_start|>assistant")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        answer = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert "Paris" in tok.decode(answer)  # still the pretrained model after two small LoRA steps


def test_reward_full_from_gguf_saves_plain_safetensors(smol, tmp_path):
    """Full fine-tuning (which transformers' Trainer refuses on a model still marked as GGUF-quantized) of a
    sequence-classification model read from the file: it starts from the file's weights and saves plain safetensors."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from utils.toy.smollm2 import hf_dir

    rows = [{"chosen": [{"role": "user", "content": f"What is {a}+{a}?"}, {"role": "assistant", "content": str(2 * a)}],
             "rejected": [{"role": "user", "content": f"What is {a}+{a}?"},
                          {"role": "assistant", "content": str(2 * a + 1)}]} for a in range(8)]
    data, out = write_jsonl(tmp_path / "reward.jsonl", rows), tmp_path / "out"
    run_cli("--rlhf_type", "Reward", "--train_mode", "full", "--model_name_or_path", smol, "--train_data_path", data,
            "--output_dir", out, *SFT)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in log_history(out) if "loss" in h)
    key = "model.layers.0.mlp.down_proj.weight"
    with safe_open(out / "model.safetensors", "pt") as f, safe_open(hf_dir() / "model.safetensors", "pt") as g:
        trained, pretrained = f.get_tensor(key), g.get_tensor(key)
    assert trained.dtype == torch.float32 and not torch.equal(trained, pretrained)
    assert (trained - pretrained).abs().max() < 1e-2  # two small steps away from the file's weights
    model = AutoModelForSequenceClassification.from_pretrained(out, num_labels=1)  # plain: no gguf_file
    tok = AutoTokenizer.from_pretrained(out)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    with torch.no_grad():
        score = model(**tok(tok.apply_chat_template(rows[0]["chosen"], tokenize=False), return_tensors="pt")).logits
    assert score.shape == (1, 1) and torch.isfinite(score).all()


# ------------------------------------------------------------------------------------------ refusals
def _tiny_gguf(path, architecture: str):
    """A GGUF file of a few hundred bytes whose general.architecture is `architecture`."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _run(*args, module=None, env=None):
    cmd = [sys.executable] + (["-m", module] if module else [str(ROOT / "main_train.py")]) + [str(a) for a in args]
    return subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=300)


def _refused(proc, out, *words):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    error = proc.stderr[proc.stderr.index("error: "):]
    assert error.count("\n") == 1, error  # one paragraph
    for word in words:
        assert word in error, error
    assert not out.exists()


def _sft(model, data, out, *extra):
    return ("--rlhf_type", "SFT", "--train_mode", "lora", "--model_name_or_path", model, "--train_data_path", data,
            "--output_dir", out, *SFT, *extra)


def test_missing_gguf_refused(sft_data, tmp_path):
    out = tmp_path / "out"
    _refused(_run(*_sft(tmp_path / "nothere.gguf", sft_data, out)), out,
             "--model_name_or_path", "nothere.gguf", "does not exist")


def test_truncated_gguf_refused(smol, sft_data, tmp_path):
    """The first MiB of the real file, as --tokenizer_name_or_path beside a good model file."""
    cut = tmp_path / "cut.gguf"
    with open(smol, "rb") as f:
        cut.write_bytes(f.read(1 << 20))
    out = tmp_path / "out"
    _refused(_run(*_sft(smol, sft_data, out, "--tokenizer_name_or_path", cut)), out,
             "--tokenizer_name_or_path", "cut.gguf", "not a complete GGUF file", "truncated")


def test_random_bytes_gguf_refused(smol, sft_data, tmp_path):
    """Not GGUF at all, as the GKD teacher of a good student file."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(4096).replace(b"GGUF", b"XXXX"))
    out = tmp_path / "out"
    args = ("--rlhf_type", "GKD", *_sft(smol, sft_data, out)[2:], "--teacher_model_name_or_path", junk)
    _refused(_run(*args), out, "--teacher_model_name_or_path", "junk.gguf", "is not a GGUF file",
             "does not start with the bytes 'GGUF'")


def test_unsupported_architecture_refused(smol, tmp_path):
    """rwkv7: llama.cpp reads it, transformers 5.23 does not; as the PPO critic of a good policy file."""
    from utils.model.gguf import supported_architectures

    assert "rwkv7" not in supported_architectures() and "llama" in supported_architectures()
    rwkv = _tiny_gguf(tmp_path / "rwkv.gguf", "rwkv7")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}])
    out = tmp_path / "out"
    proc = _run("--rlhf_type", "PPO", "--model_name_or_path", smol, "--value_model_path", rwkv, "--train_data_path",
                prompts, "--output_dir", out)
    _refused(proc, out, "--value_model_path", "rwkv.gguf", "architecture 'rwkv7'", "llama, mamba")


def test_gguf_package_missing_refused(smol, sft_data, tmp_path):
    """`gguf` made unimportable (sys.modules["gguf"] = None, as Python does for a failed import) in the process."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['gguf'] = None\n")
    env = dict(ENV, PYTHONPATH=f"{site}{os.pathsep}{ENV['PYTHONPATH']}")
    out = tmp_path / "out"
    _refused(_run(*_sft(smol, sft_data, out), env=env), out,
             "--model_name_or_path", "needs the `gguf` package", "pip install")


def test_qlora_from_gguf_refused_also_without_suffix(smol, sft_data, tmp_path):
    """An Ollama blob (no .gguf suffix) is recognised by its magic bytes; 4 bits and GGUF do not combine."""
    blob = tmp_path / "sha256-0123abcd"
    os.symlink(smol, blob)
    out = tmp_path / "out"
    args = [a if a != "lora" else "qlora" for a in _sft(blob, sft_data, out)]
    _refused(_run(*args), out, "--train_mode qlora", "sha256-0123abcd", "in 4 bits", "--train_mode lora")


@pytest.mark.parametrize("rlhf_type,data,flags,why", [
    ("RLOO", "examples/prompts.jsonl", ["--reward_funcs", "examples/rewards.py:target_length"], "--beta 0.05"),
    ("DPO", "examples/dpo_conversational.jsonl", ["--precompute_ref_log_probs", "false"],
     "--precompute_ref_log_probs false")])
def test_full_mode_reference_from_gguf_refused_in_check_phase(rlhf_type, data, flags, why, smol, tmp_path):
    """TRL loads these methods' frozen reference copy by path, which a GGUF file cannot give: refused before the
    policy's weights load (no loading bar), naming the flag that asks for the copy and what to do."""
    out = tmp_path / "out"
    proc = _run("--rlhf_type", rlhf_type, "--train_mode", "full", "--model_name_or_path", smol, "--train_data_path",
                data, "--output_dir", out, *flags)
    _refused(proc, out, "is a GGUF file", why, "--train_mode lora")
    assert "Loading weights" not in proc.stderr + proc.stdout


def test_gguf_reward_model_refused_by_commands(smol, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Hi"}])
    out = tmp_path / "out"
    proc = _run("--model_name_or_path", smol, "--reward_model_path", smol, "--train_data_path", prompts,
                "--output_dir", out, module="utils.rejection_sampling")
    _refused(proc, out, "--reward_model_path", "no trained score head", "--rlhf_type Reward")


def test_merge_refuses_missing_gguf_base(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone.gguf"),
                                                             "task_type": "CAUSAL_LM", "peft_type": "LORA"}))
    out = tmp_path / "out"
    _refused(_run("--model_name_or_path", adapter, "--output_dir", out, module="utils.merge"), out,
             "The base model named in", "gone.gguf", "does not exist")


def test_paths_split_and_recognised(smol, tmp_path):
    from utils.model import gguf

    assert gguf.split(smol) == (str(smol.parent), smol.name)
    assert gguf.is_gguf(tmp_path / "later.gguf")  # by name, existing or not
    (tmp_path / "dir.gguf").mkdir()
    assert not gguf.is_gguf(tmp_path / "dir.gguf")  # a directory is a model directory, whatever its name
    shutil.copyfile(_tiny_gguf(tmp_path / "a.gguf", "llama"), tmp_path / "blob")
    assert gguf.is_gguf(tmp_path / "blob") and not gguf.is_gguf(ROOT / "README.md")
