"""Precision as users train: bf16 compute (autocast) with float32 master weights, on CPUs that run bf16 fast.

What could go wrong and is asserted here: a full fine-tune in bf16 whose weights round its updates away (the failure
before this: 0.94 % of SmolLM2's weights changed); adapters or heads left in bf16; log-probabilities that drift from
an fp32 run; a half --dtype or --pure_bf16 where it cannot do what it says. Each training run uses a DPO-sized
learning rate (5e-6), where a weight of 0.02 in bfloat16 needs an update of 6e-5 to move at all.

The bf16 runs are skipped, with the reason, on CPUs without AMX or AVX512-BF16 (bf16 is hundreds of times slower
there, and the default is fp32).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ENV, ROOT, log_history, run_main
from utils.model.dtype import cpu_bf16

needs_bf16 = pytest.mark.skipif(cpu_bf16() is None, reason="this CPU has neither AMX nor AVX512-BF16: bf16 compute "
                                                          "would be far slower than fp32, and fp32 is the default")
LR = "5e-6"
RUN = ["--max_steps", "4", "--per_device_train_batch_size", "4", "--max_length", "64", "--seed", "0",
       "--disable_tqdm", "true", "--learning_rate", LR, "--lora_dropout", "0"]


def _weights(d: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def changed_share(before: dict, after: dict, skip: tuple = ("embed_tokens",)) -> float:
    """Share of the trained elements whose value changed. Input embeddings are left out: only the rows of tokens in
    the data get a gradient (the others cannot change, in any precision)."""
    total = moved = 0
    for k, v in after.items():
        if any(s in k for s in skip):
            continue
        old = before[k].to(v.dtype)
        total += v.numel()
        moved += int((v != old).sum())
    assert total, "no trained tensor compared"
    return moved / total


def dpo(tiny_dir, data_dir, out, *extra, mode="full"):
    rc = run_main("--rlhf_type", "DPO", "--train_mode", mode, "--model_name_or_path", tiny_dir, "--train_data_path",
                  data_dir / "pref.jsonl", "--output_dir", out, "--save_strategy", "no", *RUN, *extra)
    assert rc == 0
    return [h for h in log_history(out) if "loss" in h]


@pytest.fixture(scope="module")
def fp32_full(tiny_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32") / "full"
    return out, dpo(tiny_dir, data_dir, out, "--bf16", "false")


def assert_like_fp32(history, reference, what, loose=1.0):
    """The bf16 run's losses and log-probs follow the fp32 run's (the stated tolerances: bf16 rounds each matmul
    input to 8 significant bits, which moves a 20-token log-prob by a few hundredths). `loose` widens them for
    DeepSpeed, whose bf16 runs the whole forward in bfloat16 (residual stream and norms too), not under autocast."""
    assert len(history) == len(reference) == 4
    for step, (b, f) in enumerate(zip(history, reference), 1):
        assert b["loss"] == pytest.approx(f["loss"], abs=2e-3 * loose), f"{what} step {step} loss"
        for key in ("logps/chosen", "logps/rejected"):
            assert b[key] == pytest.approx(f[key], rel=5e-3 * loose), f"{what} step {step} {key}"


@needs_bf16
@pytest.mark.parametrize("flags", [[], ["--fp16", "true"]], ids=["bf16-default", "fp16"])
def test_full_half_keeps_every_update(flags, tiny_dir, data_dir, tmp_path, fp32_full):
    """The default on this CPU is bf16 (and fp16 trains with loss scaling): the trained weights stay float32 and
    change as in the fp32 run."""
    history = dpo(tiny_dir, data_dir, tmp_path / "bf16", *flags)  # no flag: the default
    before, after = _weights(tiny_dir), _weights(tmp_path / "bf16")
    assert {v.dtype for v in after.values()} == {torch.float32}
    share, share32 = changed_share(before, after), changed_share(before, _weights(fp32_full[0]))
    assert share >= 0.95 and share32 >= 0.95, (share, share32)
    assert_like_fp32(history, fp32_full[1], "bf16 full")


@needs_bf16
def test_pure_bf16_warns_with_numbers(tiny_dir, data_dir, tmp_path, caplog):
    """--pure_bf16 keeps bfloat16 weights on purpose; at this learning rate most updates round away, and it says so."""
    dpo(tiny_dir, data_dir, tmp_path / "pure", "--pure_bf16", "true")
    after = _weights(tmp_path / "pure")
    assert {v.dtype for v in after.values()} == {torch.bfloat16}
    share = changed_share({k: v.to(torch.bfloat16) for k, v in _weights(tiny_dir).items()}, after)
    assert share < 0.5, share  # the loss this option trades for memory, measured
    warned = [r.getMessage() for r in caplog.records if "--pure_bf16: the first optimizer step" in r.getMessage()]
    assert len(warned) == 1 and "% of the trained weights with a gradient unchanged" in warned[0], warned


@needs_bf16
@pytest.mark.parametrize("mode", ["lora", "qlora"])
def test_adapters_train_in_float32(mode, tiny_dir, data_dir, tmp_path):
    """LoRA and QLoRA: the frozen base computes in bf16 (QLoRA: 4-bit), the adapter trains and is saved in float32
    (TRL 1.16 casts a QLoRA adapter to bf16; we move it back) and every adapter element moves."""
    dpo(tiny_dir, data_dir, tmp_path / mode, "--learning_rate", LR, mode=mode)
    adapter = load_file(str(tmp_path / mode / "adapter_model.safetensors"))
    assert adapter and {v.dtype for v in adapter.values()} == {torch.float32}
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    share = sum(int((v != 0).sum()) for v in lora_b) / sum(v.numel() for v in lora_b)  # B starts at 0
    assert share >= 0.95, share


@needs_bf16
def test_log_probs_are_fp32_log_softmax(tiny_dir):
    """What the trainers' prepared models do under bf16 (accelerate: the forward under autocast, its outputs
    converted to float32): the logits reach the losses as float32, so TRL takes its fp32 log-softmax path, and the
    log-probs match an fp32 forward within 1 % (the runs above compare whole trainings)."""
    from accelerate.utils import convert_outputs_to_fp32
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import selective_log_softmax

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = selective_log_softmax(model(ids).logits[:, :-1], ids[:, 1:])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = convert_outputs_to_fp32(model.forward)(ids).logits
    assert logits.dtype == torch.float32
    got = selective_log_softmax(logits[:, :-1], ids[:, 1:])
    assert torch.allclose(got, exact, rtol=1e-2, atol=2e-2), (got - exact).abs().max()


@pytest.mark.parametrize("argv,expected", [
    (["--train_mode", "full", "--dtype", "bfloat16"], "would keep the trained weights in bfloat16"),
    (["--train_mode", "lora", "--pure_bf16", "true"], "--pure_bf16 applies to --train_mode full only"),
    (["--train_mode", "full", "--pure_bf16", "true", "--bf16", "false"], "cannot go with bf16 off (--bf16 false"),
], ids=["half-dtype-full", "pure-lora", "pure-no-bf16"])
def test_precision_mistakes_refused(argv, expected, tiny_dir, data_dir, tmp_path, capsys):
    out = tmp_path / "o"
    rc = run_main("--rlhf_type", "DPO", "--model_name_or_path", tiny_dir, "--train_data_path", data_dir / "pref.jsonl",
                  "--output_dir", out, *argv)
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and not out.exists(), err


def test_continuous_batching_with_full_bf16_refused(tiny_dir, data_dir, tmp_path, capsys):
    rc = run_main("--rlhf_type", "GRPO", "--train_mode", "full", "--model_name_or_path", tiny_dir,
                  "--train_data_path", data_dir / "prompts.jsonl", "--output_dir", tmp_path / "o", "--reward_funcs",
                  "examples/rewards.py:target_length", "--bf16", "true", "--use_transformers_continuous_batching", "true")
    err = capsys.readouterr().err
    assert rc == 2 and "casts the trained weights to the half dtype" in err, err


@needs_bf16
@pytest.mark.distributed
@pytest.mark.parametrize("engine", ["ddp", "zero2", "zero3"])
def test_two_processes_keep_updates(engine, tiny_dir, data_dir, tmp_path, fp32_full):
    """DDP (float32 weights, bf16 autocast) and ZeRO-2/3 (DeepSpeed's own float32 master weights): the master weights
    change as in fp32. DeepSpeed saves its 16-bit copy, so its master weights are read from the last checkpoint."""
    out = tmp_path / engine
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"script/{engine}.yaml",
           "--num_processes", "2", "main_train.py", "--rlhf_type", "DPO", "--train_mode", "full",
           "--model_name_or_path", str(tiny_dir), "--train_data_path", str(data_dir / "pref.jsonl"),
           "--output_dir", str(out), *RUN[:2], "--per_device_train_batch_size", "2", *RUN[4:],
           "--save_strategy", "steps", "--save_steps", "4"]
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(ENV, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=480)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "precision: bf16 autocast" in proc.stderr
    if engine.startswith("zero"):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        assert {v.dtype for v in _weights(out).values()} == {torch.bfloat16}  # what docs/performance.md says it saves
        after = get_fp32_state_dict_from_zero_checkpoint(str(out / "checkpoint-4"))
    else:
        after = _weights(out)
    assert {v.dtype for v in after.values()} == {torch.float32}
    share = changed_share(_weights(tiny_dir), {k: v for k, v in after.items() if k in _weights(tiny_dir)})
    assert share >= 0.95, share
    assert_like_fp32([h for h in log_history(out) if "loss" in h], fp32_full[1], engine,
                     loose=3.0 if engine.startswith("zero") else 1.0)


SAMPLING = {
    "GRPO": ["--num_generations", "4", "--max_completion_length", "8", "--per_device_train_batch_size", "8",
             "--beta", "0.04", "--reward_funcs", "examples/rewards.py:target_length"],
    "RLOO": ["--num_generations", "4", "--max_completion_length", "8", "--per_device_train_batch_size", "8",
             "--reward_funcs", "examples/rewards.py:target_length"],
    "PPO": ["--max_new_tokens", "8", "--per_device_train_batch_size", "4", "--num_ppo_epochs", "1",
            "--reward_funcs", "examples/rewards.py:target_length"],
    "GKD": ["--lmbda", "1.0", "--max_new_tokens", "8", "--per_device_train_batch_size", "4"],
    "Distillation": ["--max_completion_length", "8", "--per_device_train_batch_size", "4"],
}


@needs_bf16
@pytest.mark.parametrize("rlhf_type,mode", [("GRPO", "full"), ("GRPO", "lora"), ("RLOO", "full"), ("RLOO", "lora"),
                                            ("PPO", "full"), ("PPO", "lora"), ("GKD", "full"), ("GKD", "lora"),
                                            ("Distillation", "lora")])
def test_sampling_runs_in_bf16(rlhf_type, mode, tiny_dir, data_dir, tmp_path, monkeypatch):
    """Every forward without gradients (sampling, reference and old log-probs, values, the teacher) runs its linear
    layers in bf16, as training does: under autocast, or on bf16 frozen weights. In full mode the reference is a
    float32 copy computed under the same autocast, so the first step's KL to it is exactly 0."""
    seen = set()
    linear = torch.nn.Linear.forward

    def watched(self, x):
        y = linear(self, x)
        if not torch.is_grad_enabled():
            seen.add(y.dtype)
        return y

    monkeypatch.setattr(torch.nn.Linear, "forward", watched)
    data = data_dir / ("sft.jsonl" if rlhf_type == "GKD" else "prompts.jsonl")
    extra = ["--teacher_model_name_or_path", tiny_dir] if rlhf_type in ("GKD", "Distillation") else []
    rc = run_main("--rlhf_type", rlhf_type, "--train_mode", mode, "--model_name_or_path", tiny_dir,
                  "--train_data_path", data, "--output_dir", tmp_path / "o", "--max_steps", "1", "--seed", "0",
                  "--save_strategy", "no", "--disable_tqdm", "true", *SAMPLING[rlhf_type], *extra)
    assert rc == 0 and seen == {torch.bfloat16}, seen
    kl = {"GRPO": "kl", "PPO": "objective/kl"}.get(rlhf_type)
    if kl and mode == "full":
        assert log_history(tmp_path / "o")[0][kl] == 0.0
