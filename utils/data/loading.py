"""Read the training data, convert it from the format it came in, check every row, and store it as Arrow, before
anything heavy is loaded.

TRL fails late and obscurely on bad data (a KeyError in a map worker, a chat template that raises mid-epoch, a
silently dropped column), so every row is checked here and the first problem stops the run with
`FILE:LINE: what is wrong; expected what.` Rows stream from the files (utils/data/sources.py), through their format's
converter (utils/data/formats.py) and the row checks (utils/data/schemas.py), into an Arrow file written in batches: memory
stays bounded however large the data. Several sources are mixed with --data_weights; preference rows for KTO
are unpaired with TRL's helper; every summary is printed in one line per source.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass, field

from utils.data.arrow_sink import Sink, scratch
from utils.core.errors import UserError
from utils.data.formats import OURS, OURS_PREF, DataOptions, describe, readings, summary
# DATA_KIND_HELP, SCHEMAS and is_conversational_row are part of this module's interface too.
from utils.data.schemas import (DATA_KIND_HELP, SCHEMAS, BadRow, FieldTypes, at_row, check_row, field_names,  # noqa: F401
                        is_conversational_row, style_of)
from utils.data import fast_json
from utils.data.sources import iter_rows, resolve, shown_as

@dataclass
class Rows:
    """Data read, converted and checked, stored in one Arrow file (`arrow`), each row with its location."""

    paths: list[str]
    arrow: str
    files: list[tuple[str, str]] = field(default_factory=list)  # (file as shown in messages, "" | "row " | "record ")
    file_of: array = field(default_factory=lambda: array("i"))  # per stored row: index into files
    loc_of: array = field(default_factory=lambda: array("q"))  # per stored row: its line, row or record number
    counts: list[int] = field(default_factory=list)  # stored rows per source, in order
    conversational: bool = False
    unpair: bool = False  # preference pairs stored, KTO rows wanted: unpaired when the dataset is built
    summary: list[str] = field(default_factory=list)
    lengths: object = None  # utils.data.lengths.Lengths, once measured with a tokenizer
    options: DataOptions | None = None  # the options it was read with
    selected: list | None = None  # the stored rows the dataset holds, in order, when a mixture picked them

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def path(self) -> str:
        return " ".join(self.paths)

    @property
    def columns(self) -> list[str]:
        import pyarrow as pa

        with pa.memory_map(self.arrow) as source:
            return pa.ipc.open_stream(source).schema.names

    def where(self, i: int) -> str:
        shown, style = self.files[self.file_of[i]]
        return f"{shown}:{style}{self.loc_of[i]}"

    def batches(self, size: int = 1000):
        """(first index, rows as dicts) over the stored rows, `size` at a time."""
        import pyarrow as pa

        start = 0
        with pa.memory_map(self.arrow) as source:
            for batch in pa.ipc.open_stream(source):
                for i in range(0, batch.num_rows, size):
                    part = batch.slice(i, size).to_pylist()
                    yield start, part
                    start += len(part)


def check_rows(paths, kind: str, what: str = "train_data_path", options: DataOptions | None = None) -> Rows:
    """Read every source, convert and check every row for `kind`, store them as Arrow; no tokenizer, no torch."""
    if kind not in SCHEMAS:
        raise ValueError(f"unknown data kind {kind!r}; known: {sorted(SCHEMAS)}")
    options = options or DataOptions()
    paths = [paths] if isinstance(paths, str) else list(paths)
    if options.weights is not None and what == "train_data_path" and len(options.weights) != len(paths):
        raise UserError(f"--data_weights has {len(options.weights)} values for {len(paths)} --train_data_path "
                        "sources; expected one weight per source, in the same order.")
    if options.weights is not None and (any(w < 0 for w in options.weights) or not sum(options.weights) > 0):
        raise UserError(f"--data_weights {' '.join(map(str, options.weights))}: expected weights >= 0 that are not "
                        "all 0.")
    sources = [resolve(p, what, options.split if what == "train_data_path" else None) for p in paths]
    rows = Rows(paths, os.path.join(scratch(), f"{what}.arrow"), options=options)
    sink, first, types, formats = Sink(rows.arrow), None, FieldTypes(), {}
    plain, plain_fmt = {}, None  # signature (fields, value types) -> text fields of a plain row checked and stored as is
    for source in sources:
        fmt, target, n_in, n_out = None, None, 0, 0
        for real in source.files:
            quick = None if source.saved else _fast(real, kind, fmt, first, sink)
            if quick is not None:  # the whole file, checked by columns
                fmt, variant, n = quick
                target = _check_kind(fmt, kind)
                shown = shown_as(source, real)
                rows.files.append((shown, ""))
                rows.file_of.extend(array("i", [len(rows.files) - 1]) * n)
                rows.loc_of.extend(range(1, n + 1))
                types.arrow(sink.schema, (shown, 1))
                first = first or ((shown, "1"), variant, False)
                n_in, n_out = n_in + n, n_out + n
                continue
            for shown, style, number, row in iter_rows(source, what, [real]):
                if not rows.files or rows.files[-1] != (shown, style):
                    rows.files.append((shown, style))
                n_in += 1
                # A row of plain strings with the fields and value types of one already checked can only be wrong in
                # its values being empty; anything else takes the full path below, which says what is wrong.
                sig = (tuple(row), tuple(map(type, row.values()))) if type(row) is dict else None
                texts = plain.get(sig) if sig is not None else None
                if texts is not None and fmt is plain_fmt and all(row[f].strip() for f in texts):
                    sink.add(row)
                    rows.file_of.append(len(rows.files) - 1)
                    rows.loc_of.append(number)
                    n_out += 1
                    continue
                loc = f"{style}{number}"
                try:
                    was, fmt = fmt, _format(row, sig, kind, fmt, formats)
                    if fmt is not was or target is None:
                        target = _check_kind(fmt, kind)
                    for out in fmt.convert(row, options):
                        variant, conversational = check_row(out, target)
                        if first is None:
                            first = ((shown, loc), variant, conversational)
                            rows.conversational = conversational
                        elif variant != first[1] or conversational != first[2]:
                            now, then = ((f"has {field_names(variant)}", f"has {field_names(first[1])}")
                                         if variant != first[1] else
                                         (f"is {style_of(conversational)}", f"is {style_of(first[2])}"))
                            raise BadRow(f"this row {now} but {at_row(first[0], shown)} {then}", "every row in the "
                                         "same fields and style (TRL applies the chat template to all rows or none)")
                        types.check(out, (shown, loc))
                        sink.add(out)
                        rows.file_of.append(len(rows.files) - 1)
                        rows.loc_of.append(number)
                        n_out += 1
                    if fmt in (OURS, OURS_PREF) and not conversational:
                        plain[sig], plain_fmt = [f for f in variant if f != "label"], fmt
                except BadRow as e:
                    raise UserError(f"{shown}:{loc}: {e.what}; expected {e.expected.rstrip('.')}.") from None
        if n_in == 0:
            raise UserError(f"{source.path}: --{what} has no rows; expected at least one example "
                            f"({DATA_KIND_HELP[kind]}).")
        rows.counts.append(n_out)
        rows.unpair = kind == "kto" and _check_kind(fmt, kind) == "preference"
        rows.summary.append(summary(source, fmt, kind, n_in, n_out, rows.unpair, options))
    sink.close()
    if not len(rows):
        raise UserError(f"{rows.path}: --{what}: the settings drop every row ({'; '.join(rows.summary)}); expected "
                        "settings that keep at least one (a smaller --min_score_gap?).")
    return rows


def _fast(real: str, kind: str, fmt, first, sink):
    """(format, fields, rows) when the file went the fast way (utils/data/fast_json.py): JSON Lines whose first row is plain
    strings in our own fields, like the rows before it. None: read it row by row."""
    if not fast_json.eligible(real):
        return None
    row = fast_json.first_row(real)
    found = readings(row, kind) if isinstance(row, dict) else []
    if len(found) != 1 or found[0] not in (OURS, OURS_PREF) or fmt not in (None, found[0]):
        return None
    try:
        variant, conversational = check_row(row, _check_kind(found[0], kind))
    except BadRow:
        return None
    if conversational or (first is not None and (variant, conversational) != first[1:]):
        return None
    n = fast_json.read(real, variant, sink)
    return None if n is None else (found[0], variant, n)


def _format(row, sig, kind: str, fmt, cache: dict):
    """The row's format; every row of a source must read as the first row did. Rows with the same signature (fields
    and value types) read the same: the answer is cached under it."""
    if not isinstance(row, dict):
        return fmt or OURS  # check_row names the problem
    found = cache.get(sig)
    if found is None:
        found = cache[sig] = readings(row, kind)
    if len(found) > 1:
        raise BadRow(f"the row can be read two ways: as {describe(found[0])} and as {describe(found[1])}",
                     "the fields of one format only (drop or rename the others)")
    if not found and fmt is not None and fmt.fields:
        missing = [f for f in fmt.fields if row.get(f) is None]
        raise BadRow(f"missing field{'s' if len(missing) > 1 else ''} {field_names(missing)}",
                     f"every row in the format of the rows before it: {describe(fmt)}")
    if not found:
        check_row(row, _check_kind(fmt, kind))  # names what is missing
    now = found[0] if found else fmt or OURS
    if fmt is not None and now is not fmt:
        raise BadRow(f"this row reads as {describe(now)} but the rows before it as {describe(fmt)}",
                     "every row of a file in one format")
    return now


def _check_kind(fmt, kind: str) -> str:
    """The data kind converted rows are checked as: preference formats stay pairs for KTO (unpaired later)."""
    if fmt is OURS or fmt is None:
        return kind
    base = fmt.kind or "preference"
    return "reward" if kind == "reward" and base == "preference" else base


# ------------------------------------------------------------------------------------------ the dataset
def to_dataset(rows: Rows, seed: int = 0, weights: list[float] | None = None, masks_with=None):
    """The datasets.Dataset TRL gets: the stored rows (memory-mapped), tokenized with assistant masks when
    `masks_with` is a tokenizer (utils/data/chat_masks.py), mixed to `weights`, unpaired for KTO."""
    from datasets import Dataset

    dataset = Dataset.from_file(rows.arrow)
    if masks_with is not None:  # in stored order, so that a refused row is named at its FILE:LINE
        from utils.data.chat_masks import add_masks

        dataset = add_masks(dataset, masks_with, rows.where)
    if weights is not None and len(rows.counts) > 1:
        from utils.data.mixture import mix

        rows.selected, notes = mix(rows.counts, weights, seed, rows.paths)
        for note in notes:
            _say(note)
        dataset = dataset.select(rows.selected)
    if rows.unpair:
        from trl.data_utils import unpair_preference_dataset

        dataset = unpair_preference_dataset(dataset, desc="Unpairing preference rows for KTO")
    return dataset


def prepare(paths, kind: str, tokenizer, what: str, options: DataOptions, seed: int = 0, rows: Rows | None = None,
            assistant_only_loss: bool | None = False):
    """(Rows, datasets.Dataset): read, convert and check (unless `rows` already did with these options), say what was
    read, render and count every row with the tokenizer (utils/data/lengths.py), build the dataset (with our assistant
    masks where the template needs them: utils/data/chat_masks.py)."""
    if rows is None or rows.options != options:
        rows = check_rows(paths, kind, what, options)
    for line in rows.summary:
        _say(line)
    if tokenizer is not None:
        from utils.data.lengths import measure

        measure(rows, tokenizer, what)
    from utils.data.chat_masks import wanted

    masks_with = tokenizer if rows.conversational and wanted(assistant_only_loss, rows.columns, tokenizer) else None
    return rows, to_dataset(rows, seed, options.weights if what == "train_data_path" else None, masks_with)


def train_and_eval(common, kind: str, tokenizer, rows: dict, seed: int = 0, assistant_only_loss: bool | None = False):
    """(train, eval or None) for main_train, from --train_data_path, --eval_data_path or --eval_split; `rows` holds
    what the early checks read and gets what is read here. `assistant_only_loss`: the config's (None: on for
    `messages` rows)."""
    datasets = {}
    for what in ("train_data_path", "eval_data_path"):
        if getattr(common, what):
            rows[what], datasets[what] = prepare(getattr(common, what), kind, tokenizer, what, DataOptions.of(common),
                                                 seed, rows.get(what), assistant_only_loss)
    train, evals = datasets["train_data_path"], datasets.get("eval_data_path")
    if evals is None and common.eval_split > 0:
        held = math.ceil(len(train) * common.eval_split)  # as datasets' train_test_split rounds
        if held >= len(train):
            raise UserError(f"--eval_split {common.eval_split} of {len(train)} rows leaves no training row; expected "
                            "a smaller fraction, more rows, or --eval_data_path.")
        split = train.train_test_split(test_size=common.eval_split, seed=0)
        train, evals = split["train"], split["test"]
    return train, evals


def load_dataset_checked(paths, kind: str, tokenizer=None, *, what: str = "train_data_path",
                         options: DataOptions | None = None, seed: int = 0):
    """The datasets.Dataset of `paths` for `kind`, every row checked (with a tokenizer: rendered and counted too).
    Raises UserError 'FILE:LINE: what is wrong; expected ...' on the first problem."""
    return prepare(paths, kind, tokenizer, what, options or DataOptions(), seed)[1]


def _say(line: str) -> None:
    from utils.core.distributed import first_process

    if first_process():
        print(line, flush=True)
