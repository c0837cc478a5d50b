"""Data formats users already have, recognised by their fields and converted row by row to the fields TRL expects.

Each format is a `Format`: which fields give it away (`reads`), what its rows become, and which helper converts
them (TRL's `trl.data_utils` where it has one; ours where it has none). A row that two formats could read is
refused with both readings named; a row no format reads is checked as our own fields, so that the error names
the missing field. TRL's helpers are imported only when a file needs them (the import takes seconds).

| format                          | detected by                               | becomes                                |
| ours                            | the fields of `utils.data.schemas.SCHEMAS`        | itself                                 |
| ShareGPT                        | `conversations` of {"from", "value"}      | `messages` (SFT), `prompt` (online RL), prompt/chosen/rejected (`chosen` and `rejected` messages beside it), prompt/completion/label (`kto_tag` beside it) |
| Alpaca                          | `instruction` (+ `input`, `output`, `system`, `history`) | conversational prompt/completion, prompt, or prompt/chosen/rejected |
| messages (online RL)            | `messages` for a prompt-only method        | `prompt`: the conversation before its last answer |
| implicit prompt                 | `chosen` + `rejected` and no `prompt` (or a string `prompt` beside conversations) | prompt/chosen/rejected |
| ranked answers                  | `prompt` + `responses` + `scores` or `ranks` | pairs: `--pairs best_vs_worst|all|adjacent`, `--min_score_gap` |
| preference, for KTO             | any preference format above               | one desirable + one undesirable row per pair |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

from utils.data.schemas import BadRow, field_names, json_type
from utils.data.tool_rows import sharegpt_tool_turns, tools_json

# The fields that decide a row's format; the others (an `answer`, an `id`) ride along as columns.
FORMAT_KEYS = ("prompt", "chosen", "rejected", "completion", "label", "messages", "text", "conversations",
               "instruction", "responses", "scores", "ranks")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                  "observation": "tool", "tool": "tool", "function_call": "assistant"}
PREFERENCE_KINDS = ("preference", "reward", "kto")


@dataclass
class DataOptions:
    """How rows are expanded or picked: ranked answers to pairs, the split of a folder, the mixture."""

    pairs: str = "best_vs_worst"
    min_score_gap: float = 0.0
    split: str | None = None  # --train_split (None: "train" when a folder has several splits)
    weights: list[float] | None = None  # --data_weights, one per --train_data_path
    tools: str | None = None  # --tools' schemas (a JSON string) for conversational rows without a `tools` field

    @classmethod
    def of(cls, values) -> DataOptions | None:
        """From CommonArgs, or from the raw flags (None when they do not parse: the full parser then says why)."""
        get = (values.get if isinstance(values, dict) else lambda k: getattr(values, k))
        try:
            weights = get("data_weights")
            options = cls(get("pairs") or "best_vs_worst", float(get("min_score_gap") or 0), get("train_split"),
                          [float(w) for w in weights] if weights else None)
        except (TypeError, ValueError):
            return None
        tools = get("tools")
        options.tools = tools_json([tools] if isinstance(tools, str) else tools) if tools else None
        return options


@dataclass(frozen=True)
class Format:
    name: str
    label: str  # what the user's file is, in the summary line
    target: str  # what its rows become
    helper: str  # the function that converts, for the README's table
    convert: object  # (row, options) -> list of rows; raises BadRow
    kind: str  # the data kind the converted rows are checked as
    fields: tuple = field(default=())  # the fields that gave it away, for the ambiguity message


def readings(row: dict, kind: str) -> list[Format]:
    """Every format that can read `row` for a method of data `kind` (none: checked as our own fields)."""
    present = {k for k in FORMAT_KEYS if row.get(k) is not None}
    pref = kind in PREFERENCE_KINDS
    out = []
    if "conversations" in present:
        if kind == "sft":
            out.append(SHAREGPT_SFT)
        elif kind == "prompt":
            out.append(SHAREGPT_PROMPT)
        elif pref and {"chosen", "rejected"} <= present:
            out.append(SHAREGPT_PREF)
        elif kind == "kto" and row.get("kto_tag") is not None:
            out.append(SHAREGPT_KTO)
    if "instruction" in present:
        if kind == "sft" and row.get("output") is not None:
            out.append(ALPACA_SFT)
        elif kind == "prompt":
            out.append(ALPACA_PROMPT)
        elif pref and {"chosen", "rejected"} <= present:
            out.append(ALPACA_PREF)
    if pref and "responses" in present and present & {"scores", "ranks"}:
        out.append(RANKED)
    if kind == "prompt" and "messages" in present:
        out.append(MESSAGES_PROMPT)
    owned = present & {"conversations", "instruction"}  # their chosen/rejected are answers, not our fields
    if pref and not owned and {"chosen", "rejected"} <= present:
        prompt = row.get("prompt")
        mismatch = prompt is not None and isinstance(prompt, str) != isinstance(row["chosen"], str)
        if mismatch or (prompt is None and kind != "reward"):  # a reward model takes whole texts as they are
            out.append(IMPLICIT)
        else:
            out.append(OURS_PREF)
    if kind in ("sft", "kto", "prompt") and (present - {"conversations", "instruction"}) & {
            "sft": {"messages", "completion", "text"}, "kto": {"completion", "label"}, "prompt": {"prompt"}}[kind]:
        out.append(OURS)
    return out


def describe(f: Format) -> str:
    return f"{f.label} ({field_names(f.fields)})" if f.fields else f.label


def summary(source, fmt, kind: str, n_in: int, n_out: int, unpair: bool, options: DataOptions) -> str:
    what = f"{source.path}{f' ({source.note})' if source.note else ''}: "
    if fmt is OURS or fmt is OURS_PREF:
        what += "prompt/chosen/rejected pairs" if fmt is OURS_PREF and kind == "kto" else "our fields"
    else:
        what += f"{fmt.label} -> {fmt.target}"
    what += f" ({n_in:,} rows"
    if fmt is not None and fmt.name == "ranked":
        what += f" -> {n_out:,} pair{'s' if n_out != 1 else ''}, {options.pairs}" + (f", --min_score_gap {options.min_score_gap:g}"
                                                          if options.min_score_gap else "") + "; tied pairs dropped"
    elif n_out != n_in:
        what += f" -> {n_out:,}"
    return what + ")" + (" -> unpaired for KTO: one desirable and one undesirable row per pair "
                         "(trl.data_utils.unpair_preference_dataset)" if unpair else "")


# ------------------------------------------------------------------------------------------- converters
def _extras(row: dict, *drop: str) -> dict:
    return {k: v for k, v in row.items() if k not in drop}


def _sharegpt(messages, name: str = "conversations") -> list[dict]:
    from trl.data_utils import maybe_convert_to_chatml

    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise BadRow(f"`{name}` is {json_type(messages)} or holds non-objects", 'a list of {"from": ..., "value": ...}')
    out = maybe_convert_to_chatml({"messages": [dict(m) for m in messages]})["messages"]
    for i, m in enumerate(out, 1):
        if m.get("role") not in SHAREGPT_ROLES:
            raise BadRow(f"`{name}` message {i} is from {m.get('role')!r}",
                         f"`from` one of {', '.join(SHAREGPT_ROLES)}")
    return sharegpt_tool_turns(out, name, SHAREGPT_ROLES)


def _with_system(row: dict, messages: list[dict]) -> list[dict]:
    system = row.get("system")
    return ([{"role": "system", "content": system}] if system else []) + messages


def _before_answer(messages: list[dict]) -> list[dict]:
    end = len(messages)
    while end and messages[end - 1].get("role") == "assistant":
        end -= 1
    return messages[:end]


def _sharegpt_sft(row, _opts):
    return [{"messages": _with_system(row, _sharegpt(row["conversations"])), **_extras(row, "conversations", "system")}]


def _sharegpt_prompt(row, _opts):
    msgs = _with_system(row, _sharegpt(row["conversations"]))
    return [{"prompt": _before_answer(msgs), **_extras(row, "conversations", "system")}]


def _sharegpt_pref(row, _opts):
    answers = {k: _sharegpt([row[k]] if isinstance(row[k], dict) else row[k], k) for k in ("chosen", "rejected")}
    return [{"prompt": _with_system(row, _sharegpt(row["conversations"])), **answers,
             **_extras(row, "conversations", "system", "chosen", "rejected")}]


def _sharegpt_kto(row, _opts):
    msgs = _with_system(row, _sharegpt(row["conversations"]))
    return [{"prompt": msgs[:-1], "completion": msgs[-1:], "label": row["kto_tag"],
             **_extras(row, "conversations", "system", "kto_tag")}]


def _alpaca_prompt(row) -> list[dict]:
    for key in ("instruction", "input", "system"):
        if row.get(key) is not None and not isinstance(row[key], str):
            raise BadRow(f"`{key}` is {json_type(row[key])}", f"`{key}` to be a string")
    history = row.get("history") or []
    if not isinstance(history, list) or not all(isinstance(h, list) and len(h) == 2 for h in history):
        raise BadRow("`history` is not a list of [question, answer] pairs", '"history": [["Hi?", "Hello!"], ...]')
    turns = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    user = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
    return _with_system(row, turns + [{"role": "user", "content": user}])


def _answer(value, name: str) -> list[dict]:
    if not isinstance(value, str):
        raise BadRow(f"`{name}` is {json_type(value)}", f"`{name}` to be the answer as a string")
    return [{"role": "assistant", "content": value}]


_ALPACA = ("instruction", "input", "system", "history")


def _alpaca_sft(row, _opts):
    return [{"prompt": _alpaca_prompt(row), "completion": _answer(row["output"], "output"),
             **_extras(row, *_ALPACA, "output")}]


def _alpaca_prompt_only(row, _opts):
    return [{"prompt": _alpaca_prompt(row), **_extras(row, *_ALPACA)}]


def _alpaca_pref(row, _opts):
    return [{"prompt": _alpaca_prompt(row), "chosen": _answer(row["chosen"], "chosen"),
             "rejected": _answer(row["rejected"], "rejected"), **_extras(row, *_ALPACA, "chosen", "rejected")}]


def _messages_prompt(row, _opts):
    if not isinstance(row["messages"], list):
        raise BadRow("`messages` is a plain string", 'a list of {"role", "content"} messages')
    return [{"prompt": _before_answer(row["messages"]), **_extras(row, "messages")}]


def _implicit(row, _opts):
    from trl.data_utils import extract_prompt

    chosen, rejected = row["chosen"], row["rejected"]
    if type(chosen) is not type(rejected) or not isinstance(chosen, (str, list)):
        raise BadRow(f"`chosen` is {json_type(chosen)} and `rejected` {json_type(rejected)}",
                     "both whole conversations or both whole strings, sharing the prompt")
    if chosen == rejected:
        raise BadRow("`chosen` and `rejected` are identical", "two different answers to the same prompt")
    out = extract_prompt({"chosen": chosen, "rejected": rejected})
    if not out["prompt"]:
        raise BadRow("`chosen` and `rejected` share no prompt: they differ from their first "
                     f"{'message' if isinstance(chosen, list) else 'character'}",
                     "both to start with the same prompt (or give it in a `prompt` field)")
    if isinstance(chosen, list):
        last = out["prompt"][-1].get("role")
        if last not in ("user", "tool"):
            raise BadRow(f"`chosen` and `rejected` first differ at message {len(out['prompt']) + 1}, after "
                         f"a {last!r} turn", "them to share every turn up to the last user turn and differ only "
                         "in the assistant's answer")
        given = row.get("prompt")
        if isinstance(given, str) and given.strip() != str(out["prompt"][-1].get("content", "")).strip():
            raise BadRow("the `prompt` string is not the last user turn the conversations share",
                         "`prompt` equal to that turn, or no `prompt` field")
    return [{**out, **_extras(row, "prompt", "chosen", "rejected")}]


def _ranked(row, opts: DataOptions):
    responses = row["responses"]
    key = "scores" if row.get("scores") is not None else "ranks"
    values = row[key]
    if row.get("prompt") is None:
        raise BadRow("missing field `prompt`", "`prompt` beside `responses` and `scores` (or `ranks`)")
    if not isinstance(responses, list) or len(responses) < 2:
        raise BadRow(f"`responses` is {json_type(responses)} of fewer than 2 answers", "a list of at least 2 answers")
    if (not isinstance(values, list) or len(values) != len(responses)
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise BadRow(f"`{key}` is not a list of {len(responses)} numbers", f"one number per response in `{key}` "
                     "(scores: higher is better; ranks: 1 is best)")
    scores = [-v for v in values] if key == "ranks" else values
    order = sorted(range(len(responses)), key=lambda i: -scores[i])  # stable: the file's order breaks ties
    if opts.pairs == "best_vs_worst":
        pairs = [(order[0], order[-1])]
    elif opts.pairs == "adjacent":
        pairs = list(zip(order, order[1:]))
    else:
        pairs = list(combinations(order, 2))
    extras = _extras(row, "prompt", "responses", "scores", "ranks")
    as_answer = (lambda r: [r] if isinstance(r, dict) else r)
    return [{"prompt": row["prompt"], "chosen": as_answer(responses[a]), "rejected": as_answer(responses[b]), **extras}
            for a, b in pairs if scores[a] - scores[b] > 0 and scores[a] - scores[b] >= opts.min_score_gap]


def _ours(row, _opts):
    return [row]


_H = "trl.data_utils.maybe_convert_to_chatml + ours (roles human/gpt -> user/assistant)"
OURS = Format("ours", "our fields", "themselves", "-", _ours, "")
OURS_PREF = Format("ours_pref", "prompt/chosen/rejected", "themselves", "-", _ours, "")
SHAREGPT_SFT = Format("sharegpt", "ShareGPT conversations", "messages", _H, _sharegpt_sft, "sft", ("conversations",))
SHAREGPT_PROMPT = Format("sharegpt", "ShareGPT conversations", "prompt", _H, _sharegpt_prompt, "prompt",
                         ("conversations",))
SHAREGPT_PREF = Format("sharegpt", "ShareGPT preference", "prompt/chosen/rejected", _H, _sharegpt_pref, "preference",
                       ("conversations", "chosen", "rejected"))
SHAREGPT_KTO = Format("sharegpt", "ShareGPT with kto_tag", "prompt/completion/label", _H, _sharegpt_kto, "kto",
                      ("conversations", "kto_tag"))
ALPACA_SFT = Format("alpaca", "Alpaca", "prompt/completion (conversational)", "ours", _alpaca_sft, "sft",
                    ("instruction", "output"))
ALPACA_PROMPT = Format("alpaca", "Alpaca", "prompt (conversational)", "ours", _alpaca_prompt_only, "prompt",
                       ("instruction",))
ALPACA_PREF = Format("alpaca", "Alpaca preference", "prompt/chosen/rejected (conversational)", "ours", _alpaca_pref,
                     "preference", ("instruction", "chosen", "rejected"))
MESSAGES_PROMPT = Format("messages", "messages", "prompt (the conversation before its last answer)", "ours",
                         _messages_prompt, "prompt", ("messages",))
IMPLICIT = Format("implicit", "implicit prompt", "prompt/chosen/rejected", "trl.data_utils.extract_prompt",
                  _implicit, "preference", ("chosen", "rejected"))
RANKED = Format("ranked", "ranked answers", "pairs", "ours", _ranked, "preference", ("prompt", "responses", "scores"))
