"""The real-model demo as the README gives it (`bash script/demo.sh --real`, here `python -m utils.demo --real`):
SmolLM2-135M-Instruct learns to answer in one sentence. Asserts what the demo claims: exit code 0, a win rate of
the final model over the start whose 95 % interval lies above 0.5, every factual question still answered right,
answers that got shorter, under 10 minutes, and the report with its side-by-side answers."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli

pytestmark = [pytest.mark.demo, pytest.mark.real]


def test_real_demo(tmp_path):
    out = tmp_path / "demo_real"
    proc = run_cli("--real", "--output_dir", out, module="utils.demo", timeout=1200, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads((out / "results.json").read_text())
    assert r["win_rate"]["ci95"][0] > 0.5
    assert all(f["right_after"] for f in r["facts"])
    assert r["reward"]["model"]["mean"] > r["reward"]["baseline"]["mean"]
    assert r["length"]["model"]["mean_tokens"] < r["length"]["baseline"]["mean_tokens"]
    assert sum(s["after_score"] for s in r["shown"]) > sum(s["before_score"] for s in r["shown"])
    assert r["seconds"] < 600
    report = (out / "report.md").read_text()
    assert "| question | before | after |" in report and "PASSED" in report
