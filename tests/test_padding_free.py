"""padding_free (utils/trainers/padding_free.py): packed rows give the padded run's loss, metrics and gradients
(fp32, sdpa) on rows of clearly different lengths, full and LoRA; and a CLI run trains with it."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch
from datasets import Dataset

from conftest import FAST, log_history, run_cli, write_jsonl

TOL = 1e-5  # absolute; plus RTOL for the summed log-probs (about -500 here, where one fp32 ulp is 3e-5)
RTOL = 1e-6
WORDS = "the way home water time day year what is good help yes no sure thanks great fine".split()


def _text(rng, lo, hi):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _pairs(n=8, seed=0):
    """Prompts of 1 to 30 words, answers of 1 to 4 or 25 to 40: the batch's rows differ several times over in length."""
    rng = random.Random(seed)

    def answer():
        return _text(rng, *rng.choice([(1, 4), (25, 40)]))

    return [{"prompt": _text(rng, 1, 30) + " ", "chosen": answer(), "rejected": answer()} for _ in range(n)]


@pytest.fixture(scope="module")
def tiny():
    from utils.toy.tiny_model import build_model, build_tokenizer

    tok = build_tokenizer()
    return tok, build_model(tok, hidden_size=32)


def _config(cls, tmp_path, **kw):
    return cls(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none", bf16=False, use_cpu=True,
               gradient_checkpointing=False, dataloader_pin_memory=False, seed=0, **kw)


def _lora():
    from peft import LoraConfig

    # B initialised at random too, so the adapter already moves the policy away from its reference
    return LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)


def _perturb(model, seed=1):
    """Move the trainable weights (the policy, not the reference) so that rewards are not all zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _step(trainer, batch):
    """Loss, the metrics it logged and the gradients of one batch."""
    trainer.model.zero_grad()
    for values in trainer._metrics["train"].values():
        values.clear()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items() if v}
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), metrics, grads


def _compare(padded, free, skip=()):
    (loss_a, metrics_a, grads_a), (loss_b, metrics_b, grads_b) = padded, free
    assert torch.isfinite(loss_a) and abs(loss_a - loss_b) < TOL, (loss_a, loss_b)
    assert set(metrics_a) == set(metrics_b)
    for key in metrics_a:
        if key not in skip:
            assert abs(metrics_a[key] - metrics_b[key]) <= TOL + RTOL * abs(metrics_a[key]), (key, metrics_a[key],
                                                                                              metrics_b[key])
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=TOL, rtol=1e-4, msg=name)


def _pair_of_trainers(trainer_cls, free_cls, config_cls, tiny, tmp_path, mode, ref=False, **config_kw):
    tok, model = tiny
    trainers = []
    for cls, padding_free in ((trainer_cls, False), (free_cls, True)):
        torch.manual_seed(0)
        extra = {"ref_model": copy.deepcopy(model)} if ref else {}  # in memory: TRL cannot reload it by name
        trainers.append(cls(model=copy.deepcopy(model), processing_class=tok, train_dataset=Dataset.from_list(_pairs()),
                            args=_config(config_cls, tmp_path / str(padding_free), padding_free=padding_free,
                                         **config_kw),
                            peft_config=_lora() if mode == "lora" else None, **extra))
    padded, free = trainers
    _perturb(padded.model)
    free.model.load_state_dict(padded.model.state_dict())
    rows = [padded.train_dataset[i] for i in range(len(padded.train_dataset))]
    assert len({len(r.get("prompt_ids", r.get("prompt_input_ids", []))) for r in rows}) > 4
    return padded, free, padded.data_collator(rows[:4])


@pytest.mark.parametrize("mode,precompute", [("full", True), ("full", False), ("lora", True), ("lora", False)])
def test_dpo_padding_free_equals_padded(mode, precompute, tiny, tmp_path):
    from trl import DPOConfig, DPOTrainer

    from utils.trainers.padding_free import PaddingFreeDPOTrainer

    padded, free, batch = _pair_of_trainers(DPOTrainer, PaddingFreeDPOTrainer, DPOConfig, tiny, tmp_path, mode,
                                            ref=mode == "full" and not precompute, precompute_ref_log_probs=precompute,
                                            max_length=None)
    assert free._pf_on and free.args.padding_free
    if precompute:  # the reference pass ran packed, in __init__
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            torch.testing.assert_close(torch.tensor(free.train_dataset[key]), torch.tensor(padded.train_dataset[key]),
                                       atol=TOL, rtol=RTOL)
    calls = []
    backbone = free._pf_models()[0].model  # what the causal LM's own forward calls
    hook = backbone.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape),
                                                          with_kwargs=True)
    result = _step(free, batch)
    hook.remove()
    _compare(_step(padded, batch), result)
    lengths, (rows, width) = batch["attention_mask"].sum(1), calls[0]
    assert lengths.max() > 2 * lengths.min()
    # fewer rows, none longer than the padded ones, little filling left
    assert rows < len(lengths) and width <= batch["input_ids"].size(1) and rows * width < batch["input_ids"].numel()
    assert result[1]["rewards/margins"] != 0


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_sft_padding_free_equals_padded(mode, tiny, tmp_path):
    from trl import SFTConfig, SFTTrainer

    from utils.trainers.padding_free import PaddingFreeSFTTrainer

    tok, model = tiny
    # every other prompt one word: rows from a few tokens to past max_length
    rows = [{"prompt": r["prompt"] if i % 2 else "help ", "completion": r["chosen"]} for i, r in enumerate(_pairs())]
    trainers = []
    for cls, padding_free in ((SFTTrainer, False), (PaddingFreeSFTTrainer, True)):
        # max_length 40 < the longest rows: truncated as without padding_free (TRL 1.16 would refuse the pair)
        args = _config(SFTConfig, tmp_path / str(padding_free), padding_free=padding_free, max_length=40)
        trainers.append(cls(model=copy.deepcopy(model), processing_class=tok, train_dataset=Dataset.from_list(rows),
                            args=args, peft_config=_lora() if mode == "lora" else None))
    padded, free = trainers
    free.model.load_state_dict(padded.model.state_dict())
    assert free.args.max_length == 40 and max(len(r["input_ids"]) for r in free.train_dataset) == 40
    by_length = sorted(padded.train_dataset, key=lambda r: len(r["input_ids"]))
    batch = padded.data_collator(by_length[:2] + by_length[-2:])  # two short rows, two cut at max_length
    calls = []
    hook = free._pf_models()[0].model.register_forward_pre_hook(lambda m, a, k: calls.append(k["input_ids"].shape),
                                                                with_kwargs=True)
    result = _step(free, batch)
    hook.remove()
    _compare(_step(padded, batch), result)
    assert calls[0][0] < batch["input_ids"].size(0)  # fewer rows than padded


@pytest.mark.parametrize("method", ["cpo", "simpo", "orpo"])
def test_cpo_orpo_padding_free_equals_padded(method, tiny, tmp_path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    from rlhf_args.cpo import CPOArgs, SimPOArgs
    from rlhf_args.orpo import ORPOArgs
    from utils.trainers.padding_free import PaddingFreeCPOTrainer, PaddingFreeORPOTrainer

    trainer_cls, free_cls, config_cls = {
        "cpo": (CPOTrainer, PaddingFreeCPOTrainer, CPOArgs), "simpo": (CPOTrainer, PaddingFreeCPOTrainer, SimPOArgs),
        "orpo": (ORPOTrainer, PaddingFreeORPOTrainer, ORPOArgs)}[method]
    assert issubclass(config_cls, (CPOConfig, ORPOConfig))
    padded, free, batch = _pair_of_trainers(trainer_cls, free_cls, config_cls, tiny, tmp_path, "full",
                                            max_length=200)
    results = []
    for trainer in (padded, free):
        trainer.model.zero_grad()
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch) if trainer is padded else \
            _with_packing(trainer, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), {k: float(v) for k, v in metrics.items()}, grads))
    # logits/* is TRL's mean over every position of the padded batch, padding included: not a property of the rows
    _compare(*results, skip=("logits/chosen", "logits/rejected"))


def _with_packing(trainer, batch):
    with trainer._packed():
        return trainer.get_batch_loss_metrics(trainer.model, batch)


@pytest.mark.parametrize("family", ["llama3", "gemma2", "phi3", "qwen3", "gpt2"])
def test_packed_rows_give_the_padded_logits(family):
    """Each tested family's transformers class masks packed rows (position ids restarting) as separate sequences."""
    from utils.toy import families as tiny_families
    from utils.trainers.padding_free import pack, unpack

    model = tiny_families.build_model(family, tiny_families.build_tokenizer(family)).eval()
    lengths = torch.tensor([12, 3, 7, 5])  # first-fit decreasing: rows [12], [7, 5], [3]
    mask = (torch.arange(12)[None] < lengths[:, None]).long()
    ids = torch.randint(10, 200, (4, 12)).masked_fill(mask == 0, 0)
    args, kwargs, state = pack((), {"input_ids": ids, "attention_mask": mask})
    assert kwargs["input_ids"].shape == (3, 12)
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask).logits
        packed = unpack(model(*args, **kwargs), state).logits
    torch.testing.assert_close(packed[mask.bool()], padded[mask.bool()], atol=TOL, rtol=1e-4)


def test_cli_dpo_padding_free_trains(tiny_dir, tmp_path):
    rows = _pairs(16)
    data = write_jsonl(tmp_path / "pref.jsonl", rows)
    out = tmp_path / "out"
    proc = run_cli("--rlhf_type", "DPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir,
                   "--train_data_path", data, "--output_dir", out, "--padding_free", "true", *FAST)
    losses = [h["loss"] for h in log_history(out) if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert "temporarily unavailable" not in proc.stderr + proc.stdout
