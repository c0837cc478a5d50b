"""Evaluation (utils/evaluation/run.py): a model trained toward a rule reward beats its start (win-rate interval above
0.5, reward up), one trained away from it loses; a model against itself ties with KL 0; reward-source and implied
DPO accuracies on pair files whose answers are known by construction; 2 processes give the numbers of 1; bad input
is one paragraph, exit code 2, nothing written."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import ENV, ROOT, run_main, style_pairs, write_jsonl

REWARDS = '''
GOOD = {"sure", "thanks", "great", "help", "yes", "good", "fine", "right"}

def _text(c):
    return c if isinstance(c, str) else "".join(m["content"] for m in c)

def a_to_m(prompts, completions, **kwargs):
    """Share of the completion's non-space characters in a..m: a tiny model learns it in a few GRPO steps."""
    out = []
    for c in completions:
        chars = [ch for ch in _text(c) if not ch.isspace()]
        out.append(sum("a" <= ch <= "m" for ch in chars) / len(chars) if chars else 0.0)
    return out

def good_words(prompts, completions, **kwargs):
    return [sum(w in GOOD for w in _text(c).split()) / max(1, len(_text(c).split())) for c in completions]
'''
GRPO = ["--rlhf_type", "GRPO", "--train_mode", "full", "--num_generations", "4", "--max_completion_length", "8",
        "--per_device_train_batch_size", "16", "--learning_rate", "1e-2", "--max_steps", "10", "--save_strategy", "no",
        "--seed", "0", "--disable_tqdm", "true"]


def _prompts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": f"What is {rng.randint(0, 20)}+{rng.randint(0, 20)}?"}]}
            for _ in range(n)]


@pytest.fixture(scope="module")
def ev(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("evaluate")
    (d / "rewards.py").write_text(REWARDS)
    write_jsonl(d / "train.jsonl", _prompts(64, seed=0))
    write_jsonl(d / "heldout.jsonl", _prompts(32, seed=1))
    return d


def _evaluate(*args) -> int:
    from utils.evaluation import run as evaluate

    return evaluate.main([str(a) for a in args])


def _results(out: Path) -> dict:
    return json.loads((out / "eval.json").read_text())


def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]


def _inside(value: float, estimate: dict) -> bool:
    lo, hi = estimate["ci95"]
    return lo <= value <= hi


# ---------------------------------------------------------------------------------------- learning
def test_trained_toward_and_away_from_a_rule(tiny_dir, ev, tmp_path):
    rule = f"{ev / 'rewards.py'}:a_to_m"
    toward, away = tmp_path / "toward", tmp_path / "away"
    # Toward the rule, evaluated by main_train at the end of training; away from it (weight -1), by the command.
    assert run_main(*GRPO, "--model_name_or_path", tiny_dir, "--train_data_path", ev / "train.jsonl", "--output_dir",
                    toward, "--reward_funcs", rule, "--evaluate_after", "true", "--eval_prompts_path",
                    ev / "heldout.jsonl") == 0
    assert run_main(*GRPO, "--model_name_or_path", tiny_dir, "--train_data_path", ev / "train.jsonl", "--output_dir",
                    away, "--reward_funcs", rule, "--reward_weights", "-1") == 0
    assert _evaluate("--model_name_or_path", away, "--baseline_model_name_or_path", tiny_dir, "--eval_data_path",
                     ev / "heldout.jsonl", "--reward_funcs", rule, "--max_new_tokens", "8",
                     "--output_dir", away / "eval") == 0

    up, down = _results(toward / "eval"), _results(away / "eval")
    assert (up["model"], up["baseline"]) == (str(toward), str(tiny_dir))
    for name, r in (("toward", up["results"]), ("away", down["results"])):
        print(f"{name}: win rate {r['win_rate']['mean']:.3f} {r['win_rate']['ci95']}, reward "
              f"{r['reward']['model']['mean']:.3f} vs {r['reward']['baseline']['mean']:.3f}, "
              f"KL {r['kl_per_token']['mean']:.4f} {r['kl_per_token']['ci95']}")
        assert r["prompts"] == 32 and r["samples_per_prompt"] == 4 and r["kl_per_token"]["ci95"][0] > 0
    r = up["results"]
    assert r["win_rate"]["ci95"][0] > 0.5 and r["reward"]["difference"]["ci95"][0] > 0
    assert r["reward"]["model"]["mean"] > r["reward"]["baseline"]["mean"]
    r = down["results"]
    assert r["win_rate"]["ci95"][1] < 0.5 and r["reward"]["difference"]["ci95"][1] < 0
    assert up["results"]["reward"]["baseline"] == r["reward"]["baseline"]  # the same start, the same seeds

    # The files agree with the numbers: each score is the rule on its completion, and the win rate worked out by
    # hand from the samples (per prompt, every model x baseline pair, ties half) is the one reported.
    from utils.evaluation.stats import win_share

    rows = _samples(toward / "eval")
    assert len(rows) == 32 * 4 and {r["index"] for r in rows} == set(range(32))
    namespace: dict = {}
    exec(REWARDS, namespace)
    for row in rows[:8]:
        assert row["model_score"] == pytest.approx(namespace["a_to_m"](None, [row["model_completion"]])[0])
    shares = []
    for i in range(32):
        group = [r for r in rows if r["index"] == i]
        ms, bs = [r["model_score"] for r in group], [r["baseline_score"] for r in group]
        shares.append(sum(1.0 if m > b else 0.5 if m == b else 0.0 for m in ms for b in bs) / 16)
    assert up["results"]["win_rate"]["mean"] == pytest.approx(sum(shares) / 32, abs=1e-12)
    assert win_share([1.0, 0.0], [0.0, 0.0]) == 0.75  # one win and one tie of two against two: (2 + 2 * 0.5) / 4
    report = (toward / "eval" / "report.md").read_text()
    assert "| win rate of the model over the baseline |" in report and "(rewards.png)" in report
    assert (toward / "eval" / "rewards.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- known answers
def _reward_model(path: Path) -> Path:
    """A tiny reward model with its own tokenizer (another vocabulary than the policy's), fixed random head."""
    from transformers import AutoModelForSequenceClassification

    from utils.toy.tiny_model import make_tiny

    make_tiny(str(path), hidden_size=32, vocab_size=400, seed=3)
    torch.manual_seed(3)
    AutoModelForSequenceClassification.from_pretrained(path, num_labels=1).save_pretrained(path)
    return path


def _direct_score(rm, tok, messages) -> float:
    """The reward model on its own chat template's text, one row at a time (independent of utils/model/rewards.py)."""
    text = tok.apply_chat_template(messages, tokenize=False)
    with torch.no_grad():
        return rm(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()


def test_model_against_itself_and_reward_model_accuracy(tiny_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm_dir = _reward_model(tmp_path / "rm")
    rm, tok = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval(), AutoTokenizer.from_pretrained(rm_dir)
    # 10 pairs of two different answers; the reward model's own order decides: for 7 rows `chosen` is the one it
    # scores higher, for 3 the lower one. Its pairwise accuracy is 0.7 by construction.
    rows = []
    for i, row in enumerate(style_pairs(10, seed=4)):
        a, b = row["chosen"], row["rejected"]
        high_first = _direct_score(rm, tok, row["prompt"] + a) > _direct_score(rm, tok, row["prompt"] + b)
        hi, lo = (a, b) if high_first else (b, a)
        rows.append({"prompt": row["prompt"], "chosen": hi if i < 7 else lo, "rejected": lo if i < 7 else hi})
    write_jsonl(tmp_path / "pairs.jsonl", rows)

    out = tmp_path / "self"
    assert _evaluate("--model_name_or_path", tiny_dir, "--baseline_model_name_or_path", tiny_dir, "--eval_data_path",
                     tmp_path / "pairs.jsonl", "--reward_model_path", rm_dir, "--num_samples", "3",
                     "--max_new_tokens", "6", "--output_dir", out) == 0
    r = _results(out)["results"]
    print("self:", r["win_rate"], r["kl_per_token"], r["preference"])
    assert _inside(0.5, r["win_rate"]) and r["win_rate"]["mean"] == 0.5
    assert abs(r["kl_per_token"]["mean"]) < 1e-6 and _inside(0.0, r["kl_per_token"])
    assert r["reward"]["model"]["mean"] == r["reward"]["baseline"]["mean"]
    assert r["preference"]["reward_accuracy"]["mean"] == pytest.approx(0.7)
    assert r["preference"]["implied_reward_accuracy"]["mean"] == 0.5  # log-ratios all 0: every pair a tie
    assert _results(out)["settings"]["preference_data"] is True


def test_dpo_evaluated_after_training(tiny_dir, ev, tmp_path):
    """DPO (LoRA) on GOOD-word vs BAD-word answers, evaluated at the end of training on held-out pairs: the rule
    that counts GOOD words orders every held-out pair right (1.0 by construction), and the trained adapter's implied
    DPO reward orders them better than chance."""
    write_jsonl(tmp_path / "pairs.jsonl", style_pairs(64, seed=0))
    write_jsonl(tmp_path / "heldout.jsonl", style_pairs(16, seed=9))
    out = tmp_path / "dpo"
    assert run_main("--rlhf_type", "DPO", "--train_mode", "lora", "--model_name_or_path", tiny_dir, "--train_data_path",
                    tmp_path / "pairs.jsonl", "--output_dir", out, "--max_steps", "12", "--per_device_train_batch_size",
                    "8", "--learning_rate", "5e-3", "--max_length", "64", "--save_strategy", "no", "--seed", "0",
                    "--disable_tqdm", "true", "--reward_funcs", f"{ev / 'rewards.py'}:good_words",
                    "--evaluate_after", "true", "--eval_prompts_path", tmp_path / "heldout.jsonl") == 0
    result = _results(out / "eval")
    assert (result["model"], result["baseline"]) == (str(out), str(tiny_dir))
    assert result["settings"]["base_model_name_or_path"] == str(tiny_dir)  # the adapter on the base it trained on
    pref = result["results"]["preference"]
    print("dpo:", pref)
    assert pref["rows"] == 16 and pref["reward_accuracy"]["mean"] == 1.0
    assert pref["implied_reward_accuracy"]["ci95"][0] > 0.5 and pref["implied_reward_margin"]["mean"] > 0


# ------------------------------------------------------------------------------------ distributed
@pytest.mark.distributed
def test_two_processes_equal_one(tiny_dir, ev, tmp_path):
    """`NPROC=2 bash script/eval_run.sh` (accelerate launch, gloo) on a LoRA adapter against its base (the default
    baseline) gives the numbers and samples of one process: 32 prompts in 7 batches of 5, split 3 + 4."""
    from test_distributed import _free_port
    from test_merge import _adapter

    adapter = _adapter(tiny_dir, tmp_path / "adapter", "causal")
    args = ["--model_name_or_path", str(adapter), "--eval_data_path", str(ev / "heldout.jsonl"),
            "--reward_funcs", f"{ev / 'rewards.py'}:a_to_m", "--num_samples", "3", "--max_new_tokens", "8",
            "--batch_size", "5", "--seed", "3"]
    two = tmp_path / "two"
    env = dict(ENV, NPROC="2", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(["bash", "script/eval_run.sh", *args, "--output_dir", str(two)], cwd=ROOT, env=env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    one = tmp_path / "one"
    assert _evaluate(*args, "--output_dir", one) == 0
    log = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, log[-4000:]
    assert "--num_processes 2" in log and log.count("win rate of the model") == 1  # rank 0 alone prints and writes
    a, b = _results(one), _results(two)
    assert a["baseline"] == str(tiny_dir) and a["results"]["kl_per_token"]["mean"] > 0
    assert a == b
    assert _samples(one) == _samples(two)


# ------------------------------------------------------------------------------------------ errors
def test_bad_input_is_refused_before_anything_is_written(tiny_dir, data_dir, ev, tmp_path, capsys):
    from test_merge import _adapter

    rule = f"{ev / 'rewards.py'}:a_to_m"
    out = tmp_path / "out"
    common = ["--eval_data_path", ev / "heldout.jsonl", "--output_dir", out]
    write_jsonl(tmp_path / "questions.jsonl", [{"question": "What is 2+2?"}])
    adapter = _adapter(tiny_dir, tmp_path / "adapter", "causal")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    cases = {
        "no reward source": (["--model_name_or_path", tiny_dir, "--baseline_model_name_or_path", tiny_dir, *common],
                             "No reward source"),
        "prompts in the wrong format": (["--model_name_or_path", tiny_dir, "--baseline_model_name_or_path", tiny_dir,
                                         "--eval_data_path", tmp_path / "questions.jsonl", "--output_dir", out,
                                         "--reward_funcs", rule], "questions.jsonl:1:"),
        "adapter without its base": (["--model_name_or_path", adapter, *common, "--reward_funcs", rule],
                                     "base model cannot be found"),
        "full model, no baseline": (["--model_name_or_path", tiny_dir, *common, "--reward_funcs", rule],
                                    "--baseline_model_name_or_path is required"),
    }
    for name, (argv, expected) in cases.items():
        assert _evaluate(*argv) == 2, name
        err = capsys.readouterr().err
        assert expected in err and err.count("error:") == 1 and "Traceback" not in err, (name, err)
        assert not out.exists(), name
    train = ["--rlhf_type", "GRPO", "--model_name_or_path", tiny_dir, "--train_data_path", ev / "train.jsonl",
             "--reward_funcs", rule, "--output_dir", out]
    for argv, expected in [(["--evaluate_after", "true"], "needs --eval_prompts_path"),
                           (["--evaluate_after", "true", "--eval_prompts_path", tmp_path / "questions.jsonl"],
                            "questions.jsonl:1:"),
                           (["--eval_prompts_path", ev / "heldout.jsonl"], "add --evaluate_after true"),
                           (["--rlhf_type", "Reward", "--train_data_path", data_dir / "reward.jsonl",
                             "--evaluate_after", "true", "--eval_prompts_path", ev / "heldout.jsonl"],
                            "trains a reward model")]:
        assert run_main(*train, *argv) == 2, argv
        assert expected in capsys.readouterr().err and not out.exists(), argv
