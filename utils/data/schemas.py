"""What a valid row is, per data kind, and the wording of what is wrong with one. Pure Python: the check phase
runs it on every row before anything heavy is imported (utils/data/loading.py reads the files)."""

from __future__ import annotations

import difflib
import json

# Each kind lists its accepted field sets ("variants"); the first fully present one is used. For
# "reward" the prompt-less variant is a subset of the other, so a row with a prompt picks the first.
SCHEMAS: dict[str, list[tuple[str, ...]]] = {
    "preference": [("prompt", "chosen", "rejected")],
    "reward": [("prompt", "chosen", "rejected"), ("chosen", "rejected")],
    "kto": [("prompt", "completion", "label")],
    "sft": [("messages",), ("prompt", "completion"), ("text",)],
    "prompt": [("prompt",)],
}

DATA_KIND_HELP: dict[str, str] = {
    "preference": '`prompt`, `chosen`, `rejected`: {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."} '
                  "or each a list of {\"role\", \"content\"} messages (chosen/rejected: assistant turns)",
    "reward": '`chosen`, `rejected`, each a whole conversation or a whole string: {"chosen": "Hi? Hello!", '
              '"rejected": "Hi? Go away."}; with an optional `prompt` they are completions as for preference',
    "kto": '`prompt`, `completion`, `label` (JSON true = desirable, false = undesirable): '
           '{"prompt": "Hi?", "completion": "Hello!", "label": true}',
    "sft": '`prompt` + `completion` ({"prompt": "Hi?", "completion": "Hello!"}), or `messages` (a whole '
           'conversation ending with an assistant turn), or `text` (a plain string)',
    "prompt": '`prompt` (a string or a conversation ending with a user turn); other fields such as a '
              'reference `answer` are passed to reward functions: {"prompt": "What is 3+4?", "answer": "7"}',
}

ROLES = ("system", "user", "assistant", "tool")
# Which role may come right before each role (None = start). Chat templates assume this alternation;
# many raise on anything else, and only when the row is reached mid-training.
_MAY_FOLLOW = {"user": {None, "system", "assistant"}, "assistant": {"user", "tool"}, "tool": {"assistant", "tool"}}
_TEXT_FIELDS = ("prompt", "chosen", "rejected", "completion", "messages", "text")
_VALUE = 'a non-empty string or a non-empty list of {"role": ..., "content": ...} messages'


class BadRow(Exception):
    """A problem in one row: `what` is wrong, `expected` is what we wanted. Located by the caller."""

    def __init__(self, what: str, expected: str):
        super().__init__(what)
        self.what, self.expected = what, expected


def is_conversational_row(row: dict) -> bool:
    """True when a text field holds a list of messages (TRL then applies the chat template)."""
    return any(isinstance(row.get(f), list) for f in _TEXT_FIELDS)


# ---------------------------------------------------------------------------------------- checking
def check_row(row, kind: str) -> tuple[tuple[str, ...], bool]:
    """Validate one row; return (the variant's fields, whether it is conversational)."""
    if not isinstance(row, dict):
        raise BadRow(f"the row is {json_type(row)}, not a JSON object", f"an object with {DATA_KIND_HELP[kind]}")
    variant = _pick_variant(row, kind)
    texts = [f for f in variant if f != "label"]
    for f in texts:
        value = row[f]
        if not isinstance(value, (str, list)):
            raise BadRow(f"`{f}` is {json_type(value)}", _VALUE)
    styles = {f: isinstance(row[f], list) for f in texts}
    if len(set(styles.values())) > 1:
        conv = [f"`{f}`" for f, c in styles.items() if c]
        plain = [f"`{f}`" for f, c in styles.items() if not c]
        raise BadRow(f"{', '.join(conv)} {'is a conversation' if len(conv) == 1 else 'are conversations'} but "
                   f"{', '.join(plain)} {'is a plain string' if len(plain) == 1 else 'are plain strings'}",
                   f"{field_names(texts)} all conversations or all plain strings (TRL templates a whole row or none)")
    conversational = any(styles.values())
    if variant == ("messages",) and not conversational:
        raise BadRow("`messages` is a plain string", 'a list of {"role", "content"} messages; for plain text use `text`')
    if variant == ("text",) and conversational:
        raise BadRow("`text` is a list", "a plain string; for conversations use `messages`")

    for f in texts:
        if conversational:
            # Which shape each field must have: a prompt ends on the user's turn, completions are
            # the model's turns, and a field with no prompt beside it is a whole conversation.
            shape = "prompt" if f == "prompt" else "completion" if "prompt" in variant else "whole"
            _check_conversation(row[f], f, shape)
        elif not row[f].strip():
            raise BadRow(f"`{f}` is an empty string", f"a non-empty `{f}`")
    if "label" in variant and not isinstance(row["label"], bool):
        raise BadRow(f"`label` is {json_type(row['label'])} {json.dumps(row['label'])}",
                   "a JSON boolean: true (desirable) or false (undesirable), not 1/0 or a string")
    return variant, conversational


_PICKED: dict = {}  # (kind, fields, which are null) -> variant: rows of one file mostly share their fields


def _pick_variant(row: dict, kind: str) -> tuple[str, ...]:
    sig = (kind, tuple(row), tuple(v is None for v in row.values()))
    variant = _PICKED.get(sig)
    if variant is None:
        if len(_PICKED) > 10_000:
            _PICKED.clear()
        variant = _PICKED[sig] = _pick(row, kind)
    return variant


def _pick(row: dict, kind: str) -> tuple[str, ...]:
    variants = SCHEMAS[kind]
    present = {k for k, v in row.items() if v is not None}  # parquet fills absent fields with null
    full = [v for v in variants if set(v) <= present]
    if full:
        # More than one unrelated field set (say `messages` and `text`): TRL would pick one silently.
        if any(not set(v) <= set(full[0]) for v in full[1:]):
            raise BadRow(f"the row has both {field_names(full[0])} and {field_names(full[1])}", f"only one of {_alternatives(kind)}")
        return full[0]
    # Report against the closest field set: most fields present, then fewest missing.
    best = max(variants, key=lambda v: (len(set(v) & present), -len(set(v) - present)))
    nulls = [f for f in best if f in row and row[f] is None]
    if nulls:
        raise BadRow(f"{field_names(nulls)} {'is' if len(nulls) == 1 else 'are'} null", DATA_KIND_HELP[kind])
    if set(best) & present or len(variants) == 1:
        missing = [f for f in best if f not in present]
        what = f"missing field{'s' if len(missing) > 1 else ''} {field_names(missing)}"
    else:  # nothing matched any field set: look for misspellings of every accepted field
        missing = sorted({f for v in variants for f in v})
        what = f"none of the fields {_alternatives(kind)} is present; the row has {field_names(row) or 'no fields'}"
    unknown = [k for k in row if not any(k in v for v in variants)]
    hints = [f"found `{close[0]}`: did you mean `{f}`?" for f in missing
             if (close := difflib.get_close_matches(f, unknown, n=1, cutoff=0.6))]
    raise BadRow(what + (f" ({'; '.join(hints)})" if hints else ""), DATA_KIND_HELP[kind])


def _check_conversation(msgs: list, field: str, shape: str) -> None:
    """shape: "prompt" (ends on a user or tool turn), "completion" (assistant turns, with tool
    results between them), "whole" (a full conversation ending with the assistant)."""
    expected = {"prompt": "a conversation that alternates user/assistant and ends with a user (or tool) message",
                "completion": "only assistant message(s) (tool results may sit between them)",
                "whole": "a conversation that alternates user/assistant and ends with an assistant message"}[shape]
    if not msgs:
        raise BadRow(f"`{field}` is an empty list", expected)
    prev = "user" if shape == "completion" else None  # a completion continues the prompt's user turn
    for i, m in enumerate(msgs, 1):
        at = f"`{field}` message {i}"
        if not isinstance(m, dict):
            raise BadRow(f"{at} is {json_type(m)}", 'an object {"role": ..., "content": ...}')
        calls = m.get("tool_calls")
        if calls is not None:
            if m.get("role") != "assistant":
                raise BadRow(f"{at} has `tool_calls` but role {m.get('role')!r}", "tool calls only on assistant messages")
            check_tool_calls(calls, at)
        for key in ("role", "content"):
            if key == "content" and calls and m.get(key) is None:
                continue  # an assistant turn that only calls tools (OpenAI writes "content": null)
            if key not in m or m[key] is None:
                close = difflib.get_close_matches(key, [k for k in m if k not in ("role", "content")], n=1)
                hint = f" (found `{close[0]}`: did you mean `{key}`?)" if close else ""
                raise BadRow(f"{at} has no `{key}`{hint}", 'every message to be {"role": ..., "content": ...}')
            if not isinstance(m[key], str):
                raise BadRow(f"{at} has a `{key}` that is {json_type(m[key])}", f"`{key}` to be a string")
        role = m["role"]
        if role not in ROLES:
            raise BadRow(f"{at} has role {role!r}", f"one of {', '.join(ROLES)}")
        if shape == "completion" and role not in ("assistant", "tool"):
            raise BadRow(f"{at} has role {role!r}", expected)
        if role == "system":
            if i != 1:
                raise BadRow(f"{at} is a system message after other messages", "system only as the first message")
        elif prev not in _MAY_FOLLOW[role]:
            after = f"after a {prev!r} message" if prev else "as the first message"
            raise BadRow(f"{at} has role {role!r} {after}", expected)
        if role == "assistant" and not calls and not m["content"].strip():
            raise BadRow(f"{at} is an assistant message with empty content", "a non-empty assistant answer")
        prev = role
    last = msgs[-1]["role"]
    if (shape == "prompt" and last not in ("user", "tool")) or (shape != "prompt" and last != "assistant"):
        raise BadRow(f"`{field}` ends with {'an' if last == 'assistant' else 'a'} {last} message", expected)


_CALL = ('{"type": "function", "function": {"name": "...", "arguments": {...}}} (arguments: an object, or a JSON '
         'string of one)')


def check_tool_calls(calls, at: str) -> None:
    """An assistant message's `tool_calls`: a non-empty list of calls, each OpenAI's nested form or a flat
    {"name", "arguments"}; arguments an object or a JSON string of one."""
    if not isinstance(calls, list) or not calls:
        raise BadRow(f"{at} has `tool_calls` that is {json_type(calls)}{' (empty)' if calls == [] else ''}",
                     f"a non-empty list of calls {_CALL}")
    for j, call in enumerate(calls, 1):
        where_ = f"{at}, tool call {j}"
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise BadRow(f"{where_} is {json_type(call if fn is None else fn)}", _CALL)
        if isinstance(call, dict) and call.get("type", "function") != "function":
            raise BadRow(f"{where_} has type {call.get('type')!r}", f"type 'function': {_CALL}")
        if not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise BadRow(f"{where_} has no function name", _CALL)
        arguments_object(fn.get("arguments", {}), where_)


def arguments_object(args, at: str) -> dict:
    """A call's arguments as an object: as given, or parsed from a JSON string."""
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as e:
            raise BadRow(f"{at} has `arguments` that are not valid JSON ({e})", _CALL) from None
    if not isinstance(args, dict):
        raise BadRow(f"{at} has `arguments` that are {json_type(args)}", _CALL)
    return args


_KIND = {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "a list", dict: "an object"}


def at_row(first: tuple, shown: str) -> str:
    """Where an earlier row is: `line 3` in the same file, `FILE:3` in another."""
    return where(str(first[1])) if first[0] == shown else f"{first[0]}:{first[1]}"


class FieldTypes:
    """One type per field across every row of every source (Arrow stores one per column). A row whose fields and
    value types were seen before is not looked at again."""

    def __init__(self):
        self.first, self.seen = {}, set()

    def check(self, row: dict, at: tuple) -> None:
        sig = (tuple(row), tuple(map(type, row.values())))  # after a conversion: not the signature of the row read
        if sig in self.seen:
            return
        for key, value in row.items():
            if value is None:
                continue
            kind = _KIND.get(type(value)) or json_type(value)
            seen = self.first.get(key)
            if seen is None:
                self.first[key] = (kind, at)
            elif seen[0] != kind:
                raise BadRow(f"`{key}` is {kind} here but {seen[0]} in {at_row(seen[1], at[0])}",
                             "one type per field across all rows")
        self.seen.add(sig)

    def arrow(self, schema, at: tuple) -> None:
        """The fields of rows read as Arrow columns (utils/data/fast_json.py), located at the file's first row."""
        import pyarrow as pa

        for f in schema:
            t = f.type
            kind = ("a string" if pa.types.is_string(t) or pa.types.is_large_string(t) else "a boolean"
                    if pa.types.is_boolean(t) else "a number" if pa.types.is_integer(t) or pa.types.is_floating(t)
                    else "a list" if pa.types.is_list(t) else "an object" if pa.types.is_struct(t) else None)
            if kind and not pa.types.is_null(t):
                self.first.setdefault(f.name, (kind, at))


# ----------------------------------------------------------------------------------------- wording
def field_names(fields) -> str:
    return ", ".join(f"`{f}`" for f in fields)


def _alternatives(kind: str) -> str:
    return " or ".join(" + ".join(f"`{f}`" for f in v) for v in SCHEMAS[kind])


def where(loc: str) -> str:
    return loc if not loc.isdigit() else f"line {loc}"


def style_of(conversational: bool) -> str:
    return "conversational (lists of messages)" if conversational else "plain strings"


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else text
