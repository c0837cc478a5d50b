"""Rows to an Arrow stream file, in batches, with the schema widened when a later batch needs it; the scratch folder
those files (and the caches `datasets` writes beside them) live in."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from utils.data.sources import BATCH

class Sink:
    """Rows to an Arrow stream file in batches. A later batch with a new field or a wider type (int -> float, a
    message with an extra key) widens the schema and rewrites what was written (rare, once per change)."""

    def __init__(self, path: str):
        self.path, self.buf, self.writer, self.schema, self.written = path, [], None, None, 0

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
        self.write(table)

    def write(self, table) -> None:
        """Append an Arrow table (or record batch) after the rows added so far."""
        import pyarrow as pa

        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if self.writer is None:
            self.schema, self.writer = table.schema, pa.ipc.new_stream(self.path, table.schema)
        elif not table.schema.equals(self.schema):
            unified = pa.unify_schemas([self.schema, table.schema], promote_options="permissive")
            if not unified.equals(self.schema):
                self._rewrite(unified)
            table = _conform(table, self.schema)
        self.writer.write_table(table)
        self.written += table.num_rows

    def _rewrite(self, schema, keep: int | None = None) -> None:
        """Copy what was written into a new file with `schema`, keeping the first `keep` rows (None: all)."""
        import pyarrow as pa

        self.writer.close()
        old = self.path + ".old"
        os.replace(self.path, old)
        self.schema, self.writer = schema, pa.ipc.new_stream(self.path, schema)
        left = self.written if keep is None else keep
        with pa.memory_map(old) as source:
            for batch in pa.ipc.open_stream(source):
                if left > 0:
                    self.writer.write_table(_conform(pa.Table.from_batches([batch.slice(0, left)]), schema))
                left -= batch.num_rows
        self.written = self.written if keep is None else min(self.written, keep)
        os.remove(old)

    def truncate(self, rows: int) -> None:
        """Forget every row after the first `rows` (a file read in one way, to be read again in another)."""
        self.flush()
        if self.written > rows:
            self._rewrite(self.schema, keep=rows)

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
PREFIX = "rlhf-data-"


def scratch() -> str:
    """A folder for this process's Arrow files (and the caches `datasets` writes beside them), removed at exit. Its
    name carries this host and process id, `rlhf-data-HOST-PID-<random>`, so that a later run can tell a killed run's
    folder (SIGKILL, out of memory: no exit handler ran) from a live one's and remove it (`reclaim`)."""
    if not _SCRATCH:
        base = tempfile.gettempdir()
        reclaim(base)
        _SCRATCH.append(tempfile.mkdtemp(prefix=f"{PREFIX}{host_name()}-{os.getpid()}-", dir=base))
        atexit.register(remove_scratch)
    return tempfile.mkdtemp(dir=_SCRATCH[0])


def remove_scratch() -> None:
    """Remove this process's scratch folder now (exit handlers, and exit paths that skip them)."""
    while _SCRATCH:
        shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def reclaim(base: str) -> list[str]:
    """Remove the scratch folders under `base` left by runs of this host whose process is gone; returns them. A
    folder of another host, of a live process, or not named by `scratch` is never touched."""
    import re

    gone = []
    for name in os.listdir(base):
        m = re.fullmatch(rf"{re.escape(PREFIX)}(.+)-(\d+)-[^-]+", name)
        if m and m.group(1) == host_name() and not _alive(int(m.group(2))):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)
            gone.append(name)
    return gone


def host_name() -> str:
    import re
    import socket

    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
