"""Rows to an Arrow stream file, in batches, with the schema widened when a later batch needs it; the scratch folder
those files (and the caches `datasets` writes beside them) live in."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from utils.sources import BATCH

class Sink:
    """Rows to an Arrow stream file in batches. A later batch with a new field or a wider type (int -> float, a
    message with an extra key) widens the schema and rewrites what was written (rare, once per change)."""

    def __init__(self, path: str):
        self.path, self.buf, self.writer, self.schema = path, [], None, None

    def add(self, row: dict) -> None:
        self.buf.append(row)
        if len(self.buf) >= BATCH:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self.buf:
            return
        keys = list(dict.fromkeys(k for r in self.buf for k in r))
        table = pa.Table.from_pydict({k: [r.get(k) for r in self.buf] for k in keys})
        self.buf = []
        if self.writer is None:
            self.schema, self.writer = table.schema, pa.ipc.new_stream(self.path, table.schema)
        elif not table.schema.equals(self.schema):
            unified = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
            if not unified.equals(self.schema):
                self._rewrite(unified)
            table = _conform(table, self.schema)
        self.writer.write_table(table)

    def _rewrite(self, schema) -> None:
        import pyarrow as pa

        self.writer.close()
        old = self.path + ".old"
        os.replace(self.path, old)
        self.schema, self.writer = schema, pa.ipc.new_stream(self.path, schema)
        with pa.memory_map(old) as source:
            for batch in pa.ipc.open_stream(source):
                self.writer.write_table(_conform(pa.Table.from_batches([batch]), schema))
        os.remove(old)

    def close(self) -> None:
        import pyarrow as pa

        self.flush()
        if self.writer is None:  # no row at all: an empty file with no columns
            self.writer = pa.ipc.new_stream(self.path, pa.schema([]))
        self.writer.close()


def _conform(table, schema):
    import pyarrow as pa

    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


_SCRATCH: list[str] = []


def scratch() -> str:
    """A folder for this process's Arrow files (and the caches `datasets` writes beside them), removed at exit."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.mkdtemp(prefix="rlhf-data-"))
        atexit.register(shutil.rmtree, _SCRATCH[0], True)
    return tempfile.mkdtemp(dir=_SCRATCH[0])
