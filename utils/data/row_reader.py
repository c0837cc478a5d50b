"""RowReader: what utils.data.loading.check_rows keeps while it reads the sources, file by file, into one Arrow file.

A file goes one of two ways. The column way (utils/data/fast_json.py) takes a whole JSON Lines file of plain strings
in our own fields at once. Otherwise it is read row by row: each row is matched to its format (utils/data/formats.py),
converted, checked (utils/data/schemas.py) and stored, except a plain row shaped like one already checked, which can
only be wrong in a value being empty and is stored as is. This loop runs once per row of files of millions of rows:
bench/data_load.py times it.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass

from utils.core.errors import UserError
from utils.data import fast_json, images
from utils.data.arrow_sink import Sink
from utils.data.formats import OURS, OURS_PREF, describe, readings, summary
from utils.data.schemas import DATA_KIND_HELP, BadRow, FieldTypes, at_row, check_row, field_names, style_of
from utils.data.sources import iter_rows, shown_as
from utils.data.tool_rows import store_form


@dataclass
class FirstRow:
    """The first row stored: every later row must have its fields and its style (TRL applies the chat template to all
    rows or none)."""

    at: tuple  # (file as shown in messages, location in it)
    variant: tuple  # its fields, as utils.data.schemas.check_row names them
    conversational: bool


class RowReader:
    """Reads sources into `rows` (a utils.data.loading.Rows): its Arrow sink, the first row, one type per field, the
    format of each row signature seen, and the plain-row signatures already checked; per source, its format, the kind
    its rows are checked as, and the rows read and stored."""

    def __init__(self, rows, kind: str, what: str):
        self.rows, self.kind, self.what, self.options = rows, kind, what, rows.options
        self.sink, self.first, self.types, self.formats = Sink(rows.arrow), None, FieldTypes(), {}
        # signature (fields, value types) -> the text fields of a plain row checked before: its like is stored as is
        self.plain, self.plain_fmt = {}, None
        self.fmt, self.target, self.n_in, self.n_out = None, None, 0, 0
        self.base = os.getcwd()

    def read_source(self, source) -> None:
        """Every file of `source`, then its row count and its summary line."""
        self.fmt, self.target, self.n_in, self.n_out = None, None, 0, 0
        for real in source.files:
            if source.saved or not self.read_by_columns(source, real):
                self.read_by_rows(source, real)
        if self.n_in == 0:
            raise UserError(f"{source.path}: --{self.what} has no rows; expected at least one example "
                            f"({DATA_KIND_HELP[self.kind]}).")
        rows = self.rows
        rows.counts.append(self.n_out)
        rows.unpair = self.kind == "kto" and _check_kind(self.fmt, self.kind) == "preference"
        rows.summary.append(summary(source, self.fmt, self.kind, self.n_in, self.n_out, rows.unpair, self.options))

    def read_by_columns(self, source, real: str) -> bool:
        """The whole file checked by columns, when it can be (False: read it row by row)."""
        if self.options.tools and self.kind != "prompt":
            return False  # --tools' schemas go into each row: row by row (plain rows are refused there)
        quick = _fast(real, self.kind, self.fmt, self.first, self.sink)
        if quick is None:
            return False
        self.fmt, variant, n = quick
        self.target = _check_kind(self.fmt, self.kind)
        shown, rows = shown_as(source, real), self.rows
        rows.files.append((shown, ""))
        rows.file_of.extend(array("i", [len(rows.files) - 1]) * n)
        rows.loc_of.extend(range(1, n + 1))
        self.types.arrow(self.sink.schema, (shown, 1))
        self.first = self.first or FirstRow((shown, "1"), variant, False)
        self.n_in, self.n_out = self.n_in + n, self.n_out + n
        return True

    def read_by_rows(self, source, real: str) -> None:
        """The file row by row. A row of plain strings with the fields and value types of one already checked can only
        be wrong in its values being empty: it is stored as is; any other row takes `read_row`, which says what is
        wrong. The hot loop: what it uses is held in local names, its counts added at the end."""
        files, file_of, loc_of = self.rows.files, self.rows.file_of, self.rows.loc_of
        plain, add, n_in, n_plain = self.plain, self.sink.add, 0, 0
        self.base = os.path.dirname(os.path.abspath(real))  # what image paths in its rows are relative to
        for shown, style, number, row in iter_rows(source, self.what, [real]):
            if not files or files[-1] != (shown, style):
                files.append((shown, style))
            n_in += 1
            sig = (tuple(row), tuple(map(type, row.values()))) if type(row) is dict else None
            texts = plain.get(sig) if sig is not None else None
            if texts is not None and self.fmt is self.plain_fmt and all(row[f].strip() for f in texts):
                add(row)
                file_of.append(len(files) - 1)
                loc_of.append(number)
                n_plain += 1
            else:
                self.read_row(row, sig, shown, style, number)
        self.n_in, self.n_out = self.n_in + n_in, self.n_out + n_plain

    def read_row(self, row, sig, shown: str, style: str, number: int) -> None:
        """Match one row to its format, convert, check and store what it becomes; remember its signature when it is
        plain. A problem stops the run as `FILE:LINE: what is wrong; expected what.`"""
        loc = f"{style}{number}"
        try:
            was, self.fmt = self.fmt, _format(row, sig, self.kind, self.fmt, self.formats)
            if self.fmt is not was or self.target is None:
                self.target = _check_kind(self.fmt, self.kind)
            for out in self.fmt.convert(row, self.options):
                if images.wanted(out):  # paths resolved, files decoded, placeholders counted (utils/data/images.py)
                    out = images.normalize(out, self.base)
                    self.rows.images = self.rows.images or "images" in out
                variant, conversational = check_row(out, self.target)
                out = self.tool_form(out, conversational)
                self.check_like_first(variant, conversational, shown, loc)
                self.types.check(out, (shown, loc))
                self.sink.add(out)
                self.rows.file_of.append(len(self.rows.files) - 1)
                self.rows.loc_of.append(number)
                self.n_out += 1
            if self.fmt in (OURS, OURS_PREF) and not conversational:
                self.plain[sig], self.plain_fmt = [f for f in variant if f != "label"], self.fmt
        except BadRow as e:
            raise UserError(f"{shown}:{loc}: {e.what}; expected {e.expected.rstrip('.')}.") from None

    def tool_form(self, row: dict, conversational: bool) -> dict:
        """The row as stored when it has tool content or takes --tools' schemas (utils/data/tool_rows.py)."""
        default = self.options.tools if self.kind != "prompt" else None
        if not conversational:
            if row.get("tools") is not None or default:
                raise BadRow("tool schemas (a `tools` field or --tools) come with plain-string rows, which no chat "
                             "template renders", "conversational rows (lists of role/content messages) with tools")
            return row
        out = store_form(row, default)
        if out is not row:
            self.rows.tools = True
        return out

    def check_like_first(self, variant: tuple, conversational: bool, shown: str, loc: str) -> None:
        """Remember the first row; refuse a later one with other fields or another style."""
        first = self.first
        if first is None:
            self.first = FirstRow((shown, loc), variant, conversational)
            self.rows.conversational = conversational
        elif variant != first.variant or conversational != first.conversational:
            now, then = ((f"has {field_names(variant)}", f"has {field_names(first.variant)}")
                         if variant != first.variant else
                         (f"is {style_of(conversational)}", f"is {style_of(first.conversational)}"))
            raise BadRow(f"this row {now} but {at_row(first.at, shown)} {then}", "every row in the same fields and "
                         "style (TRL applies the chat template to all rows or none)")


def _fast(real: str, kind: str, fmt, first: FirstRow | None, sink):
    """(format, fields, rows) when the file went the fast way (utils/data/fast_json.py): JSON Lines whose first row is
    plain strings in our own fields, like the rows before it. None: read it row by row."""
    if not fast_json.eligible(real):
        return None
    row = fast_json.first_row(real)
    found = readings(row, kind) if isinstance(row, dict) else []
    if len(found) != 1 or found[0] not in (OURS, OURS_PREF) or fmt not in (None, found[0]) or images.wanted(row):
        return None
    try:
        variant, conversational = check_row(row, _check_kind(found[0], kind))
    except BadRow:
        return None
    if conversational or (first is not None and (variant, conversational) != (first.variant, first.conversational)):
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
