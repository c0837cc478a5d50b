"""The README's demo (`python -m utils.demo --quick`): every stage runs through main_train and each held-out
metric improves by at least the margin documented in utils/demo.py (MIN_GAIN, above the noise measured over
seeds), and each policy stage beats the model it started from (win rate by utils/evaluation/run.py); report.md and
valid PNG curves are written. Also the rule and `python -m utils.plot` on their own."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ENV, ROOT

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _valid_png(path) -> bool:
    import matplotlib.image

    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return False
    image = matplotlib.image.imread(path)
    return image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50


def test_rule_and_reward_function():
    from utils.demo import sort_reward
    from utils.toy.demo_task import answer_of, score

    prompt = "sort 3 1 2 ="
    assert answer_of(prompt) == " 1 2 3"
    assert score(prompt, " 1 2 3") == 1.0 and score(prompt, "1 2 3") == 1.0
    assert score(prompt, " 3 2 1") == 0.5  # sorted, the wrong way round
    assert score(prompt, " 1 3 2") == pytest.approx(0.5 / 3) and score(prompt, "") == 0.0
    assert sort_reward([prompt, prompt], [" 1 2 3", " 2 1"]) == [1.0, 0.0]


def test_plot_command(tmp_path):
    history = [{"step": i, "loss": 1.0 / i, "reward": i / 10, "learning_rate": 1e-3, "grad_norm": 1.0}
               for i in range(1, 11)] + [{"step": 10, "train_runtime": 3.0}]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    proc = subprocess.run([sys.executable, "-m", "utils.plot", str(tmp_path)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert _valid_png(tmp_path / "curves.png")
    from utils.evaluation.plots import curves, load_history

    assert list(curves(load_history(str(tmp_path)))) == ["loss", "reward"]  # no lr, grad norm or timings
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "trainer_state.json").write_text(json.dumps({"log_history": [{"step": 1, "epoch": 0.1}]}))
    assert subprocess.run([sys.executable, "-m", "utils.plot", str(empty)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120).returncode == 2


@pytest.mark.demo
def test_quick_demo_every_stage_learns(tmp_path):
    out = tmp_path / "demo"
    # One thread per process, as script/demo.sh sets: tiny models, and robust on a shared machine.
    env = dict(ENV, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "utils.demo", "--quick", "--output_dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    print(proc.stdout[-3000:])
    results = json.loads((out / "results.json").read_text())
    stages = {s["name"]: s for s in results["stages"]}
    assert list(stages) == ["SFT", "Reward", "DPO", "GRPO", "GKD"]
    for name, s in stages.items():
        assert s["command"].startswith("python main_train.py --rlhf_type "), name
        assert s["before"] is not None and s["after"] is not None, f"{name}: {s['status']}"
        assert s["gain"] >= results["min_gain"][name], f"{name}: gain {s['gain']:.3f} {s['status']}"
        assert s["status"] == "ok", name
    assert stages["GKD"]["after"] < stages["GKD"]["before"]  # divergence: lower is better
    # Win rate of each policy stage over the model it started from, under the rule, by utils/evaluation/run.py: every
    # stage's interval lies above 0.5 (the reward model does not generate: no win rate).
    assert stages["Reward"]["win_rate"] is None
    for name in ("SFT", "DPO", "GRPO", "GKD"):
        win = stages[name]["win_rate"]
        assert win["ci95"][0] > 0.5, f"{name}: win rate {win}"
        assert stages[name]["eval_command"].startswith("python -m utils.evaluate ")
        assert json.loads((out / "eval" / name.lower() / "eval.json").read_text())["results"]["win_rate"] == win
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "| SFT |" in proc.stdout and "| GKD |" in proc.stdout  # the table is printed

    report = (out / "report.md").read_text()
    for name, s in stages.items():
        assert s["command"] in report and f"| {name} |" in report and s["eval_command"] in report
        png = out / f"curves_{name.lower()}.png"
        assert f"({png.name})" in report and _valid_png(png), name
