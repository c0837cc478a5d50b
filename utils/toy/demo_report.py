"""The demo's record of each stage and its report (utils/demo.py runs the stages): the table (also printed),
DIR/report.md with every command and the training curves, DIR/results.json."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from utils.toy.demo_task import LIST_LENGTH


@dataclass
class Stage:
    name: str
    metric: str
    before: float | None = None
    after: float | None = None
    status: str = "not run"
    seconds: float = 0.0
    command: str = ""
    output_dir: str = ""
    lower_is_better: bool = False
    facts: dict = field(default_factory=dict)  # the numbers of the notes column (note() writes them)
    win_rate: dict | None = None  # over the model the stage started from, under the rule (utils/evaluation/run.py)
    eval_command: str = ""

    @property
    def gain(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.before - self.after if self.lower_is_better else self.after - self.before

    @property
    def trained(self) -> bool:  # main_train exited 0 and the model it saved was measured
        return self.after is not None


def _fmt(x) -> str: return "-" if x is None else f"{x:.3f}"  # noqa: E704


def _win(w) -> str: return "-" if not w else f"{w['mean']:.3f} [{w['ci95'][0]:.3f}, {w['ci95'][1]:.3f}]"  # noqa: E704


def note(s: Stage) -> str:
    """The notes column, written from the stage's numbers."""
    f = s.facts
    if "training_pairs" in f:
        return f"{f['training_pairs']} training pairs, {f['heldout_pairs']} held-out pairs"
    if "teacher" in f:
        return (f"teacher {f['teacher']} ({f['teacher_hidden']}x{f['teacher_layers']}), student "
                f"{f['student_hidden']}x{f['student_layers']}")
    if "rule_reward_after" in f:
        return f"mean rule reward {f['rule_reward_before']:.2f} -> {f['rule_reward_after']:.2f}"
    return f"{f['rule_reward_before']:.2f} -> " if "rule_reward_before" in f else ""  # did not train


def table(stages: list[Stage]) -> str:
    rows = ["| stage | metric (held-out) | before | after | win rate vs start [95 % CI] | status | train time "
            "| notes |", "|" + "---|" * 8]
    rows += [f"| {s.name} | {s.metric} | {_fmt(s.before)} | {_fmt(s.after)} | {_win(s.win_rate)} | {s.status} | "
             f"{s.seconds:.0f} s | {note(s)} |" for s in stages]
    return "\n".join(rows)


def write_report(out: str, stages: list[Stage], settings, mode: str, seconds: float, min_gain: dict) -> None:
    """DIR/report.md and DIR/results.json (`settings`: the demo's sizes, a dataclass)."""
    lines = [f"# Demo report ({mode}, {seconds:.0f} s)", "", f"Task: sort {LIST_LENGTH[0]}-{LIST_LENGTH[1]} digits "
             "ascending (`sort 7 3 9 1 =` -> ` 1 3 7 9`); half the SFT demonstrations are sorted descending. The "
             "rule gives 1 (ascending), 0.5 (descending), else at most 0.5. Every metric is measured, greedy, on "
             "held-out prompts no stage trained on. Win rate: each stage's model against the model it started from "
             "(GKD: the fresh student), rule reward, 4 samples per held-out prompt from each side at temperature 1, "
             "ties half (utils/evaluation/run.py; its report is in eval/STAGE/).", "", table(stages), "",
             "## Each stage by hand", "", "```bash"]
    lines += [c for s in stages for c in (s.command, s.eval_command) if c] + ["```", "", "## Training curves", ""]
    lines += curves(out, stages)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"mode": mode, "seconds": seconds, "settings": asdict(settings), "min_gain": min_gain,
                   "stages": [dict(asdict(s), note=note(s), gain=s.gain) for s in stages]}, f, indent=1)


def curves(out: str, stages: list[Stage]) -> list[str]:
    """DIR/curves_STAGE.png of every stage that logged training, and the report's lines that show them."""
    from utils.evaluation.plots import plot_run

    lines = []
    for s in stages:
        if s.output_dir and os.path.isfile(os.path.join(s.output_dir, "trainer_state.json")):
            try:
                png = plot_run(s.output_dir, os.path.join(out, f"curves_{s.name.lower()}.png"), f"{s.name} training")
                lines.append(f"![{s.name}]({os.path.basename(png)})")
            except (OSError, ValueError) as e:
                lines.append(f"{s.name}: no curve ({e})")
    return lines
