"""The fast way through a large JSON Lines file of plain-string rows in our own fields: Arrow's JSON reader parses
it in blocks (in C++, on every core) and the row checks run on whole columns: every field present and a string
(`label` a boolean), none null, none empty or blank, no field of another format. Any doubt (a row that fails a
check, a field whose type changes, a blank line, a byte-order mark) and the caller reads the file again row by row,
which says exactly what is wrong and where. Conversational rows and converted formats always go row by row."""

from __future__ import annotations

import json
import os

from utils.data.formats import FORMAT_KEYS

# Bytes Arrow parses at a time. Its reader keeps dozens of blocks in flight: 1 MiB blocks hold that to ~40 MB (16 MiB
# blocks: ~600 MB at 1M rows) for a few % more time. A row longer than a block goes row by row.
BLOCK = 1 << 20
# Smaller files go row by row: as fast below this size, and a bad row near the top is reported without parsing the
# whole file first (importing Arrow's JSON reader alone takes ~0.1 s).
MIN_BYTES = 8 << 20


class _Doubt(Exception):
    pass


def first_row(real: str):
    """The first non-blank line of a JSON Lines file, decoded (None: not JSON Lines, or not readable so)."""
    with open(real, "rb") as f:
        for line in f:
            if line.strip():
                if line.lstrip().startswith(b"["):
                    return None
                try:
                    return json.loads(line)
                except ValueError:
                    return None
    return None


def read(real: str, variant: tuple, sink) -> int | None:
    """Append every row of the file to `sink` as Arrow read it, checked by column; the number of rows, or None
    (and nothing appended) when the file should be read row by row instead."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pj

    texts = [f for f in variant if f != "label"]
    schema = pa.schema([(f, pa.string()) for f in texts] + ([("label", pa.bool_())] if "label" in variant else []))
    start, n = sink.written + len(sink.buf), 0
    sink.flush()
    try:
        reader = pj.open_json(real, read_options=pj.ReadOptions(block_size=BLOCK),
                              parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer"))
        for batch in reader:
            if set(batch.schema.names) & set(FORMAT_KEYS) != set(variant):
                raise _Doubt
            if any(batch.column(f).null_count for f in variant):
                raise _Doubt
            for f in texts:
                if pc.any(pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(batch.column(f))), 0)).as_py():
                    raise _Doubt
            sink.write(batch)
            n += batch.num_rows
        if n != _lines(real):  # Arrow skips blank lines: row N would not be line N
            raise _Doubt
    except (_Doubt, pa.ArrowException, OSError, ValueError):
        sink.truncate(start)
        return None
    return n


def _lines(real: str) -> int:
    count, last = 0, b"\n"
    with open(real, "rb") as f:
        while chunk := f.read(16 * BLOCK):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def eligible(real: str) -> bool:
    return os.path.splitext(real)[1].lower() in (".jsonl", ".json") and os.path.getsize(real) >= max(MIN_BYTES, 1)
