"""The files of a rejection-sampling run (utils/sampling/rejection.py): samples.jsonl (the record), best.jsonl and
pairs.jsonl (derived from it), and summary.json. Written a whole prompt at a time, cut back to complete prompts
and rebuilt on resume, so that an interrupted run loses at most the prompt it was writing."""

from __future__ import annotations

import json
import logging
import os
import statistics

from utils.core.errors import UserError

log = logging.getLogger("rejection_sampling")
FILES = ("samples.jsonl", "best.jsonl", "pairs.jsonl")
# Settings that change what is sampled; a resumed run must use the same ones.
SAMPLING_KEYS = ("model_name_or_path", "base_model_name_or_path", "train_data_path", "reward_model_path",
                 "reward_funcs", "reward_weights", "num_samples", "max_new_tokens", "temperature", "top_p",
                 "top_k", "batch_size", "seed", "dtype", "load_in_4bit")


def select(rows: list[dict], min_score, min_margin) -> tuple[dict | None, dict | None]:
    """best.jsonl and pairs.jsonl rows for one prompt's samples (None where the prompt is not kept)."""
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return None, None
    best = max(scored, key=lambda r: r["score"])  # first of equals: deterministic
    worst = min(scored, key=lambda r: r["score"])
    prompt = rows[0]["prompt"]
    images = {"images": rows[0]["images"]} if rows[0].get("images") else {}  # a vision-language model's prompts
    best_row = None
    if min_score is None or best["score"] >= min_score:
        best_row = {"prompt": prompt, "completion": best["completion"], **images}
    gap = best["score"] - worst["score"]
    pair_row = None
    if gap > 0 and gap >= min_margin and best["completion"] != worst["completion"]:
        pair_row = {"prompt": prompt, "chosen": best["completion"], "rejected": worst["completion"], **images}
    return best_row, pair_row


def _line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------- outputs
class Outputs:
    """The three JSONL files. Each prompt is appended as whole lines and flushed, samples first; on open,
    `samples.jsonl` is cut back to its complete prompts and the two derived files are rebuilt from it."""

    def __init__(self, args):
        self.dir, self.args = args.output_dir, args
        os.makedirs(self.dir, exist_ok=True)
        self._check_settings()
        self.groups: dict[int, list[dict]] = {}  # index -> its samples, for the summary and resume
        self.kept_best = self.kept_pairs = 0
        lines = self._complete_lines()
        self._rewrite("samples.jsonl", lines)
        best, pairs = [], []
        for index, rows in self.groups.items():
            b, p = select(rows, args.min_score, args.min_margin)
            best += [_line(b)] if b else []
            pairs += [_line(p)] if p else []
        self.kept_best, self.kept_pairs = len(best), len(pairs)
        self._rewrite("best.jsonl", best)
        self._rewrite("pairs.jsonl", pairs)
        self.handles = {name: open(os.path.join(self.dir, name), "a", encoding="utf-8") for name in FILES}

    def _check_settings(self):
        path = os.path.join(self.dir, "sampling_args.json")
        settings = {k: getattr(self.args, k) for k in SAMPLING_KEYS}
        if os.path.exists(path) and not self.args.overwrite:
            with open(path) as f:
                old = json.load(f)
            changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
            if changed:
                raise UserError(f"{self.dir} holds a sampling run with other settings ({'; '.join(changed)}); a "
                                "resumed run must sample the same way. Use another --output_dir, or --overwrite "
                                "to start over.")
        elif self.args.overwrite:
            for name in FILES:
                if os.path.exists(os.path.join(self.dir, name)):
                    os.remove(os.path.join(self.dir, name))
        with open(path + ".tmp", "w") as f:
            json.dump(settings, f, indent=1)
        os.replace(path + ".tmp", path)

    def _complete_lines(self) -> list[str]:
        """Lines of the prompts whose every sample reached samples.jsonl (a torn last line is dropped)."""
        path = os.path.join(self.dir, "samples.jsonl")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            text = f.read()
        by_index: dict[int, list[tuple[str, dict]]] = {}
        for line in text.split("\n")[:-1]:  # the part after the last newline is a torn line, or empty
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            by_index.setdefault(row["index"], []).append((line + "\n", row))
        lines = []
        for index, items in by_index.items():
            if len(items) == self.args.num_samples:
                self.groups[index] = [row for _, row in items]
                lines += [line for line, _ in items]
        if self.groups:
            log.info("resuming: %d prompts already done in %s", len(self.groups), path)
        return lines

    def _rewrite(self, name: str, lines: list[str]) -> None:
        path = os.path.join(self.dir, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write("".join(lines))
        os.replace(path + ".tmp", path)  # atomic: a kill leaves the old file or the new one, never a mix

    def add(self, index: int, rows: list[dict]) -> None:
        self.groups[index] = rows
        self._write("samples.jsonl", "".join(_line(r) for r in rows))
        best, pair = select(rows, self.args.min_score, self.args.min_margin)
        if best:
            self.kept_best += 1
            self._write("best.jsonl", _line(best))
        if pair:
            self.kept_pairs += 1
            self._write("pairs.jsonl", _line(pair))

    def _write(self, name: str, text: str) -> None:
        self.handles[name].write(text)
        self.handles[name].flush()

    def close(self) -> None:
        for h in self.handles.values():
            h.close()


def summarize(outputs: Outputs, total_prompts: int) -> dict:
    """The score distribution over every sample, over each prompt's best, and of best - worst."""
    scored = [s for rows in outputs.groups.values() if (s := [r["score"] for r in rows if r["score"] is not None])]

    def dist(xs):
        if not xs:
            return {"n": 0}
        q = statistics.quantiles(xs, n=10, method="inclusive") if len(xs) > 1 else [xs[0]] * 9
        return {"n": len(xs), "mean": statistics.fmean(xs), "std": statistics.pstdev(xs), "min": min(xs),
                "p10": q[0], "median": q[4], "p90": q[8], "max": max(xs)}

    n_samples = sum(len(rows) for rows in outputs.groups.values())
    return {"prompts_done": len(outputs.groups), "prompts_total": total_prompts,
            "samples_unscored": n_samples - sum(len(s) for s in scored),
            "score": dist([x for s in scored for x in s]), "best_score": dist([max(s) for s in scored]),
            "best_minus_worst": dist([max(s) - min(s) for s in scored]),
            "best_rows": outputs.kept_best, "pair_rows": outputs.kept_pairs}


def print_summary(s: dict, output_dir: str) -> None:
    print(f"prompts done: {s['prompts_done']}/{s['prompts_total']} ({s['samples_unscored']} samples unscored)")
    labels = {"score": "all samples", "best_score": "best per prompt", "best_minus_worst": "best - worst"}
    for key, label in labels.items():
        print(f"{label:16s} " + " ".join(f"{k}={v:.4g}" for k, v in s[key].items()))
    print(f"best.jsonl: {s['best_rows']} rows, pairs.jsonl: {s['pair_rows']} rows, in {output_dir}")
