"""Canary for TRL's experimental code. CPO, SimPO, CPO-SimPO and ORPO run on `trl.experimental.cpo` / `.orpo`, GKD on
`trl.experimental.gkd` (README's methods table marks those rows). TRL is deciding how to retire that code; an
upgrade that moves or removes a piece we rely on must fail here, in one test naming the module and the piece, not
as a traceback deep inside a trainer. What is listed is what our code imports, subclasses, calls or configures
(rlhf_args/cpo.py, orpo.py, gkd.py; utils/trainers/padding_free.py, distill.py)."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os

import pytest

TRAINER_INIT = ("model", "args", "train_dataset", "eval_dataset", "processing_class", "callbacks", "peft_config")
RELIED_ON = {
    "trl.experimental.cpo": {
        "CPOConfig": {"fields": ("max_length", "beta", "label_smoothing", "loss_type", "cpo_alpha", "simpo_gamma",
                                 "disable_dropout")},
        "CPOTrainer": {"init": TRAINER_INIT, "methods": ("compute_loss", "prediction_step")},
    },
    "trl.experimental.orpo": {
        "ORPOConfig": {"fields": ("max_length", "beta", "disable_dropout")},
        "ORPOTrainer": {"init": TRAINER_INIT, "methods": ("compute_loss", "prediction_step")},
    },
    "trl.experimental.gkd": {
        "GKDConfig": {"fields": ("max_length", "temperature", "lmbda", "beta", "max_new_tokens", "seq_kd",
                                 "teacher_model_name_or_path", "teacher_model_init_kwargs", "disable_dropout")},
        "GKDTrainer": {"init": (*TRAINER_INIT, "teacher_model", "data_collator"),
                       "methods": ("compute_loss", "training_step"),
                       "signatures": {"generate_on_policy_outputs": ("model", "inputs", "generation_config"),
                                      "generalized_jsd_loss": ("student_logits", "teacher_logits", "beta",
                                                               "temperature", "reduction")}},
    },
}


def missing(module: str, pieces: dict) -> list[str]:
    """What of `pieces` the module lacks, each as `module.Name: what`."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return [f"{module}: cannot be imported ({e})"]
    gone = []
    for name, want in pieces.items():
        obj = getattr(mod, name, None)
        if obj is None:
            gone.append(f"{module}.{name}: not there")
            continue
        fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
        gone += [f"{module}.{name}: no field `{f}`" for f in want.get("fields", ()) if f not in fields]
        init = inspect.signature(obj.__init__).parameters if "init" in want else {}
        gone += [f"{module}.{name}.__init__: no parameter `{p}`" for p in want.get("init", ()) if p not in init]
        gone += [f"{module}.{name}: no method `{m}`" for m in want.get("methods", ())
                 if not callable(getattr(obj, m, None))]
        for method, params in want.get("signatures", {}).items():
            fn = getattr(obj, method, None)
            have = inspect.signature(fn).parameters if callable(fn) else {}
            gone += [f"{module}.{name}.{method}: no parameter `{p}`" for p in params if p not in have]
    return gone


@pytest.mark.parametrize("module", sorted(RELIED_ON))
def test_experimental_pieces_we_rely_on_are_there(module):
    assert missing(module, RELIED_ON[module]) == []


def test_canary_names_what_is_gone():
    """The check itself can fail: a field, a parameter, a method and a class that are not there are each named."""
    found = missing("trl.experimental.orpo", {
        "ORPOConfig": {"fields": ("beta", "no_such_field")},
        "ORPOTrainer": {"init": ("model", "no_such_param"), "methods": ("compute_loss", "no_such_method")},
        "NoSuchTrainer": {},
    })
    assert found == ["trl.experimental.orpo.ORPOConfig: no field `no_such_field`",
                     "trl.experimental.orpo.ORPOTrainer.__init__: no parameter `no_such_param`",
                     "trl.experimental.orpo.ORPOTrainer: no method `no_such_method`",
                     "trl.experimental.orpo.NoSuchTrainer: not there"]
    assert missing("trl.experimental.no_such_module", {}) and "cannot be imported" in \
        missing("trl.experimental.no_such_module", {})[0]


def test_readme_marks_the_rows_on_experimental_trl():
    from conftest import ROOT

    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| ")]
    for method in ("CPO", "SimPO", "CPOSimPO", "ORPO", "GKD"):
        row = next((r for r in rows if r.split("|")[1].strip().strip("`*") == method), None)
        assert row is not None and "experimental" in row, (method, row)
    for method in ("DPO", "SFT", "GRPO", "KTO"):
        row = next((r for r in rows if r.split("|")[1].strip().strip("`*") == method), None)
        assert row is None or "experimental" not in row, (method, row)
