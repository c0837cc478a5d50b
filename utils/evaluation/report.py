"""The files of utils/evaluation/run.py: eval.json (every number, the settings, both models' paths), eval_samples.jsonl
(per prompt and sample: the prompt, both sides' completions and their scores), report.md with rewards.png (the
distribution of both sides' rewards) and the table, which is also printed."""

from __future__ import annotations

import json
import os

from utils.evaluation.stats import table

FILES = ("eval.json", "eval_samples.jsonl", "report.md", "rewards.png")


def _line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def sample_rows(records: list[dict]):
    for r in records:
        for j, (m, b) in enumerate(zip(r["model"], r["baseline"])):
            yield {"index": r["index"], "sample": j, "prompt": r["prompt"],
                   "model_completion": m["completion"], "model_score": m["score"], "model_rewards": m["rewards"],
                   "baseline_completion": b["completion"], "baseline_score": b["score"],
                   "baseline_rewards": b["rewards"], "model_tokens": m["tokens"], "baseline_tokens": b["tokens"]}


def write_outputs(out: str, records: list[dict], result: dict) -> None:
    """Write the four files (each whole or not at all) and print the table."""
    from utils.evaluation.plots import plot_distributions

    os.makedirs(out, exist_ok=True)
    _atomic(os.path.join(out, "eval.json"), json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    _atomic(os.path.join(out, "eval_samples.jsonl"), "".join(_line(row) for row in sample_rows(records)))
    scores = {f"{side} ({os.path.basename(os.path.normpath(result[side]))})":
              [s["score"] for r in records for s in r[side] if s["score"] is not None]
              for side in ("model", "baseline")}
    plot_distributions(scores, os.path.join(out, "rewards.png"), "reward of each sample")
    summary = table(result["results"])
    _atomic(os.path.join(out, "report.md"), report(result, summary))
    print(f"\nmodel {result['model']} vs baseline {result['baseline']}: {result['results']['prompts']} prompts x "
          f"{result['settings']['num_samples']} samples each\n{summary}\n(eval.json, eval_samples.jsonl, report.md "
          f"in {out})")


def _atomic(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def report(result: dict, summary: str) -> str:
    s = result["settings"]
    rewards = " ".join([*s["reward_model_path"], *s["reward_funcs"]])
    weights = f", weights {s['reward_weights']}" if s["reward_weights"] else ""
    return "\n".join([
        "# Evaluation", "",
        f"- model: `{result['model']}`" + (f" (adapter on `{s['base_model_name_or_path']}`)"
                                            if s["base_model_name_or_path"] else ""),
        f"- baseline: `{result['baseline']}`",
        f"- prompts: `{s['eval_data_path']}`, {s['prompts']} prompts, {s['num_samples']} samples per prompt from each "
        f"side, the same seeds ({s['seed']}), temperature {s['temperature']}, top_p {s['top_p']}, top_k {s['top_k']}, "
        f"max_new_tokens {s['max_new_tokens']}",
        f"- reward: {rewards}{weights}", "",
        summary, "",
        "Intervals: 95 % percentile bootstrap over prompts "
        f"({s['bootstrap']} resamples, seed {s['seed']}). Reward: mean over prompts of each prompt's mean score. Win "
        "rate: per prompt, the share of all (model sample, baseline sample) pairs the model's sample scores higher, "
        "a tie counting half, averaged over prompts. KL: mean over the model's sampled tokens of log p_model - "
        "log p_baseline at the sampling temperature." + (
            f" Implied DPO reward: beta ({s['beta']}) x (log p_model - log p_baseline) of `chosen` vs `rejected`."
            if s["preference_data"] else ""), "",
        "![reward distributions](rewards.png)", ""])
