"""GKD (supervised KD, SeqKD, on-policy GKD): the generalised JSD against hand-derived values and a
float64 implementation; our trainer's loss (temperature on both models, real vocabulary only,
completion tokens only); every setting from the command line; refused configurations; and learning:
the student's divergence to the teacher on held-out rows falls."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import log_history, run_cli, run_main, style_pairs, to_sft_rows, write_jsonl

FAST = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--save_strategy", "no", "--max_length", "64",
        "--gradient_checkpointing", "false", "--seed", "0", "--disable_tqdm", "true", "--max_new_tokens", "6",
        "--learning_rate", "1e-3"]
ln = math.log


# --------------------------------------------------------------------------------- the divergence
def jsd64(student_logits, teacher_logits, beta, temperature):
    """The definitions, written directly in float64 (P = teacher, Q = student)."""
    p = torch.softmax(teacher_logits.double() / temperature, -1)
    q = torch.softmax(student_logits.double() / temperature, -1)

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    if beta == 0:
        return kl(p, q)
    if beta == 1:
        return kl(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


# Teacher logits [0, 2 ln 2] and student logits [0, 2 ln 3]: at T = 1, P = [1/5, 4/5] and Q = [1/10, 9/10];
# at T = 2 (both divided by 2), P = [1/3, 2/3] and Q = [1/4, 3/4]. Mixtures for beta = 0.5: [3/20, 17/20] at T = 1,
# [7/24, 17/24] at T = 2.
HAND = {
    (0.0, 1.0): 1 / 5 * ln(2) + 4 / 5 * ln(8 / 9),  # KL(P || Q)
    (1.0, 1.0): 1 / 10 * ln(1 / 2) + 9 / 10 * ln(9 / 8),  # KL(Q || P)
    (0.5, 1.0): 0.5 * (1 / 5 * ln(4 / 3) + 4 / 5 * ln(16 / 17)) + 0.5 * (1 / 10 * ln(2 / 3) + 9 / 10 * ln(18 / 17)),
    (0.0, 2.0): 1 / 3 * ln(4 / 3) + 2 / 3 * ln(8 / 9),
    (1.0, 2.0): 1 / 4 * ln(3 / 4) + 3 / 4 * ln(9 / 8),
    (0.5, 2.0): 0.5 * (1 / 3 * ln(8 / 7) + 2 / 3 * ln(16 / 17)) + 0.5 * (1 / 4 * ln(6 / 7) + 3 / 4 * ln(18 / 17)),
}


@pytest.mark.parametrize("beta,temperature", list(HAND), ids=[f"beta{b}-T{t}" for b, t in HAND])
def test_generalized_jsd_by_hand(beta, temperature):
    from utils.trainers.distill import generalized_jsd

    teacher = torch.tensor([[0.0, 2 * ln(2)]])
    student = torch.tensor([[0.0, 2 * ln(3)]])
    got = generalized_jsd(student, teacher, beta, temperature).item()
    assert got == pytest.approx(HAND[beta, temperature], rel=1e-5, abs=1e-7)
    assert got == pytest.approx(jsd64(student, teacher, beta, temperature).item(), rel=1e-5, abs=1e-7)


def test_generalized_jsd_matches_float64_and_kl_directions():
    from utils.trainers.distill import generalized_jsd

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 11, generator=g) * 3, torch.randn(3, 5, 11, generator=g) * 3
    for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
        for temperature in (0.5, 1.0, 2.0):
            got = generalized_jsd(student, teacher, beta, temperature)
            assert got.shape == (3, 5) and (got >= -1e-6).all()
            torch.testing.assert_close(got.double(), jsd64(student, teacher, beta, temperature), rtol=1e-4, atol=1e-6)
    # beta = 0 is forward KL(teacher || student), beta = 1 reverse KL(student || teacher): not the same numbers
    forward, reverse = generalized_jsd(student, teacher, 0.0), generalized_jsd(student, teacher, 1.0)
    torch.testing.assert_close(reverse, generalized_jsd(teacher, student, 0.0))
    assert not torch.allclose(forward, reverse)


# ------------------------------------------------------------------------------------------ models
@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory) -> Path:
    """Same tokenizer as tiny_dir (the tokenizer depends on vocab_size and seed only), a larger model."""
    from utils.toy.tiny_model import make_tiny

    return Path(make_tiny(str(tmp_path_factory.mktemp("teacher") / "model"), hidden_size=96))


def _padded(src: Path, dst: Path, rows: int) -> Path:
    """A copy with `rows` embedding rows (more than the tokenizer's 512), like sizes of one family."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src)
    torch.manual_seed(0)
    model.resize_token_embeddings(rows, mean_resizing=False)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


@pytest.fixture(scope="session")
def gkd_data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gkd_data")
    write_jsonl(d / "train.jsonl", to_sft_rows(style_pairs(128, seed=1)))
    write_jsonl(d / "held.jsonl", to_sft_rows(style_pairs(32, seed=2)))
    write_jsonl(d / "plain.jsonl", to_sft_rows(style_pairs(16, seed=3, conversational=False)))
    return d


def _trainer(student, teacher, data, out, *flags):
    """Our GKDTrainer built the way main_train builds it (parse, load, extras hook)."""
    import main_train
    from utils.runtime.non_finite import StopOnNonFinite
    from utils.data.loading import load_dataset_checked
    from utils.model.loading import load_tokenizer

    method, common, config = main_train.parse_args(
        ["--rlhf_type", "GKD", "--train_mode", "full", "--model_name_or_path", str(student),
         "--teacher_model_name_or_path", str(teacher), "--train_data_path", str(data), "--output_dir", str(out),
         *FAST, "--bf16", "false", *flags])  # fp32: the loss of a teacher equal to the student is exactly 0
    tokenizer = load_tokenizer(str(student))
    train = load_dataset_checked(str(data), "sft", tokenizer, what="train_data_path")
    return main_train.build_trainer(method, common, config, tokenizer, train, None, [StopOnNonFinite()]), tokenizer


@pytest.mark.parametrize("data_file", ["train.jsonl", "plain.jsonl"])
def test_loss_temperature_real_vocab_completion_only(data_file, tiny_dir, teacher_dir, gkd_data, tmp_path):
    """The trainer's loss = mean JSD over completion tokens, both models' logits / T, over the tokenizer's 512 ids,
    with a teacher whose embedding has 520 rows (TRL alone refuses that teacher)."""
    from transformers import AutoModelForCausalLM

    twin = _padded(tiny_dir, tmp_path / "twin520", 520)  # the student itself plus 8 random rows
    trainer, _ = _trainer(tiny_dir, twin, gkd_data / data_file, tmp_path / "out")
    assert trainer.generation_kwargs["suppress_tokens"] == list(range(512, 520))  # never sampled: not real tokens
    with torch.no_grad():
        assert trainer.compute_loss(trainer.model, next(iter(trainer.get_train_dataloader()))).item() == 0.0

    teacher = _padded(teacher_dir, tmp_path / "teacher520", 520)
    trainer, tok = _trainer(tiny_dir, teacher, gkd_data / data_file, tmp_path / "out", "--temperature", "2.0",
                            "--beta", "0.5")
    assert trainer.shared_vocab == 512 and trainer.temperature == 2.0
    batch = next(iter(trainer.get_train_dataloader()))
    for ids, labels, prompt_ids in zip(batch["input_ids"], batch["labels"], batch["prompts"]):
        completion = tok.decode(labels[labels != -100])
        assert completion and completion.endswith("<|im_end|>" if data_file == "plain.jsonl" else "<|im_end|>\n")
        assert "<|im_start|>user" not in completion and "?" not in completion  # no prompt token is trained on
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
        student = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        teacher_logits = AutoModelForCausalLM.from_pretrained(teacher)(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert teacher_logits.shape[-1] == 520
    mask = batch["labels"][:, 1:] != -100
    expected = jsd64(student[:, :-1][mask][:, :512], teacher_logits[:, :-1][mask][:, :512], 0.5, 2.0).mean().item()
    assert loss == pytest.approx(expected, rel=1e-5)
    at_t1 = jsd64(student[:, :-1][mask][:, :512], teacher_logits[:, :-1][mask][:, :512], 0.5, 1.0).mean().item()
    assert abs(loss - at_t1) > 1e-3 * at_t1  # the temperature changed the loss (TRL alone computes it at T = 1)


# ------------------------------------------------------------------------------ the command line
# (lmbda, seq_kd, train_mode, which model has 520 embedding rows or a 4-bit teacher): supervised KD, SeqKD, GKD.
CASES = [(0.0, False, "full", "teacher4bit"), (0.0, True, "lora", "teacher"), (1.0, False, "full", "student"),
         (0.5, True, "lora", None)]


def assert_trained_and_reloads(out, start, mode: str) -> None:
    """Two finite positive losses logged; the weights (full) or LoRA B matrices moved from `start`; the saved model
    reloads and gives finite logits. Shared with tests/test_distillation.py."""
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(v) and v > 0 for v in losses)
    if mode == "full":
        before, after = load_file(start / "model.safetensors"), load_file(out / "model.safetensors")
        assert any(not torch.equal(before[k], after[k]) for k in before if k in after), "no weight changed"
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(out)
    else:
        adapter = load_file(out / "adapter_model.safetensors")
        assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k), "LoRA B matrices are still zero"
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=torch.tensor([[1, 5, 9, 2]])).logits).all()


@pytest.mark.parametrize("lmbda,seq_kd,mode,padded", CASES,
                         ids=[f"lmbda{a}-seqkd{b}-{c}-{d or 'same'}" for a, b, c, d in CASES])
def test_gkd_trains_and_reloads(lmbda, seq_kd, mode, padded, tiny_dir, teacher_dir, gkd_data, tmp_path):
    student, teacher = tiny_dir, teacher_dir
    if padded == "teacher":
        teacher = _padded(teacher_dir, tmp_path / "teacher520", 520)
    if padded == "student":  # its samples could use ids 512..519, which the teacher has no row for
        student = _padded(tiny_dir, tmp_path / "student520", 520)
    out = tmp_path / "out"
    args = ["--rlhf_type", "GKD", "--train_mode", mode, "--model_name_or_path", student,
            "--teacher_model_name_or_path", teacher, "--train_data_path", gkd_data / "train.jsonl",
            "--output_dir", out, "--lmbda", lmbda, "--seq_kd", str(seq_kd).lower(), "--beta", "0.5", *FAST]
    if padded == "teacher4bit":
        args += ["--teacher_load_in_4bit", "true"]
    if padded is None and lmbda == 0.5:  # the real command line once
        run_cli(*args)
    else:
        assert run_main(*args) == 0
    assert_trained_and_reloads(out, student, mode)


def test_gkd_refusals(tiny_dir, teacher_dir, gkd_data, tmp_path, capsys):
    from utils.toy.tiny_model import make_tiny

    base = ["--rlhf_type", "GKD", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
            "--train_data_path", gkd_data / "train.jsonl", *FAST]
    out = tmp_path / "never"
    assert run_main(*base, "--output_dir", out) == 2
    assert "--teacher_model_name_or_path is required" in capsys.readouterr().err and not out.exists()
    assert run_main(*base, "--output_dir", out, "--teacher_model_name_or_path", teacher_dir, "--lmbda", "1.5") == 2
    assert "lmbda" in capsys.readouterr().err and not out.exists()
    other = make_tiny(str(tmp_path / "other_tok"), seed=1)  # another BPE: another vocabulary
    assert run_main(*base, "--output_dir", out, "--teacher_model_name_or_path", other) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not use the student's tokenizer" in errors[0]


# ------------------------------------------------------------------------------------------ learning
def heldout_divergence(student_path, teacher_path, rows) -> float:
    """Mean KL(teacher || student) per completion token on held-out rows, at T = 1, in float64."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from utils.trainers.distill import _tokenize_row

    tok = AutoTokenizer.from_pretrained(teacher_path)
    student = AutoModelForCausalLM.from_pretrained(student_path).eval()
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            enc = _tokenize_row(row, tok, None)
            ids = torch.tensor([enc["input_ids"]])
            predicts = torch.tensor(enc["completion_mask"][1:]) == 1  # position i predicts token i + 1
            kl = jsd64(student(input_ids=ids).logits[0, :-1][predicts], teacher(input_ids=ids).logits[0, :-1][predicts],
                       0.0, 1.0)
            total, count = total + kl.sum().item(), count + len(kl)
    return total / count


LEARN = ["--per_device_train_batch_size", "8", "--save_strategy", "no", "--gradient_checkpointing", "false",
         "--seed", "0", "--disable_tqdm", "true"]


@pytest.fixture(scope="session")
def sft_teacher(teacher_dir, gkd_data, tmp_path_factory) -> Path:
    """A teacher with something to teach: teacher_dir after SFT on the task's answers (GKD's and Distillation's)."""
    teacher = tmp_path_factory.mktemp("sft_teacher") / "model"
    assert run_main("--rlhf_type", "SFT", "--train_mode", "full", "--model_name_or_path", teacher_dir,
                    "--train_data_path", gkd_data / "train.jsonl", "--output_dir", teacher, "--learning_rate", "3e-3",
                    "--max_steps", "40", "--max_length", "64", *LEARN) == 0
    return teacher


def test_gkd_student_moves_to_teacher(tiny_dir, sft_teacher, gkd_data, tmp_path):
    common, teacher = [*LEARN, "--max_length", "64"], sft_teacher
    student = tmp_path / "student"
    assert run_main("--rlhf_type", "GKD", "--train_mode", "full", "--model_name_or_path", tiny_dir,
                    "--teacher_model_name_or_path", teacher, "--train_data_path", gkd_data / "train.jsonl",
                    "--eval_data_path", gkd_data / "held.jsonl", "--output_dir", student, "--learning_rate", "3e-3",
                    "--max_steps", "30", "--lmbda", "0.5", "--beta", "0.5", "--max_new_tokens", "8",
                    "--eval_strategy", "steps", "--eval_steps", "30", "--eval_on_start", "true", *common) == 0
    import json

    held = [json.loads(line) for line in (gkd_data / "held.jsonl").read_text().splitlines()]
    before, after = heldout_divergence(tiny_dir, teacher, held), heldout_divergence(student, teacher, held)
    evals = [h["eval_loss"] for h in log_history(student) if "eval_loss" in h]
    print(f"held-out KL(teacher || student) per completion token: {before:.4f} -> {after:.4f}; "
          f"eval JSD(0.5): {evals[0]:.4f} -> {evals[-1]:.4f}")
    assert after < 0.5 * before
    assert evals[-1] < 0.5 * evals[0]
