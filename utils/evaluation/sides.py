"""The sampling and scoring of utils/evaluation/run.py, for one process's share of the prompt batches.

One model in memory at a time: the model samples and scores its own samples' tokens (log-probs for the KL), then
the baseline samples the same prompts with the same seeds and scores the model's tokens; then the reward sources
score both sides' texts. Preference rows also get both models' log-probs of `chosen` and `rejected` (the implied
DPO reward) and the reward sources' scores of each.
"""

from __future__ import annotations

import gc
import math
import sys

from utils.sampling import generation
from utils.sampling.tool_loop import Episode, sample_with_tools
from utils.trainers.tools import ToolStats, timed


def _seed(args, chunk: list[int]) -> int:
    """A batch's seed: from the run's seed and its first prompt, whichever process samples it."""
    return args.seed * 1_000_003 + chunk[0]


def _pair_ids(prompt, answer, tokenizer) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of a preference answer: the prompt as it is sampled from, then the answer as
    the chat template continues it (plain text: the answer and EOS)."""
    text, templated = generation.render(prompt, tokenizer)
    prompt_ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    if templated:
        whole = tokenizer.apply_chat_template(prompt + answer, tokenize=False)
        rest = whole[len(text):] if whole.startswith(text) else "".join(m["content"] for m in answer)
        return prompt_ids, tokenizer(rest, add_special_tokens=False)["input_ids"]
    return prompt_ids, tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def _one_side(plan, side, chunks, rows, device, own: dict | None) -> dict:
    """Load `side`, sample every chunk, and compute the log-probs asked for. `own`: the model's samples (given when
    this is the baseline), whose tokens the baseline scores for the KL."""
    from tqdm.auto import tqdm

    from utils.model.dtype import resolve_dtype

    a = plan.args
    model = generation.load_policy(side.path, side.tokenizer, resolve_dtype(a.dtype), base_override=side.base,
                                   load_in_4bit=a.load_in_4bit, trust_remote_code=a.trust_remote_code, device=device)
    name = "baseline" if own is not None else "model"
    out = {"samples": {}, "logps": {}, "pairs": {}}
    tools = [timed(f, a.tool_timeout, ToolStats()) for f in plan.tools] if plan.tools else None
    for chunk in tqdm(chunks, desc=f"sampling {name}", unit="batch", file=sys.stderr):
        settings = dict(num_samples=a.num_samples, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                        top_p=a.top_p, top_k=a.top_k, seed=_seed(a, chunk))
        prompts = [rows[i]["prompt"] for i in chunk]
        if plan.images:  # a vision-language model: the prompts with their images
            settings.update(processor=side.processor, images=[rows[i]["images"] for i in chunk])
        groups = (sample_with_tools(model, side.tokenizer, prompts, tools, max_iterations=a.max_tool_calling_iterations,
                                    **settings) if tools else generation.generate(model, side.tokenizer, prompts,
                                                                                  **settings))
        out["samples"].update(zip(chunk, groups))
        if plan.kl:  # per-token log-probs of the model's samples, under this side
            targets = [s for i in chunk for s in (own or out["samples"])[i]]
            logps = generation.completion_logprobs(model, [(s.prompt_ids, s.completion_ids) for s in targets],
                                                   a.temperature, batch_size=a.batch_size * a.num_samples)
            k = a.num_samples
            out["logps"].update({i: logps[j * k:(j + 1) * k] for j, i in enumerate(chunk)})
        if plan.preference and plan.same_vocab and not plan.images:
            tok = plan.model.tokenizer  # one tokenization, fed to both models
            pairs = [_pair_ids(rows[i]["prompt"], rows[i][key], tok) for i in chunk for key in ("chosen", "rejected")]
            sums = [sum(x) for x in generation.completion_logprobs(model, pairs, 1.0, batch_size=2 * a.batch_size)]
            out["pairs"].update({i: sums[2 * j:2 * j + 2] for j, i in enumerate(chunk)})
    del model
    gc.collect()
    return out


def _sample_counts(s) -> dict:
    """Tokens the model wrote and whether it ended; with tools, its calls and how many failed."""
    if isinstance(s, Episode):
        return {"tokens": s.tokens, "finished": s.finished, "tool_calls": s.calls, "tool_failures": s.failures}
    return {"tokens": len(s.completion_ids), "finished": s.finished}


def _scores(sources, names, weights, prompts, completions, columns):
    from utils.model.rewards import weighted_scores

    totals, details = weighted_scores(sources, names, weights, prompts, completions, columns)
    return [None if math.isnan(t) else t for t in totals], details


def evaluate_chunks(plan, chunks: list[list[int]], device) -> list[dict]:
    """One record per prompt of `chunks`: both sides' samples with their scores, the KL sums, preference scores."""
    from utils.model.dtype import resolve_dtype
    from utils.model.rewards import as_completion, source_names

    a = plan.args
    indices = [i for chunk in chunks for i in chunk]
    if not indices:
        return []
    rows = {i: plan.data[i] for i in indices}
    mine = _one_side(plan, plan.model, chunks, rows, device, None)
    theirs = _one_side(plan, plan.baseline, chunks, rows, device, mine["samples"])
    sources = plan.rewards.build(resolve_dtype(a.dtype))
    if device is not None:
        sources = [s.to(device) if hasattr(s, "to") else s for s in sources]
    names = source_names(sources)
    weights = plan.rewards.weights or [1.0] * len(sources)
    extra = [c for c in plan.data.column_names if c != "prompt"]
    k = a.num_samples
    records = []
    for chunk in chunks:
        prompts = [rows[i]["prompt"] for i in chunk for _ in range(k)]
        columns = {c: [rows[i][c] for i in chunk for _ in range(k)] for c in extra}
        sides = {}
        for name, side, got in (("model", plan.model, mine), ("baseline", plan.baseline, theirs)):
            samples = [s for i in chunk for s in got["samples"][i]]
            if plan.tools:  # Episodes: the completion is the transcript (calls, results, answer)
                texts = completions = [s.messages for s in samples]
            else:
                texts = [generation.text_of(s, side.tokenizer) for s in samples]
                completions = [as_completion(t, p) for t, p in zip(texts, prompts)]
            scores, details = _scores(sources, names, weights, prompts, completions, columns)
            sides[name] = [{"completion": t, "score": sc, "rewards": d, **_sample_counts(s)}
                           for t, sc, d, s in zip(texts, scores, details, samples)]
        pair_scores = None
        if plan.preference:
            pair_prompts = [rows[i]["prompt"] for i in chunk for _ in range(2)]
            answers = [rows[i][key] for i in chunk for key in ("chosen", "rejected")]
            pair_cols = {c: [rows[i][c] for i in chunk for _ in range(2)] for c in extra}
            pair_scores = _scores(sources, names, weights, pair_prompts, answers, pair_cols)[0]
        for j, i in enumerate(chunk):
            record = {"index": i, "prompt": rows[i]["prompt"], "model": sides["model"][j * k:(j + 1) * k],
                      "baseline": sides["baseline"][j * k:(j + 1) * k], "kl": None, "pair": None}
            if plan.kl:
                ratios = [m - b for own, base in zip(mine["logps"][i], theirs["logps"][i]) for m, b in zip(own, base)]
                record["kl"] = [sum(ratios), len(ratios)]
            if plan.preference:
                record["pair"] = {"chosen_score": pair_scores[2 * j], "rejected_score": pair_scores[2 * j + 1]}
                if plan.same_vocab and not plan.images:
                    (mc, mr), (bc, br) = mine["pairs"][i], theirs["pairs"][i]
                    record["pair"].update(chosen_logratio=mc - bc, rejected_logratio=mr - br)
            records.append(record)
    return records
