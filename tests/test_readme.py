"""The command lines of the README and of every docs/ page, as written: each ```bash block of README.md from its
first section on (the quick tour, the methods' launch lines) and of every docs/*.md page runs, in a fresh shell whose
only set-up is the README's own `source .venv/bin/activate`, on the tiny model the quick tour builds, and each
command finishes within two minutes. A command that appears on several pages (the same text) runs once, where it
first appears: README first, then the pages by name. Skipped, in a way the reader sees: lines that stand for the
user's own arguments (`ARGS`), and blocks whose first line is `# Not run by tests/test_readme.py: WHY`."""

from __future__ import annotations

import os
import re
import subprocess

from conftest import ENV, ROOT

SKIP = "# Not run by tests/test_readme.py:"


def pages() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def page_blocks(path) -> list[str]:
    """The ```bash blocks of one page (README: from its first section on; the two commands above it are the
    user's), less those marked with SKIP, which must say why."""
    text = path.read_text()
    if path.name == "README.md":
        text = text[text.index("\n## "):]
    assert not re.search(r"```(sh|shell|console|zsh)\n", text), f"{path.name}: commands go in ```bash blocks"
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    for block in blocks:
        if block.startswith(SKIP):
            assert len(block.splitlines()[0]) > len(SKIP) + 5, f"{path.name}: say why the block is not run: {block}"
    return [block for block in blocks if not block.startswith(SKIP)]


def _statements(block: str) -> list[str]:
    """The block's commands, less ARGS lines, comments and `source`; a loop is one statement."""
    lines = [line for line in block.splitlines() if line.strip() and "ARGS" not in line
             and not line.startswith(("source ", "#"))]
    return ["\n".join(lines)] if any(line.startswith("for ") for line in lines) else lines


def command_blocks(report: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """(page, statements) for every block, in reading order, each statement kept only where it first appears;
    `report` gets one line per page: what runs there, what ran on an earlier page, what is skipped."""
    seen, out = set(), []
    for path in pages():
        blocks, fresh_count, repeated = page_blocks(path), 0, 0
        for block in blocks:
            statements = _statements(block)
            fresh = [s for s in statements if " ".join(s.split()) not in seen]
            seen.update(" ".join(s.split()) for s in fresh)
            fresh_count, repeated = fresh_count + len(fresh), repeated + len(statements) - len(fresh)
            if fresh:
                out.append((path.name, fresh))
        if report is not None:
            args = len(re.findall(r"^.*ARGS.*$", "".join(blocks), flags=re.M))
            marked = len(re.findall("```bash\n" + re.escape(SKIP), path.read_text()))
            report.append(f"{path.name}: {fresh_count} commands run here, {repeated} already run on an earlier page, "
                          f"{args} ARGS lines skipped, {marked} blocks marked not run")
    return out


def _cost(statements: list[str]) -> int:
    """Commands to start (a loop runs its body twice)."""
    return sum(s.count("python ") * (2 if "\nfor " in "\n" + s else 1) for s in statements)


def _lanes(blocks: list[tuple[str, list[str]]]) -> list[list[tuple[str, list[str]]]]:
    """The blocks in two lanes that run side by side (two cores), a block in the lane of any block whose outputs
    (`--output_dir runs/X`, `utils.tiny_model runs/X`) it reads."""
    lanes: list[list] = [[], []]
    made: dict[str, int] = {}
    for page, statements in blocks:
        text = "\n".join(statements)
        reads = [made[p] for p in re.findall(r"(runs/\w+)", text) if p in made]
        lane = reads[0] if reads else min((0, 1), key=lambda i: sum(_cost(b[1]) for b in lanes[i]))
        lanes[lane].append((page, statements))
        for path in re.findall(r"(?:--output_dir|utils\.tiny_model) (runs/\w+)", text):
            made[path] = lane
    return lanes


def _script(blocks: list[tuple[str, list[str]]]) -> str:
    """bash that activates the venv as the README says, then runs each statement and prints its page and seconds."""
    out = ["set -e", "source .venv/bin/activate"]
    for page, statements in blocks:
        for statement in statements:
            label = f"{page}: {statement.splitlines()[0][:90]}".replace("'", "")
            out += ["t=$(date +%s%N)", statement, f"echo \"TIME $(( ($(date +%s%N) - t) / 1000000 )) ms '{label}'\""]
    return "\n".join(out)


def test_readme_and_docs_lines_run_as_written(tmp_path):
    """In a directory of links to the checkout (so that `runs/` is fresh), with no venv on PATH: the README's first
    block (it builds runs/tiny), then the others in two lanes."""
    for item in ROOT.iterdir():
        if item.name not in ("runs", ".git", ".pytest_cache"):
            os.symlink(item, tmp_path / item.name)
    env = {k: v for k, v in ENV.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # the README's `source .venv/bin/activate` must bring python
    env["OMP_NUM_THREADS"] = "1"
    first = page_blocks(ROOT / "README.md")[0]
    assert "source .venv/bin/activate" in first and "utils.tiny_model runs/tiny" in first
    report: list[str] = []
    blocks = command_blocks(report)
    assert blocks[0] == ("README.md", _statements(first)) and len(blocks) >= 5
    timings, logs = [], []
    for group in [[blocks[:1]], _lanes(blocks[1:])]:
        procs = [subprocess.Popen(["bash", "-c", _script(lane)], cwd=tmp_path, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for lane in group if lane]
        for proc in procs:
            log = proc.communicate(timeout=900)[0]
            logs.append(log)
            assert proc.returncode == 0, log[-4000:]
            timings += [(int(ms) / 1000, line) for ms, line in re.findall(r"TIME (\d+) ms '(.*)'", log)]
    for seconds, line in timings:
        print(f"{seconds:6.1f} s  {line}")
    print("\n".join(report))
    # 23 commands before the README was split into docs/ pages; every one of them still runs, wherever it moved
    assert len(timings) >= 23 and len(timings) == sum(len(s) for _, s in blocks), logs
    slow = [(s, line) for s, line in timings if s > 120 and not line.split(": ", 1)[1].startswith("MODEL=")]
    assert not slow, slow
