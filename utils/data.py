"""Load a training file and check every row before anything heavy is loaded.

TRL fails late and obscurely on bad data (a KeyError in a map worker, a chat template that raises
mid-epoch, a silently dropped column), so we read the file ourselves, keep line numbers, and stop at
the first problem with `FILE:LINE: what is wrong; expected what.` We never apply chat templates:
TRL does that, as long as every row is either all conversations or all plain strings.

Supported inputs: .jsonl, .json (a list of objects, or JSON Lines), .parquet, and a directory
written by `datasets.Dataset.save_to_disk` (a DatasetDict uses its "train" split).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from utils.errors import UserError
# DATA_KIND_HELP, SCHEMAS and is_conversational_row are part of this module's interface too.
from utils.rows import (DATA_KIND_HELP, SCHEMAS, BadRow, check_row, field_names, is_conversational_row,  # noqa: F401
                        json_type, one_line, style_of, where)


@dataclass
class Rows:
    """A data file read and every row checked (`check_rows`), not yet a Dataset."""

    path: str
    records: list  # [(location, row)]
    dataset: object  # the datasets.Dataset it was read as (parquet, save_to_disk), else None
    conversational: bool


def load_dataset_checked(path: str, kind: str, tokenizer=None, *, what: str = "train_data_path",
                         rows: Rows | None = None):
    """Read the file, validate every row for `kind`, and return a datasets.Dataset with the columns TRL expects.
    Raises UserError with message 'FILE:LINE: what is wrong; expected ...' on the first problem found. `rows`:
    the file as `check_rows` already read it."""
    rows = rows or check_rows(path, kind, what)
    if rows.conversational and tokenizer is not None and getattr(tokenizer, "chat_template", None) is None:
        name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
        raise UserError(f"{path}: the --{what} data is conversational (lists of role/content messages) but the "
                        f"tokenizer at {name} has no chat template, so the messages cannot be turned into text; "
                        "expected a tokenizer that has a chat template, or plain-string rows (no template is "
                        "applied to those).")
    if rows.conversational and tokenizer is not None:
        render_every_row(rows, tokenizer)
    return rows.dataset if rows.dataset is not None else _to_dataset(path, rows.records)


def render_every_row(rows: Rows, tokenizer) -> None:
    """Apply the chat template to every conversational row as TRL will (the prompt alone, ready for the answer;
    the prompt with each completion; a whole conversation), so that a template that refuses a row (Gemma's on a
    system turn, a strict alternation check) is reported here, before any weights load, not mid-training."""
    name = getattr(tokenizer, "name_or_path", "") or "the tokenizer"
    for loc, row in rows.records:
        prompt = row.get("prompt")
        renders = [(prompt, True)] if isinstance(prompt, list) else []
        for field in ("chosen", "rejected", "completion", "messages"):
            value = row.get(field)
            if isinstance(value, list):
                renders.append(((prompt if isinstance(prompt, list) else []) + value, False))
        for messages, generation_prompt in renders:
            try:
                tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
            except Exception as e:  # a template may raise anything (jinja2's TemplateError, KeyError, TypeError...)
                raise UserError(f"{rows.path}:{loc}: the chat template of {name} refused this row: "
                                f"{type(e).__name__}: {one_line(e)}; expected a row that template accepts (e.g. no "
                                "system turn for templates without a system role).") from None


def check_rows(path: str, kind: str, what: str = "train_data_path") -> Rows:
    """Read the file and check every row for `kind` (no tokenizer, no `datasets` for JSON files)."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown data kind {kind!r}; known: {sorted(SCHEMAS)}")
    records, dataset = _read(path, what)
    if not records:
        raise UserError(f"{path}: --{what} has no rows; expected at least one example ({DATA_KIND_HELP[kind]}).")

    first = None  # (location, variant, conversational) of the first row: every row must match it
    for loc, row in records:
        try:
            variant, conversational = check_row(row, kind)
            if first is not None and variant != first[1]:
                raise BadRow(f"this row has {field_names(variant)} but {where(first[0])} has {field_names(first[1])}",
                             "every row to use the same fields")
            if first is not None and conversational != first[2]:
                raise BadRow(f"this row is {style_of(conversational)} but {where(first[0])} is {style_of(first[2])}",
                             "every row in the same style (TRL applies the chat template to all rows or none)")
        except BadRow as e:
            raise UserError(f"{path}:{loc}: {e.what}; expected {e.expected.rstrip('.')}.") from None
        if first is None:
            first = (loc, variant, conversational)
    return Rows(path, records, dataset, first[2])


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
            raise UserError(f"{path}: --{what} could not be read as parquet ({one_line(e)}); expected a "
                            "parquet file with one example per row.") from None
    return [(f"row {i}", row) for i, row in enumerate(dataset.to_list(), 1)], dataset


def _load_from_disk(path: str, real: str, what: str):
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(real)
    except Exception as e:
        raise UserError(f"{path}: --{what} is a directory but not one written by datasets.save_to_disk "
                        f"({one_line(e)}); expected such a directory, or a .jsonl/.json/.parquet file.") from None
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
                kind = json_type(row.get(key))
                if kind == "null":
                    continue
                if seen is None:
                    seen = (loc, kind)
                elif kind != seen[1]:
                    raise UserError(f"{path}:{loc}: `{key}` is {kind} here but {seen[1]} in {where(seen[0])}; "
                                    "expected one type per field across all rows.") from None
        raise UserError(f"{path}: the rows could not be stored as a table ({one_line(e)}); expected the same "
                        "type for each field across all rows.") from None




def refuse_if_all_dropped(path: str, dataset, tokenizer, max_length: int | None) -> None:
    """TRL drops every row whose prompt alone fills `max_length`; when that is every row it fails later with
    "torch.cat(): expected a non-empty list of Tensors". Counted here, with the tokenizer, before any weights."""
    if not max_length or "prompt" not in dataset.column_names:
        return
    lengths = []
    for start in range(0, len(dataset), 1000):  # one prompt with room is enough: usually the first chunk
        prompts = list(dataset[start:start + 1000]["prompt"])
        if isinstance(prompts[0], list):
            texts = tokenizer.apply_chat_template(prompts, tokenize=False, add_generation_prompt=True)
            lengths += [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        else:
            lengths += [len(ids) for ids in tokenizer(prompts)["input_ids"]]
        if min(lengths) < max_length:
            return
    if min(lengths) >= max_length:
        raise UserError(f"{path}: --max_length {max_length} leaves no training row: every prompt alone is at least "
                        f"that long (the shortest has {min(lengths)} tokens, the longest {max(lengths)}), so no row "
                        f"keeps a token of its answer to train on; expected --max_length above {min(lengths)} "
                        f"(e.g. {2 * max(lengths)}).")
