"""Read the training data, convert it from the format it came in, check every row, and store it as Arrow, before
anything heavy is loaded.

TRL fails late and obscurely on bad data (a KeyError in a map worker, a chat template that raises mid-epoch, a
silently dropped column), so every row is checked here and the first problem stops the run with
`FILE:LINE: what is wrong; expected what.` Rows stream from the files (utils/data/sources.py), through their format's
converter (utils/data/formats.py) and the row checks (utils/data/schemas.py), into an Arrow file written in batches
(the loop: utils/data/row_reader.py): memory stays bounded however large the data. Several sources are mixed with
--data_weights; preference rows for KTO are unpaired with TRL's helper; every summary is printed in one line per
source.
"""

from __future__ import annotations

import math
import os
from array import array
from dataclasses import dataclass, field

from utils.data.arrow_sink import scratch
from utils.core.errors import UserError
from utils.data.formats import DataOptions
from utils.data.row_reader import RowReader
from utils.data.schemas import SCHEMAS
from utils.data.sources import resolve

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
    images: bool = False  # some row has images (utils/data/images.py)
    tools: bool = False  # some row has tool calls, tool turns or tool schemas (utils/data/tool_rows.py)
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
    _check_weights(options.weights, len(paths), what)
    sources = [resolve(p, what, options.split if what == "train_data_path" else None) for p in paths]
    rows = Rows(paths, os.path.join(scratch(), f"{what}.arrow"), options=options)
    reader = RowReader(rows, kind, what)
    for source in sources:
        reader.read_source(source)
    reader.sink.close()
    if not len(rows):
        raise UserError(f"{rows.path}: --{what}: the settings drop every row ({'; '.join(rows.summary)}); expected "
                        "settings that keep at least one (a smaller --min_score_gap?).")
    return rows


def _check_weights(weights: list[float] | None, sources: int, what: str) -> None:
    """--data_weights: one weight per --train_data_path source (counted when reading those), none < 0, not all 0."""
    if weights is not None and what == "train_data_path" and len(weights) != sources:
        raise UserError(f"--data_weights has {len(weights)} values for {sources} --train_data_path "
                        "sources; expected one weight per source, in the same order.")
    if weights is not None and (any(w < 0 for w in weights) or not sum(weights) > 0):
        raise UserError(f"--data_weights {' '.join(map(str, weights))}: expected weights >= 0 that are not "
                        "all 0.")


# ------------------------------------------------------------------------------------------ the dataset
def to_dataset(rows: Rows, seed: int = 0, weights: list[float] | None = None, masks_with=None):
    """The datasets.Dataset TRL gets: the stored rows (memory-mapped), tokenized with assistant masks when
    `masks_with` is a tokenizer (utils/data/chat_masks.py), mixed to `weights`, unpaired for KTO."""
    from datasets import Dataset

    dataset = Dataset.from_file(rows.arrow)
    if rows.tools:
        from utils.data.tool_rows import as_dataset

        dataset = as_dataset(dataset)
    if rows.images:
        from utils.data.images import as_parts

        dataset = as_parts(dataset)
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
            assistant_only_loss: bool | None = False, processor=None):
    """(Rows, datasets.Dataset): read, convert and check (unless `rows` already did with these options), say what was
    read, render and count every row with the tokenizer (utils/data/lengths.py), build the dataset (with our assistant
    masks where the template needs them: utils/data/chat_masks.py)."""
    if rows is None or rows.options != options:
        rows = check_rows(paths, kind, what, options)
    for line in rows.summary:
        _say(line)
    if tokenizer is not None:
        from utils.data.images import ProcessorText
        from utils.data.lengths import measure

        measure(rows, ProcessorText(processor) if processor is not None else tokenizer, what)
    from utils.data.chat_masks import wanted

    masks_with = tokenizer if rows.conversational and not rows.images and processor is None and \
        wanted(assistant_only_loss, rows.columns, tokenizer) else None
    return rows, to_dataset(rows, seed, options.weights if what == "train_data_path" else None, masks_with)


def train_and_eval(common, method, tokenizer, rows: dict, config=None, processor=None):
    """(train, eval or None) for main_train, from --train_data_path, --eval_data_path or --eval_split; `rows` holds
    what the early checks read and gets what is read here. `method`: its data kind (`method.data`); `config`: its
    seed and `assistant_only_loss` (None: on for `messages` rows)."""
    kind, seed = method.data, getattr(config, "seed", 0)
    assistant_only_loss = getattr(config, "assistant_only_loss", False)
    datasets = {}
    for what in ("train_data_path", "eval_data_path"):
        if getattr(common, what):
            rows[what], datasets[what] = prepare(getattr(common, what), kind, tokenizer, what, DataOptions.of(common),
                                                 seed, rows.get(what), assistant_only_loss, processor)
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
                         options: DataOptions | None = None, seed: int = 0, processor=None):
    """The datasets.Dataset of `paths` for `kind`, every row checked (with a tokenizer: rendered and counted too;
    with a vision-language model's processor: their images too). Raises UserError 'FILE:LINE: what is wrong;
    expected ...' on the first problem."""
    return prepare(paths, kind, tokenizer, what, options or DataOptions(), seed, processor=processor)[1]


def _say(line: str) -> None:
    from utils.core.distributed import first_process

    if first_process():
        print(line, flush=True)
