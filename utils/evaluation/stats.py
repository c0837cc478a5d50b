"""The numbers of utils/evaluation/run.py, from the per-prompt records every process gathered.

Each interval is a 95 % percentile bootstrap over prompts (`--bootstrap` resamples drawn with `--seed`): prompts
are what varies from one evaluation set to another; the samples of one prompt are not independent of each other.

- reward: per side, the mean over prompts of each prompt's mean score (unscored samples left out);
- win rate: per prompt, the share of all (model sample, baseline sample) pairs the model's wins, a tie counting
  half; then the mean over prompts. A model compared with itself wins exactly half;
- KL(model || baseline) per token: the mean over every token of the model's samples of
  log p_model(token) - log p_baseline(token), both at the sampling temperature, tokens pooled over prompts (the
  interval resamples prompts with their tokens); an unbiased estimate of the KL of the sampled distributions at
  --top_p 1 and --top_k 0;
- lengths: tokens per completion (its EOS included), and the share that hit max_new_tokens without EOS;
- preference rows: the reward sources' pairwise accuracy (chosen scored above rejected, a tie counting half) and
  the model's implied DPO reward accuracy, beta * (log pi(y|x) - log pi_base(y|x)) higher for chosen.
"""

from __future__ import annotations

import math


def interval(values, weights=None, resamples: int = 1000, seed: int = 0) -> list[float] | None:
    """95 % percentile bootstrap interval of the mean of `values` (or of sum(values) / sum(weights))."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return None
    idx = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    if weights is None:
        stats = values[idx].mean(axis=1)
    else:
        stats = values[idx].sum(axis=1) / np.asarray(weights, dtype=float)[idx].sum(axis=1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def _estimate(values, a, weights=None) -> dict | None:
    if not values:
        return None
    mean = sum(values) / (sum(weights) if weights is not None else len(values))
    return {"mean": mean, "ci95": interval(values, weights, a.bootstrap, a.seed), "n": len(values)}


def _mean(xs):
    return sum(xs) / len(xs) if xs else None


def win_share(model: list[float], baseline: list[float]) -> float:
    """The share of all (model, baseline) score pairs the model wins, a tie counting half."""
    wins = sum(1.0 if m > b else 0.5 if m == b else 0.0 for m in model for b in baseline)
    return wins / (len(model) * len(baseline))


def _scored(samples) -> list[float]:
    return [s["score"] for s in samples if s["score"] is not None]


def summarize(records: list[dict], a, plan) -> dict:
    per_side = {side: [_scored(r[side]) for r in records] for side in ("model", "baseline")}
    reward = {side: _estimate([_mean(s) for s in scores if s], a) for side, scores in per_side.items()}
    both = [(m, b) for m, b in zip(per_side["model"], per_side["baseline"]) if m and b]
    reward["difference"] = _estimate([_mean(m) - _mean(b) for m, b in both], a)
    out = {"prompts": len(records), "samples_per_prompt": a.num_samples, "reward": reward,
           "win_rate": _estimate([win_share(m, b) for m, b in both], a),
           "unscored_samples": {side: sum(len(r[side]) for r in records) - sum(map(len, scores))
                                for side, scores in per_side.items()}}
    if plan.kl:
        kl = [r["kl"] for r in records]
        out["kl_per_token"] = _estimate([s for s, _ in kl], a, [n for _, n in kl])
    else:
        out["kl_per_token"] = None
        out["kl_note"] = ("not computed: the completions hold tool results the models did not write" if plan.tools
                          else "not computed for prompts with images" if plan.images
                          else "not computed: the model's and the baseline's tokenizers differ")
    if plan.tools:
        out["tools"] = {side: _tool_rates([s for r in records for s in r[side]], a)
                        for side in ("model", "baseline")}
    out["length"] = {side: {"mean_tokens": _mean([s["tokens"] for r in records for s in r[side]]),
                            "truncated_share": _mean([0.0 if s["finished"] else 1.0 for r in records
                                                      for s in r[side]])} for side in ("model", "baseline")}
    if plan.preference:
        out["preference"] = _preference([r["pair"] for r in records], a, plan.same_vocab)
    return out


def _tool_rates(samples: list[dict], a) -> dict:
    """Share of samples that called a tool at least once, calls per sample, share of calls that failed."""
    calls = sum(s["tool_calls"] for s in samples)
    return {"call_rate": _mean([1.0 if s["tool_calls"] else 0.0 for s in samples]),
            "calls_per_sample": calls / len(samples) if samples else 0.0,
            "failure_rate": sum(s["tool_failures"] for s in samples) / calls if calls else 0.0}


def _ordered(first, second) -> float:
    return 1.0 if first > second else 0.5 if first == second else 0.0


def _preference(pairs: list[dict], a, same_vocab: bool) -> dict:
    scored = [p for p in pairs if p["chosen_score"] is not None and p["rejected_score"] is not None]
    out = {"rows": len(pairs), "reward_accuracy": _estimate([_ordered(p["chosen_score"], p["rejected_score"])
                                                             for p in scored], a)}
    if same_vocab:
        chosen = [a.beta * p["chosen_logratio"] for p in pairs]
        rejected = [a.beta * p["rejected_logratio"] for p in pairs]
        out["implied_reward_accuracy"] = _estimate([_ordered(c, r) for c, r in zip(chosen, rejected)], a)
        out["implied_reward_margin"] = _estimate([c - r for c, r in zip(chosen, rejected)], a)
    return out


# -------------------------------------------------------------------------------------------- table
def _fmt(e: dict | None, digits: int = 3) -> str:
    if not e:
        return "-"
    if e.get("ci95") is None or not all(math.isfinite(x) for x in e["ci95"]):
        return f"{e['mean']:.{digits}f}"
    lo, hi = e["ci95"]
    return f"{e['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table(results: dict) -> str:
    """The summary as a markdown table: metric | model | baseline."""
    r = results
    length = r["length"]
    rows = [("mean reward [95 % CI]", _fmt(r["reward"]["model"]), _fmt(r["reward"]["baseline"])),
            ("reward difference, model - baseline", _fmt(r["reward"]["difference"]), ""),
            ("win rate of the model over the baseline", _fmt(r["win_rate"]), ""),
            ("KL(model ‖ baseline) per token", _fmt(r["kl_per_token"], 4) if r["kl_per_token"] else
             r.get("kl_note", "-"), ""),
            ("mean completion length (tokens, EOS included)", f"{length['model']['mean_tokens']:.1f}",
             f"{length['baseline']['mean_tokens']:.1f}"),
            ("share that hit max_new_tokens without EOS", f"{length['model']['truncated_share']:.3f}",
             f"{length['baseline']['truncated_share']:.3f}")]
    tools = r.get("tools")
    if tools:
        rows += [("share of samples that called a tool", f"{tools['model']['call_rate']:.3f}",
                  f"{tools['baseline']['call_rate']:.3f}"),
                 ("tool calls per sample", f"{tools['model']['calls_per_sample']:.2f}",
                  f"{tools['baseline']['calls_per_sample']:.2f}"),
                 ("share of tool calls that failed (raised, timed out, unknown tool)",
                  f"{tools['model']['failure_rate']:.3f}", f"{tools['baseline']['failure_rate']:.3f}")]
    pref = r.get("preference")
    if pref:
        rows.append(("pairwise accuracy of the reward sources (chosen > rejected)", _fmt(pref["reward_accuracy"]),
                     ""))
        if "implied_reward_accuracy" in pref:
            rows.append(("implied DPO reward accuracy", _fmt(pref["implied_reward_accuracy"]), ""))
            rows.append(("implied DPO reward margin (beta x log-ratio)", _fmt(pref["implied_reward_margin"]), ""))
    lines = ["| metric | model | baseline |", "|---|---|---|"]
    lines += [f"| {name} | {m} | {b} |" for name, m, b in rows]
    return "\n".join(lines)
