"""Distributed paths on CPU, through `accelerate launch` with the shipped configs (script/ddp.yaml, zero2.yaml,
zero3.yaml; DeepSpeed with DS_ACCELERATOR=cpu, torch gloo): 2 processes x batch 2 give the same losses and
gradient norms as 1 process x batch 4, for every method x mode below, in fp32; ZeRO-3 saves LoRA adapters, score
heads and full models whole; a ZeRO-3 run resumed from its step-2 checkpoint reproduces the uninterrupted run.

    pytest -m distributed tests/test_distributed.py        # alone (about 4 minutes on 2 cores)

Starting a process takes ~10 s and a 3-step run ~1-5 s, so each engine is ONE `accelerate launch` of this file as
a script, which calls `main_train.main(argv)` (the CLI's own code path) for every planned run in turn, after
`set_seed(0)`; the 1-process reference is one plain process doing the same. The real shell command line is tested
once, in its multi-machine form (two `bash script/rlhf_run.sh` on one host, ZeRO-3). Online methods sample: the
driver swaps `torch.multinomial` for a deterministic sampler (even rows of a generate() batch take the most likely
token, odd rows the second), so that 1 x [a, b, c, d] and 2 x [a, b] + [c, d] draw the same completions while
the K samples of a prompt still differ; everything else is the real code.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ENV, ROOT, log_history  # noqa: E402

pytestmark = pytest.mark.distributed
ENGINES = ("ddp", "zero2", "zero3")
ALL, Z2, Z3 = ENGINES, ("zero2", "zero3"), ("zero3",)
# run name -> engines it runs on (2 processes), besides the 1-process reference. ZeRO-3, the engine whose
# paths differ most (sharded weights, gathered generation, inference engines for frozen models), runs
# everything; DDP and ZeRO-2 the cases whose code paths differ from one engine to another.
COVERAGE = {
    "dpo_full": ALL, "dpo_lora": Z2, "dpo_qlora": ALL, "dpo_lora_precompute": ALL, "dpo_full_precompute": Z2,
    "reward_full": Z3, "reward_lora": ALL, "sft_lora": Z2, "kto_lora": Z2, "kto_lora_precompute": ("ddp",),
    "cpo_lora": Z2, "orpo_full": Z2, "gkd_lora": Z2, "gkd_full": Z3, "gkd_onpolicy": ALL,
    "rloo": ALL, "rloo_full": Z3, "grpo": Z2, "ppo": ALL, "ppo_full": Z3,
}
ONLINE = ("gkd_onpolicy", "rloo", "rloo_full", "grpo", "ppo", "ppo_full")  # runs that sample: deterministic sampler


# ------------------------------------------------------------------------------------------- plan
def plan(engine: str | None, paths: dict, out: Path) -> dict[str, list[str]]:
    """name -> main_train argv. engine None = the 1-process reference (batch 4); else 2 processes x 2."""
    bs = "4" if engine is None else "2"
    fast = ["--max_steps", "3", "--per_device_train_batch_size", bs, "--save_strategy", "no",
            "--gradient_checkpointing", "false", "--seed", "0", "--disable_tqdm", "true", "--learning_rate", "1e-3",
            # no dropout: comparable runs; fp32: bf16 rounds matmuls of other shapes apart by more than 2e-4
            "--lora_dropout", "0", "--model_name_or_path", str(paths["tiny"]), "--bf16", "false"]
    d, teacher = paths["data"], ["--teacher_model_name_or_path", paths["teacher"]]
    runs = {
        "dpo_full": ["DPO", "full", d / "pref.jsonl"],
        "dpo_lora": ["DPO", "lora", d / "pref.jsonl"],
        "dpo_qlora": ["DPO", "qlora", d / "pref.jsonl"],
        "dpo_lora_precompute": ["DPO", "lora", d / "pref.jsonl", "--precompute_ref_log_probs", "true"],
        "dpo_full_precompute": ["DPO", "full", d / "pref.jsonl", "--precompute_ref_log_probs", "true"],
        "reward_full": ["Reward", "full", d / "reward.jsonl"],
        "reward_lora": ["Reward", "lora", d / "reward.jsonl"],
        "sft_lora": ["SFT", "lora", d / "sft.jsonl"],
        "kto_lora": ["KTO", "lora", d / "kto.jsonl"],
        "kto_lora_precompute": ["KTO", "lora", d / "kto.jsonl", "--precompute_ref_log_probs", "true"],
        "cpo_lora": ["CPO", "lora", d / "pref.jsonl"],
        "orpo_full": ["ORPO", "full", d / "pref.jsonl"],
        "gkd_lora": ["GKD", "lora", d / "sft.jsonl", *teacher, "--lmbda", "0"],  # supervised KD
        "gkd_full": ["GKD", "full", d / "sft.jsonl", *teacher, "--lmbda", "0"],
        "gkd_onpolicy": ["GKD", "lora", d / "sft.jsonl", *teacher, "--lmbda", "1", "--max_new_tokens", "8"],
    }
    reward = ["--reward_funcs", f"{paths['reward']}:char_code_reward"]
    sample = ["--num_generations", "4", "--max_completion_length", "8"]
    runs["rloo"] = ["RLOO", "lora", d / "prompts.jsonl", *reward, *sample, "--beta", "0.05"]
    runs["rloo_full"] = ["RLOO", "full", d / "prompts.jsonl", *reward, *sample, "--beta", "0.05"]
    runs["grpo"] = ["GRPO", "lora", d / "prompts.jsonl", *reward, *sample, "--beta", "0.05"]
    # Advantages are whitened per process (as TRL 1.11's PPO did): a different estimator with 2 processes, so the
    # layout comparison turns whitening off. `full` holds four models (policy, critic, reference, under ZeRO-3
    # each sharded, the frozen ones in inference engines).
    ppo = [d / "prompts.jsonl", *reward, "--max_new_tokens", "8", "--num_ppo_epochs", "1", "--whiten_advantages",
           "false"]
    runs["ppo"] = ["PPO", "lora", *ppo]
    # DeepSpeed clips one norm over policy and critic inside its engine, elsewhere they are clipped apart
    # (docs/online_rl.md, PPO): the full run, whose critic gradient exceeds max_grad_norm, compares without clipping.
    runs["ppo_full"] = ["PPO", "full", *ppo, "--max_grad_norm", "1e6"]
    if engine == "zero3":
        # resume: the step-2 checkpoint of an uninterrupted 4-step run, resumed in a new output_dir
        for mode in ("full", "lora"):
            a = ["DPO", mode, d / "pref.jsonl", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2"]
            runs[f"resume_{mode}_a"] = a
            runs[f"resume_{mode}_b"] = a + ["--resume_from_checkpoint", out / f"resume_{mode}_a" / "checkpoint-2"]
    argvs = {}
    for name, (method, mode, data, *extra) in runs.items():
        if engine is not None and not name.startswith("resume_") and engine not in COVERAGE[name]:
            continue
        cut = [] if method in ("RLOO", "GRPO", "PPO") else ["--max_length", "64"]  # online: prompts are short anyway
        argvs[name] = [str(a) for a in ["--rlhf_type", method, "--train_mode", mode, "--train_data_path", data,
                                        "--output_dir", out / name, *fast, *cut, *extra]]
    return argvs


# ----------------------------------------------------------------------------------------- driver
def _parity_multinomial(probs, num_samples=1, replacement=False, *, generator=None, out=None):
    """Deterministic stand-in for torch.multinomial in generate(): row r takes its (r % 2 + 1)-th likeliest token."""
    import torch

    top2 = probs.topk(2, dim=-1).indices
    rows = (torch.arange(probs.shape[0], device=probs.device) % 2)[:, None]
    return top2.gather(-1, rows).expand(-1, num_samples)


def drive(plan_file: str) -> int:
    """Run every planned main_train argv in this process (launched 1x plain or 2x by accelerate)."""
    import torch
    from transformers import set_seed

    import main_train

    multinomial = torch.multinomial
    for name, argv in json.loads(Path(plan_file).read_text()).items():
        torch.multinomial = _parity_multinomial if name in ONLINE else multinomial
        set_seed(0)
        start = time.time()
        rc = main_train.main(argv)
        print(f"[driver] {name}: exit {rc} in {time.time() - start:.1f}s", flush=True)
        if rc:
            return rc  # torchrun then stops the other process too
    return 0


# --------------------------------------------------------------------------------------- fixtures
def _free_port() -> int:
    with socket.socket() as s:  # other test sessions on this machine may be using 29500
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(engine: str | None, paths: dict, root: Path) -> dict:
    out = root / (engine or "single")
    out.mkdir(parents=True, exist_ok=True)
    runs = plan(engine, paths, out)
    plan_file = out / "plan.json"
    plan_file.write_text(json.dumps(runs))
    me = str(Path(__file__).resolve())
    if engine is None:
        cmd = [sys.executable, me, str(plan_file)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"script/{engine}.yaml",
               "--num_processes", "2", "--main_process_port", str(_free_port()), me, str(plan_file)]
    # One thread per process: 2 processes on 2 cores; and even alone, 2 OpenMP threads on cores that other jobs
    # share made these tiny runs up to 10x slower (threads spin waiting for a descheduled partner).
    env = dict(ENV, OMP_NUM_THREADS="1")
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=480)
    (out / "log.txt").write_text(proc.stdout + proc.stderr)
    return {"out": out, "runs": runs, "rc": proc.returncode, "seconds": time.time() - start,
            "tail": (proc.stdout + proc.stderr)[-6000:]}


REWARD = '''
def char_code_reward(completions, **kwargs):
    """A pure function of the text that varies between any two completions (a tiny random policy rarely earns a
    task reward, and equal rewards make every leave-one-out advantage, hence every gradient, zero)."""
    texts = [c if isinstance(c, str) else "".join(m["content"] for m in c) for c in completions]
    return [sum(map(ord, t)) % 101 / 100 for t in texts]
'''


@pytest.fixture(scope="module")
def paths(tiny_dir, data_dir, tmp_path_factory) -> dict:
    from utils.toy.tiny_model import make_tiny

    root = tmp_path_factory.mktemp("dist")
    teacher = make_tiny(str(root / "teacher"), hidden_size=96)  # seed 0: the student's tokenizer
    (root / "rewards_dist.py").write_text(REWARD)
    return {"tiny": tiny_dir, "data": data_dir, "teacher": teacher, "root": root, "reward": root / "rewards_dist.py"}


@pytest.fixture(scope="module")
def launches(paths):
    """Each launch runs once, when a test first needs it."""
    cache = {}

    def get(engine):
        if engine not in cache:
            cache[engine] = _launch(engine, paths, paths["root"])
        return cache[engine]

    return get


def _history(launch, name) -> list[dict]:
    state = launch["out"] / name / "trainer_state.json"
    if not state.exists():
        pytest.fail(f"{name} did not finish (launch exit {launch['rc']}); log tail:\n{launch['tail']}")
    return [h for h in log_history(launch["out"] / name) if "loss" in h]


# ------------------------------------------------------------------------------------------ tests
CASES = [(engine, name) for name, engines in COVERAGE.items() for engine in engines]


@pytest.mark.parametrize("engine,name", CASES, ids=[f"{n}-{e}" for e, n in CASES])
def test_two_processes_equal_one(engine, name, launches):
    single = launches(None)
    if name not in single["runs"]:
        pytest.skip(f"{name}: method not in rlhf_args yet")
    one, two = _history(single, name), _history(launches(engine), name)
    assert len(one) == len(two) == 3
    rel = 2e-4  # QLoRA too: its adapter trains in float32 (utils/runtime/precision.py), not in TRL's bf16
    if name.startswith(("cpo", "orpo")):  # TRL averages their NLL term over each process's own tokens
        rel = 1e-3
    for step, (a, b) in enumerate(zip(one, two), 1):
        for key in ("loss", "grad_norm"):
            assert math.isfinite(a[key]) and math.isfinite(b[key])
            assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-6), f"{engine} {name} step {step} {key}"


SAVES = [(e, n) for e, n in CASES if n in ("dpo_full", "dpo_lora", "dpo_qlora", "reward_full", "reward_lora")]


@pytest.mark.parametrize("engine,name", SAVES, ids=[f"{n}-{e}" for e, n in SAVES])
def test_saved_whole(engine, name, launches):
    """What 2 processes save (ZeRO-3: gathered from shards) is what 1 process saves, tensor for tensor, and
    reloads with from_pretrained; LoRA adapters and the reward model's score head included."""
    import torch
    from safetensors.torch import load_file

    single, multi = launches(None), launches(engine)
    _history(multi, name)
    file = "model.safetensors" if name.endswith("full") else "adapter_model.safetensors"
    ref, got = load_file(single["out"] / name / file), load_file(multi["out"] / name / file)
    assert ref.keys() == got.keys()
    if name == "reward_lora":
        assert any("score" in k for k in got), "score head missing from the adapter"
    for k in ref:
        assert got[k].shape == ref[k].shape and got[k].numel() > 0, k
        # Adam moves a weight whose gradient is ~0 by up to lr per step in either direction, so float noise
        # there shows as up to 1e-3 after 3 steps at lr 1e-3; a lost, empty or re-initialised tensor is far off.
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=2e-3, msg=k)
    from transformers import AutoModelForSequenceClassification

    if name == "reward_full":
        _, info = AutoModelForSequenceClassification.from_pretrained(multi["out"] / name, output_loading_info=True)
        assert not info["missing_keys"] and not info["mismatched_keys"], info
    if name == "reward_lora":  # the adapter directory reloads with its trained head, not a new random one
        from peft import AutoPeftModelForSequenceClassification, get_peft_model_state_dict

        # num_labels=1: peft rebuilds the base from base_model_name_or_path, whose config says nothing of labels
        # (transformers' default is 2: "size mismatch for ...score...").
        model = AutoPeftModelForSequenceClassification.from_pretrained(multi["out"] / name, num_labels=1)
        reloaded = get_peft_model_state_dict(model)
        for k in got:
            torch.testing.assert_close(reloaded[k], got[k], msg=k)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_zero3_resume_reproduces_uninterrupted(mode, launches):
    z3 = launches("zero3")
    full, resumed = _history(z3, f"resume_{mode}_a"), _history(z3, f"resume_{mode}_b")
    assert [h["step"] for h in full] == [1, 2, 3, 4]
    after = [h for h in resumed if h["step"] > 2]
    assert [h["step"] for h in after] == [3, 4]
    for a, b in zip(full[2:], after):
        for key in ("loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), f"step {a['step']} {key}"


def test_launch_script_two_machines(paths, launches, tmp_path):
    """The documented shell command, multi-machine form, on one host: two `bash script/rlhf_run.sh` (CONFIG=
    script/multinode_zero3.yaml, NNODES=2, NODE_RANK=0 / 1, MASTER_ADDR, MASTER_PORT) of one process each, i.e.
    the real main_train.py command line under ZeRO-3 across 2 "machines": same losses as 1 process x batch 4."""
    out, port = tmp_path / "out", str(_free_port())
    args = [a.replace(str(launches(None)["out"] / "dpo_full"), str(out)) for a in launches(None)["runs"]["dpo_full"]]
    args[args.index("--per_device_train_batch_size") + 1] = "2"
    procs = []
    for rank in ("0", "1"):
        env = dict(ENV, CONFIG="script/multinode_zero3.yaml", NNODES="2", NODE_RANK=rank, NPROC="1",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(["bash", "script/rlhf_run.sh", *args], cwd=ROOT, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    assert "--deepspeed_multinode_launcher standard" in logs[0] and "--machine_rank 1" in logs[1]
    one, two = _history(launches(None), "dpo_full"), [h for h in log_history(out) if "loss" in h]
    for a, b in zip(one, two):
        assert b["loss"] == pytest.approx(a["loss"], rel=2e-4) and b["epoch"] == a["epoch"]
    assert (out / "model.safetensors").exists()


if __name__ == "__main__":  # the driver, started by _launch
    os.chdir(ROOT)
    from utils.core.distributed import exit_process

    exit_process(drive(sys.argv[1]))
