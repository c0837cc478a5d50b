"""Load a training file and check every row before anything heavy is loaded.

TRL fails late and obscurely on bad data (a KeyError in a map worker, a chat template that raises
mid-epoch, a silently dropped column), so we read the file ourselves, keep line numbers, and stop at
the first problem with `FILE:LINE: what is wrong; expected what.` We never apply chat templates:
TRL does that, as long as every row is either all conversations or all plain strings.

Supported inputs: .jsonl, .json (a list of objects, or JSON Lines), .parquet, and a directory
written by `datasets.Dataset.save_to_disk` (a DatasetDict uses its "train" split).
"""

from __future__ import annotations

import difflib
import json
import os

from utils.errors import UserError

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


class _Bad(Exception):
    """A problem in one row: `what` is wrong, `expected` is what we wanted. Located by the caller."""

    def __init__(self, what: str, expected: str):
        super().__init__(what)
        self.what, self.expected = what, expected


def is_conversational_row(row: dict) -> bool:
    """True when a text field holds a list of messages (TRL then applies the chat template)."""
    return any(isinstance(row.get(f), list) for f in _TEXT_FIELDS)


def load_dataset_checked(path: str, kind: str, tokenizer=None, *, what: str = "train_data_path"):
    """Read the file, validate every row for `kind`, and return a datasets.Dataset with the columns TRL expects.
    Raises UserError with message 'FILE:LINE: what is wrong; expected ...' on the first problem found."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown data kind {kind!r}; known: {sorted(SCHEMAS)}")
    records, dataset = _read(path, what)
    if not records:
        raise UserError(f"{path}: --{what} has no rows; expected at least one example ({DATA_KIND_HELP[kind]}).")

    first = None  # (location, variant, conversational) of the first row: every row must match it
    for loc, row in records:
        try:
            variant, conversational = _check_row(row, kind)
            if first is not None and variant != first[1]:
                raise _Bad(f"this row has {_names(variant)} but {_where(first[0])} has {_names(first[1])}",
                           "every row to use the same fields")
            if first is not None and conversational != first[2]:
                raise _Bad(f"this row is {_style(conversational)} but {_where(first[0])} is {_style(first[2])}",
                           "every row in the same style (TRL applies the chat template to all rows or none)")
        except _Bad as e:
            raise UserError(f"{path}:{loc}: {e.what}; expected {e.expected.rstrip('.')}.") from None
        if first is None:
            first = (loc, variant, conversational)

    if first[2] and tokenizer is not None and getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise UserError(f"{path}: the --{what} data is conversational (lists of role/content messages) but the "
                        f"tokenizer at {name} has no chat template, so the messages cannot be turned into text; "
                        "expected a tokenizer that has a chat template, or plain-string rows (no template is "
                        "applied to those).")
    return dataset if dataset is not None else _to_dataset(path, records)


# ----------------------------------------------------------------------------------------- reading
def _read(path: str, what: str):
    """Return ([(location, row)], Dataset or None). JSON is parsed here to keep line numbers;
    parquet and saved datasets are loaded by `datasets` and located by 1-based row index."""
    real = os.path.expanduser(path)
    if not os.path.exists(real):
        raise UserError(f"{path}: --{what} does not exist; expected a .jsonl, .json or .parquet file, or a "
                        "directory written by datasets.save_to_disk.")
    if os.path.isdir(real):
        dataset = _load_from_disk(path, real, what)
    else:
        ext = os.path.splitext(real)[1].lower()
        if ext in (".jsonl", ".json"):
            return _read_json(path, real, what, ext), None
        if ext != ".parquet":
            raise UserError(f"{path}: --{what} has an unsupported file type {ext or '(no extension)'!r}; expected "
                            ".jsonl, .json, .parquet, or a directory written by datasets.save_to_disk.")
        if os.path.getsize(real) == 0:
            raise UserError(f"{path}: --{what} is an empty file; expected at least one example.")
        try:
            import pyarrow.parquet as pq
            from datasets import Dataset
            from datasets.table import InMemoryTable

            # Read with pyarrow directly: Dataset.from_parquet would copy the file into the HF cache.
            dataset = Dataset(InMemoryTable(pq.read_table(real)))
        except Exception as e:
            raise UserError(f"{path}: --{what} could not be read as parquet ({_one_line(e)}); expected a "
                            "parquet file with one example per row.") from None
    return [(f"row {i}", row) for i, row in enumerate(dataset.to_list(), 1)], dataset


def _load_from_disk(path: str, real: str, what: str):
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(real)
    except Exception as e:
        raise UserError(f"{path}: --{what} is a directory but not one written by datasets.save_to_disk "
                        f"({_one_line(e)}); expected such a directory, or a .jsonl/.json/.parquet file.") from None
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise UserError(f"{path}: --{what} holds a DatasetDict with splits {sorted(dataset)} and no 'train' "
                            "split; expected a Dataset, or a DatasetDict with a 'train' split.")
        dataset = dataset["train"]
    return dataset


def _read_json(path: str, real: str, what: str, ext: str) -> list[tuple[str, object]]:
    try:
        # utf-8-sig: files saved by some Windows editors start with a byte-order mark.
        with open(real, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: --{what} is not UTF-8 text ({e.reason} at byte {e.start}); expected a UTF-8 "
                        "JSON file.") from None
    if not text.strip():
        raise UserError(f"{path}: --{what} is an empty file; expected at least one example.")
    if ext == ".json" and text.lstrip().startswith("["):
        # A JSON list: json's own error carries the line; rows are located by their index in the list.
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno}); expected a "
                            "valid JSON list of objects.") from None
        return [(f"record {i}", row) for i, row in enumerate(data, 1)]
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):  # blank lines are skipped but still counted
        if not line.strip():
            continue
        try:
            records.append((str(lineno), json.loads(line)))
        except json.JSONDecodeError as e:
            hint = " (a JSON object spread over several lines? JSON Lines needs one per line)" \
                if line.strip() in ("{", "[") else ""
            raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg}, column {e.colno}){hint}; expected one "
                            "complete JSON object per line.") from None
    return records


def _to_dataset(path: str, records):
    """Build the Dataset from every column any row has (Dataset.from_list keeps only the first row's)."""
    from datasets import Dataset

    columns: dict[str, list] = {}
    for _, row in records:
        for key in row:
            columns.setdefault(key, [])
    try:
        return Dataset.from_dict({k: [row.get(k) for _, row in records] for k in columns})
    except Exception as e:  # Arrow stores one type per column: name the row that breaks it
        for key in columns:
            seen = None
            for loc, row in records:
                kind = _json_type(row.get(key))
                if kind == "null":
                    continue
                if seen is None:
                    seen = (loc, kind)
                elif kind != seen[1]:
                    raise UserError(f"{path}:{loc}: `{key}` is {kind} here but {seen[1]} in {_where(seen[0])}; "
                                    "expected one type per field across all rows.") from None
        raise UserError(f"{path}: the rows could not be stored as a table ({_one_line(e)}); expected the same "
                        "type for each field across all rows.") from None


# ---------------------------------------------------------------------------------------- checking
def _check_row(row, kind: str) -> tuple[tuple[str, ...], bool]:
    """Validate one row; return (the variant's fields, whether it is conversational)."""
    if not isinstance(row, dict):
        raise _Bad(f"the row is {_json_type(row)}, not a JSON object", f"an object with {DATA_KIND_HELP[kind]}")
    variant = _pick_variant(row, kind)
    texts = [f for f in variant if f != "label"]
    for f in texts:
        value = row[f]
        if not isinstance(value, (str, list)):
            raise _Bad(f"`{f}` is {_json_type(value)}", _VALUE)
    styles = {f: isinstance(row[f], list) for f in texts}
    if len(set(styles.values())) > 1:
        conv = [f"`{f}`" for f, c in styles.items() if c]
        plain = [f"`{f}`" for f, c in styles.items() if not c]
        raise _Bad(f"{', '.join(conv)} {'is a conversation' if len(conv) == 1 else 'are conversations'} but "
                   f"{', '.join(plain)} {'is a plain string' if len(plain) == 1 else 'are plain strings'}",
                   f"{_names(texts)} all conversations or all plain strings (TRL templates a whole row or none)")
    conversational = any(styles.values())
    if variant == ("messages",) and not conversational:
        raise _Bad("`messages` is a plain string", 'a list of {"role", "content"} messages; for plain text use `text`')
    if variant == ("text",) and conversational:
        raise _Bad("`text` is a list", "a plain string; for conversations use `messages`")

    for f in texts:
        if conversational:
            # Which shape each field must have: a prompt ends on the user's turn, completions are
            # the model's turns, and a field with no prompt beside it is a whole conversation.
            shape = "prompt" if f == "prompt" else "completion" if "prompt" in variant else "whole"
            _check_conversation(row[f], f, shape)
        elif not row[f].strip():
            raise _Bad(f"`{f}` is an empty string", f"a non-empty `{f}`")
    if "label" in variant and not isinstance(row["label"], bool):
        raise _Bad(f"`label` is {_json_type(row['label'])} {json.dumps(row['label'])}",
                   "a JSON boolean: true (desirable) or false (undesirable), not 1/0 or a string")
    return variant, conversational


def _pick_variant(row: dict, kind: str) -> tuple[str, ...]:
    variants = SCHEMAS[kind]
    present = {k for k, v in row.items() if v is not None}  # parquet fills absent fields with null
    full = [v for v in variants if set(v) <= present]
    if full:
        # More than one unrelated field set (say `messages` and `text`): TRL would pick one silently.
        if any(not set(v) <= set(full[0]) for v in full[1:]):
            raise _Bad(f"the row has both {_names(full[0])} and {_names(full[1])}", f"only one of {_alternatives(kind)}")
        return full[0]
    # Report against the closest field set: most fields present, then fewest missing.
    best = max(variants, key=lambda v: (len(set(v) & present), -len(set(v) - present)))
    nulls = [f for f in best if f in row and row[f] is None]
    if nulls:
        raise _Bad(f"{_names(nulls)} {'is' if len(nulls) == 1 else 'are'} null", DATA_KIND_HELP[kind])
    if set(best) & present or len(variants) == 1:
        missing = [f for f in best if f not in present]
        what = f"missing field{'s' if len(missing) > 1 else ''} {_names(missing)}"
    else:  # nothing matched any field set: look for misspellings of every accepted field
        missing = sorted({f for v in variants for f in v})
        what = f"none of the fields {_alternatives(kind)} is present; the row has {_names(row) or 'no fields'}"
    unknown = [k for k in row if not any(k in v for v in variants)]
    hints = [f"found `{close[0]}`: did you mean `{f}`?" for f in missing
             if (close := difflib.get_close_matches(f, unknown, n=1, cutoff=0.6))]
    raise _Bad(what + (f" ({'; '.join(hints)})" if hints else ""), DATA_KIND_HELP[kind])


def _check_conversation(msgs: list, field: str, shape: str) -> None:
    """shape: "prompt" (ends on a user or tool turn), "completion" (assistant turns, with tool
    results between them), "whole" (a full conversation ending with the assistant)."""
    expected = {"prompt": "a conversation that alternates user/assistant and ends with a user (or tool) message",
                "completion": "only assistant message(s) (tool results may sit between them)",
                "whole": "a conversation that alternates user/assistant and ends with an assistant message"}[shape]
    if not msgs:
        raise _Bad(f"`{field}` is an empty list", expected)
    prev = "user" if shape == "completion" else None  # a completion continues the prompt's user turn
    for i, m in enumerate(msgs, 1):
        at = f"`{field}` message {i}"
        if not isinstance(m, dict):
            raise _Bad(f"{at} is {_json_type(m)}", 'an object {"role": ..., "content": ...}')
        for key in ("role", "content"):
            if key not in m or m[key] is None:
                close = difflib.get_close_matches(key, [k for k in m if k not in ("role", "content")], n=1)
                hint = f" (found `{close[0]}`: did you mean `{key}`?)" if close else ""
                raise _Bad(f"{at} has no `{key}`{hint}", 'every message to be {"role": ..., "content": ...}')
            if not isinstance(m[key], str):
                raise _Bad(f"{at} has a `{key}` that is {_json_type(m[key])}", f"`{key}` to be a string")
        role = m["role"]
        if role not in ROLES:
            raise _Bad(f"{at} has role {role!r}", f"one of {', '.join(ROLES)}")
        if shape == "completion" and role not in ("assistant", "tool"):
            raise _Bad(f"{at} has role {role!r}", expected)
        if role == "system":
            if i != 1:
                raise _Bad(f"{at} is a system message after other messages", "system only as the first message")
        elif prev not in _MAY_FOLLOW[role]:
            after = f"after a {prev!r} message" if prev else "as the first message"
            raise _Bad(f"{at} has role {role!r} {after}", expected)
        if role == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            raise _Bad(f"{at} is an assistant message with empty content", "a non-empty assistant answer")
        prev = role
    last = msgs[-1]["role"]
    if (shape == "prompt" and last not in ("user", "tool")) or (shape != "prompt" and last != "assistant"):
        raise _Bad(f"`{field}` ends with {'an' if last == 'assistant' else 'a'} {last} message", expected)


# ----------------------------------------------------------------------------------------- wording
def _names(fields) -> str:
    return ", ".join(f"`{f}`" for f in fields)


def _alternatives(kind: str) -> str:
    return " or ".join(" + ".join(f"`{f}`" for f in v) for v in SCHEMAS[kind])


def _where(loc: str) -> str:
    return loc if not loc.isdigit() else f"line {loc}"


def _style(conversational: bool) -> str:
    return "conversational (lists of messages)" if conversational else "plain strings"


def _json_type(value) -> str:
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


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    return (text[:200] + "...") if len(text) > 200 else text
