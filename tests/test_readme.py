"""The README's launch lines as written: every command of the "Launch lines" and "Recipes" sections (parsed out of
README.md) runs, in a fresh shell whose only set-up is the README's own `source .venv/bin/activate`, on the tiny
model it builds, and each finishes within two minutes. Lines that stand for the user's own arguments (`ARGS`)
are skipped."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import ENV, ROOT

SECTIONS = ("## Launch lines", "## Recipes")


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = []
    for title in SECTIONS:
        start = text.index(title)
        section = text[start:text.index("\n## ", start + 1)]
        blocks += re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return blocks


def _cost(block: str) -> int:
    """Commands to start (a loop runs its body twice)."""
    return block.count("python ") * (2 if "\nfor " in "\n" + block else 1)


def _lanes(blocks: list[str]) -> list[list[str]]:
    """The blocks in two lanes that run side by side (two cores), a block in the lane of any block whose outputs
    (`--output_dir runs/X`, `utils.toy.tiny_model runs/X`) it reads."""
    lanes: list[list[str]] = [[], []]
    made: dict[str, int] = {}
    for block in blocks:
        reads = [made[p] for p in re.findall(r"(runs/\w+)", block) if p in made]
        lane = reads[0] if reads else min((0, 1), key=lambda i: sum(map(_cost, lanes[i])))
        lanes[lane].append(block)
        for path in re.findall(r"(?:--output_dir|utils\.tiny_model) (runs/\w+)", block):
            made[path] = lane
    return lanes


def _script(blocks: list[str]) -> str:
    """bash that activates the venv as the README says, then runs each statement and prints its seconds; a loop
    is one statement."""
    out = ["set -e", "source .venv/bin/activate"]
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip() and "ARGS" not in line
                 and not line.startswith("source ")]
        statements = ["\n".join(lines)] if any(line.startswith("for ") for line in lines) else lines
        for statement in statements:
            label = statement.splitlines()[0][:90].replace("'", "")
            out += ["t=$(date +%s%N)", statement, f"echo \"TIME $(( ($(date +%s%N) - t) / 1000000 )) ms '{label}'\""]
    return "\n".join(out)


def test_readme_lines_run_as_written(tmp_path):
    """In a directory of links to the checkout (so that `runs/` is fresh), with no venv on PATH: the first block
    (it builds runs/tiny), then the others in two lanes."""
    for item in ROOT.iterdir():
        if item.name not in ("runs", ".git", ".pytest_cache"):
            os.symlink(item, tmp_path / item.name)
    env = {k: v for k, v in ENV.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # the README's `source .venv/bin/activate` must bring python
    env["OMP_NUM_THREADS"] = "1"
    blocks = readme_blocks()
    assert len(blocks) >= 5 and "source .venv/bin/activate" in blocks[0]
    timings, logs = [], []
    for group in [[[blocks[0]]], _lanes(blocks[1:])]:
        procs = [subprocess.Popen(["bash", "-c", _script(lane)], cwd=tmp_path, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for lane in group if lane]
        for proc in procs:
            log = proc.communicate(timeout=900)[0]
            logs.append(log)
            assert proc.returncode == 0, log[-4000:]
            timings += [(int(ms) / 1000, line) for ms, line in re.findall(r"TIME (\d+) ms '(.*)'", log)]
    for seconds, line in timings:
        print(f"{seconds:6.1f} s  {line}")
    assert len(timings) >= 20, logs
    slow = [(s, line) for s, line in timings if s > 120 and not line.startswith("MODEL=")]
    assert not slow, slow
