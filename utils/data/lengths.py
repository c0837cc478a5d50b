"""Token lengths of the training data, measured before any weights load: every conversational row rendered with the
chat template as TRL renders it (so a template that refuses a row is reported at its FILE:LINE, not mid-training),
every row tokenized, and one short table of what `max_length` and friends will truncate and drop.

How a row is counted (what TRL feeds the model, to within a token):
- plain strings: the prompt tokenized as the tokenizer does by default (a BOS where it adds one); each answer
  without special tokens, plus one EOS; a `text` row is all answer.
- conversations: the prompt is the template applied to the prompt messages with the generation prompt; an answer
  is the template over prompt + answer, less the prompt's tokens. A `messages` row is prompt (every turn before
  the last assistant answer) + answer.
Percentiles are nearest-rank: the p95 is the smallest length that at least 95 % of the rows do not exceed.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

from utils.core.errors import UserError
from utils.data.schemas import BadRow, one_line
from utils.data.tool_rows import arguments_as_text, check_rendered, render_form, row_tools

ANSWERS = ("chosen", "rejected", "completion", "messages", "text")


@dataclass
class Lengths:
    prompt: object  # numpy int arrays, one entry per stored row
    first: object  # the answer (chosen / completion / whole conversation); None for prompt-only data
    second: object  # the rejected answer of a pair, else None
    has_prompt: bool  # the rows name their prompt (TRL drops a row whose prompt fills max_length)
    images: object = None  # tokens the images add to each row's prompt (counted in `prompt`); None: no images


def _texts(row: dict, fields: list[str], tokenizer, tools: bool = False, default_tools=None):
    """(prompt text, [answer texts]); conversational rows rendered with the chat template (with `tools`: the row's
    tool schemas, and the tool calls, results and schemas checked to be in the rendering; `default_tools`: the
    schemas of rows without their own, e.g. GRPO's prompts with --tools)."""
    schemas = default_tools
    if tools:
        row, schemas = render_form(row), row_tools(row) or default_tools

    def render(messages, generation_prompt: bool) -> str:
        try:
            text = tokenizer.apply_chat_template(messages, tools=schemas, tokenize=False,
                                                 add_generation_prompt=generation_prompt)
        except TypeError:  # a template that takes arguments as JSON text only (DeepSeek-V3's), as TRL retries it
            if not tools:
                raise
            text = tokenizer.apply_chat_template(arguments_as_text(messages), tools=schemas, tokenize=False,
                                                 add_generation_prompt=generation_prompt)
        if tools and not generation_prompt:
            check_rendered(text, messages, schemas, getattr(tokenizer, "name_or_path", "") or "the tokenizer")
        return text

    prompt = row.get("prompt")
    if "messages" in row and isinstance(row["messages"], list):
        msgs = row["messages"]
        cut = max((i for i, m in enumerate(msgs) if m.get("role") != "assistant"), default=-1) + 1
        return render(msgs[:cut], True), [render(msgs, False)]
    if isinstance(prompt, list) or any(isinstance(row.get(f), list) for f in fields):
        head = prompt if isinstance(prompt, list) else []
        return (render(head, True) if head else ""), [render(head + row[f], False) for f in fields]
    return prompt or "", [row[f] for f in fields]


def measure(rows, tokenizer, what: str = "train_data_path") -> Lengths:
    """Render and count every stored row; the result is kept as `rows.lengths`."""
    import numpy as np

    name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    if rows.conversational and getattr(tokenizer, "chat_template", None) is None:
        raise UserError(f"{rows.path}: the --{what} data is conversational (lists of role/content messages) but the "
                        f"tokenizer at {name} has no chat template, so the messages cannot be turned into text; "
                        "expected a tokenizer that has a chat template, or plain-string rows (no template is "
                        "applied to those).")
    prompt, first, second, fields, has_prompt, pictures = [], [], [], None, False, []
    expand = getattr(tokenizer, "image_tokens", None) if getattr(rows, "images", False) else None
    options = getattr(rows, "options", None)  # --tools' schemas: what the prompts are rendered with
    default_tools = json.loads(options.tools) if options is not None and options.tools and rows.conversational else None
    for start, batch in rows.batches():
        if fields is None:
            has_prompt = batch[0].get("prompt") is not None
            fields = (["messages"] if batch[0].get("messages") is not None  # a whole conversation, cut by _texts
                      else [f for f in ANSWERS if batch[0].get(f) is not None][:2])
        prompts, answers = [], [[] for _ in fields]
        for i, row in enumerate(batch):
            try:
                p, a = _texts(row, fields, tokenizer, rows.tools, default_tools)
            except BadRow as e:
                raise UserError(f"{rows.where(start + i)}: {e.what}; expected {e.expected}.") from None
            except Exception as e:  # a template may raise anything (jinja2's TemplateError, KeyError, TypeError...)
                raise UserError(f"{rows.where(start + i)}: the chat template of {name} refused this row: "
                                f"{type(e).__name__}: {one_line(e)}; expected a row that template accepts (e.g. no "
                                "system turn for templates without a system role).") from None
            prompts.append(p)
            for column, text in zip(answers, a):
                column.append(text)
        plen = _count(tokenizer, prompts, special=not rows.conversational)
        for out, column in zip((first, second), answers):
            if rows.conversational:
                out += [n - p for n, p in zip(_count(tokenizer, column, special=False), plen)]
            else:
                out += [n + 1 for n in _count(tokenizer, column, special=False)]  # + EOS
        if expand is not None:  # each image placeholder becomes the processor's image tokens (images in prompts only)
            extra = [_expand(expand, p, row, rows, start + i) for i, (p, row) in enumerate(zip(prompts, batch))]
            plen = [n + e for n, e in zip(plen, extra)]
            pictures += [e + len(row.get("images") or []) for e, row in zip(extra, batch)]  # + the placeholders
        prompt += plen
    arr = (lambda x: np.asarray(x, dtype=np.int64))
    rows.lengths = Lengths(arr(prompt), arr(first) if fields else None,
                           arr(second) if fields and len(fields) > 1 else None,
                           has_prompt=has_prompt, images=arr(pictures) if expand is not None else None)
    return rows.lengths


def _expand(expand, prompt: str, row: dict, rows, i: int) -> int:
    """The tokens row `i`'s images add to its prompt (0 without images)."""
    if not row.get("images"):
        return 0
    try:
        return expand(prompt, row["images"], not rows.conversational)
    except BadRow as e:
        raise UserError(f"{rows.where(i)}: {e.what}; expected {e.expected}.") from None


def _count(tokenizer, texts: list[str], special: bool) -> list[int]:
    nonempty = [t for t in texts if t]
    ids = iter(tokenizer(nonempty, add_special_tokens=special)["input_ids"] if nonempty else [])
    return [len(next(ids)) if t else 0 for t in texts]


# ------------------------------------------------------------------------------------------------ report
def _stats(x) -> dict:
    import numpy as np

    s = np.sort(x)
    rank = (lambda q: int(s[max(0, math.ceil(q * len(s)) - 1)]))
    return {"median": rank(0.5), "p95": rank(0.95), "max": int(s[-1])}


def report(lengths: Lengths, selected, config, drops: str, unpair: bool = False) -> dict:
    """The numbers for the training rows TRL will see: `selected` indexes the stored rows (a mixture repeats some),
    KTO's unpaired rows count each answer of a pair as its own row. `drops`: the method's rule (rlhf_args)."""
    import numpy as np

    sel = np.asarray(selected if selected is not None else range(len(lengths.prompt)), dtype=np.int64)
    prompt = lengths.prompt[sel]
    answers = {}
    if unpair:  # KTO from pairs: each answer of a pair is a row of its own
        prompt = np.concatenate([prompt, prompt])
        answers = {"answer": np.concatenate([lengths.first[sel], lengths.second[sel]])}
    elif lengths.first is not None:
        answers = {"chosen": lengths.first[sel], "rejected": lengths.second[sel]} if lengths.second is not None \
            else {"answer": lengths.first[sel]}
    longest = np.maximum.reduce(list(answers.values())) if answers else None
    whole = prompt + (longest if answers else 0)
    out = {"rows": int(len(sel)), "tokens": {"prompt": _stats(prompt), **{k: _stats(v) for k, v in answers.items()},
                                             "prompt + answer" if answers else "whole": _stats(whole)},
           "limits": {}}
    if lengths.images is not None:  # counted in the prompt already
        out["tokens"] = {"image tokens (in the prompt)": _stats(lengths.images[sel]), **out["tokens"]}
    limit = getattr(config, "max_length", None)
    if limit and answers:
        if drops == "too_long":  # the row is filtered out whole (RewardTrainer)
            truncated, dropped = 0, int((whole > limit).sum())
        elif drops == "prompt_fills" and lengths.has_prompt and getattr(config, "truncation_mode", "keep_start") != "keep_end":
            fills = prompt >= limit
            truncated, dropped = int(((whole > limit) & ~fills).sum()), int(fills.sum())
        else:
            truncated, dropped = int((whole > limit).sum()), 0
        out["limits"]["max_length"] = {"value": limit, "truncated": truncated, "dropped": dropped}
    for name, values in (("max_prompt_length", prompt), ("max_completion_length", longest)):
        value = getattr(config, name, None)
        if value and values is not None:
            out["limits"][name] = {"value": value, "truncated": int((values > value).sum()), "dropped": 0}
    if answers:
        out["suggested_max_length"] = int(np.sort(whole)[max(0, math.ceil(0.99 * len(whole)) - 1)])
    return out


def table(rep: dict) -> str:
    lines = [f"Data: {rep['rows']:,} training rows; tokens      median      p95      max"]
    for name, s in rep["tokens"].items():
        lines.append(f"  {name:<36}{s['median']:>8,}{s['p95']:>9,}{s['max']:>9,}")
    for name, lim in rep["limits"].items():
        lines.append(f"  --{name} {lim['value']}: truncates {lim['truncated']:,} rows, drops {lim['dropped']:,}")
    if "suggested_max_length" in rep:
        lines.append(f"  suggested --max_length {rep['suggested_max_length']} (keeps 99 % of rows whole)")
    return "\n".join(lines)


def check_and_report(rows, config, drops: str) -> dict | None:
    """Print the table; refuse (exit 2) when the settings drop every row. Returns the report (None: not measured)."""
    if rows is None or rows.lengths is None:
        return None
    rep = report(rows.lengths, rows.selected, config, drops, rows.unpair)
    text = table(rep)
    dropped = max((lim["dropped"] for lim in rep["limits"].values()), default=0)
    if rep["rows"] and dropped >= rep["rows"]:
        limit, suggested = config.max_length, rep.get("suggested_max_length")
        if drops == "too_long":
            ls = rows.lengths
            shortest = int((ls.prompt + (ls.first if ls.second is None else ls.first.clip(min=ls.second))).min())
            why = f"every row is longer, and TRL drops such rows whole (the shortest has {shortest} tokens)"
        else:
            shortest = int(rows.lengths.prompt.min())
            why = (f"every prompt alone is at least that long (the shortest has {shortest} tokens), so no row keeps a "
                   "token of its answer to train on")
        raise UserError(f"{rows.path}: --max_length {limit} leaves no training row: {why}; expected --max_length above "
                        f"{shortest} (suggested: {suggested}, which keeps 99 % of rows whole).\n{text}")
    from utils.core.distributed import first_process

    if first_process():
        print(text, flush=True)
    return rep


def write(rep: dict | None, output_dir: str) -> None:
    from utils.core.distributed import first_process

    if rep is not None and first_process():
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "data_report.json"), "w") as f:
            json.dump(rep, f, indent=2)
