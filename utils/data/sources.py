"""Where rows come from: a file, a folder of shards, a `datasets.save_to_disk` folder, or a hub dataset id already
in the local Hugging Face cache; and the rows of each, one at a time with their location (`FILE:LINE`,
`FILE:row N` for parquet and saved datasets, `FILE:record N` for a JSON list), never the whole file at once
(except a JSON list, which has to be parsed whole: use JSON Lines for large data)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from utils.core.errors import UserError
from utils.data.schemas import one_line

EXTENSIONS = (".jsonl", ".json", ".parquet")
EXPECTED = ("a .jsonl, .json or .parquet file, a folder of such files (shards), a folder written by "
            "datasets.save_to_disk, or a hub dataset id already in the local Hugging Face cache")
# Split names as dataset hubs spell them in file and folder names: data/train-00000-of-00003.parquet, test.jsonl.
_SPLIT = re.compile(r"(?:^|[/_.-])(train|training|test|testing|validation|valid|val|dev|eval)(?=[/_.-]|$)")
EVAL_SPLITS = ("validation", "valid", "val", "dev", "eval", "test", "testing")
BATCH = 10_000


@dataclass
class Source:
    """One --train_data_path entry: its files (one for a file), or a saved dataset folder."""

    path: str  # as the user wrote it
    files: list[str]  # real paths, read in this order
    saved: bool = False  # a save_to_disk folder (files == [that folder])
    note: str = ""  # what was resolved: the split taken, the cache snapshot
    split: str | None = None  # --train_split, for a saved DatasetDict


def resolve(path: str, what: str, split: str | None = None) -> Source:
    real = os.path.expanduser(path)
    if not os.path.exists(real):
        return _from_hub_cache(path, what, split)
    if os.path.isfile(real):
        ext = os.path.splitext(real)[1].lower()
        if ext not in EXTENSIONS:
            raise UserError(f"{path}: --{what} has an unsupported file type {ext or '(no extension)'!r}; expected "
                            f"{EXPECTED}.")
        return Source(path, [real])
    if any(os.path.isfile(os.path.join(real, f)) for f in ("state.json", "dataset_dict.json")):
        return Source(path, [real], saved=True, split=split)
    return _folder(path, real, what, split)


def _folder(path: str, real: str, what: str, split: str | None, note: str = "") -> Source:
    files = []
    for root, dirs, names in os.walk(real):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(root, n) for n in sorted(names)
                  if n.lower().endswith(EXTENSIONS) and not n.startswith(".")]
    if not files:
        raise UserError(f"{path}: --{what} is a folder with no .jsonl, .json or .parquet file in it; expected {EXPECTED}.")
    by_split: dict[str | None, list[str]] = {}
    for f in files:
        m = _SPLIT.search(os.path.relpath(f, real).replace(os.sep, "/").lower())
        by_split.setdefault(m.group(1) if m else None, []).append(f)
    names = sorted(s for s in by_split if s)
    if split and split not in by_split:
        raise UserError(f"{path}: --{what} has no split {split!r} (--train_split); its files name the splits "
                        f"{', '.join(names) or '(none: every file is one split)'}; expected one of those.")
    if list(by_split) == [None]:
        return Source(path, files, note=note)
    if None in by_split and not split:
        unnamed = os.path.relpath(by_split[None][0], real)
        raise UserError(f"{path}: --{what} mixes files named for splits ({', '.join(names)}) with files named for "
                        f"none (e.g. {unnamed}); expected every file named for its split, or a folder of one split.")
    if not split:
        wanted = ["train", "training"] if what == "train_data_path" else list(EVAL_SPLITS)
        found = [s for s in wanted if s in by_split]
        if what == "train_data_path" and not found:
            raise UserError(f"{path}: --{what} holds the splits {', '.join(names)} and none is named train; expected "
                            "--train_split NAME to say which to train on.")
        if what != "train_data_path" and len(found) != 1:
            raise UserError(f"{path}: --{what} holds the splits {', '.join(names)}; expected exactly one evaluation "
                            f"split among {', '.join(EVAL_SPLITS)}, or give the files of one split.")
        split = found[0]
    return Source(path, by_split[split], note=(note + f"; split {split!r}").lstrip("; "))


def _from_hub_cache(path: str, what: str, split: str | None) -> Source:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", path):
        raise UserError(f"{path}: --{what} does not exist; expected {EXPECTED}.")
    from huggingface_hub import constants, snapshot_download

    try:
        folder = snapshot_download(path, repo_type="dataset", local_files_only=True)
    except Exception:  # not in the cache (LocalEntryNotFoundError), or a cache entry without a snapshot
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
        hint = ("this machine is offline (HF_HUB_OFFLINE)" if offline else
                "datasets are only taken from the cache here, never downloaded during a run")
        raise UserError(f"{path}: --{what} is neither a local path nor a dataset in the Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}), and {hint}; expected a "
                        f"local file or folder, or download it first (huggingface-cli download {path} --repo-type "
                        "dataset).") from None
    return _folder(path, folder, what, split, note=f"from the Hugging Face cache, {folder}")


# ---------------------------------------------------------------------------------------------- reading
def iter_rows(source: Source, what: str, files: list[str] | None = None):
    """Yield (file, style, number, row) for every row of every file of the source (or of `files`), in order: the row
    is at `FILE:{style}{number}`, style "" (a line), "row " (parquet, saved datasets) or "record " (a JSON list)."""
    for real in source.files if files is None else files:
        if source.saved:
            yield from _saved(source.path, real, what, source.split)
            continue
        ext = os.path.splitext(real)[1].lower()
        shown = shown_as(source, real)
        if os.path.getsize(real) == 0:
            raise UserError(f"{shown}: --{what} is an empty file; expected at least one example.")
        if ext == ".parquet":
            yield from _parquet(shown, real, what)
        else:
            yield from _json(shown, real, what, ext)


def shown_as(source: Source, real: str) -> str:
    """A file as messages name it: as the user wrote it, or the shard's path."""
    return source.path if real == os.path.expanduser(source.path) else real


def _json(shown: str, real: str, what: str, ext: str):
    with open(real, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if ext == ".json" and head.startswith(b"["):  # a JSON list: parsed whole, rows located by their index
        try:
            with open(real, encoding="utf-8-sig") as f:
                data = json.load(f)
        except UnicodeDecodeError as e:
            raise UserError(f"{shown}: --{what} is not UTF-8 text ({e.reason} at byte {e.start}); expected a UTF-8 "
                            "JSON file.") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{shown}:{e.lineno}: malformed JSON ({e.msg}, column {e.colno}); expected a valid JSON "
                            "list of objects.") from None
        for i, row in enumerate(data, 1):
            yield shown, "record ", i, row
        return
    decode = json.JSONDecoder().decode
    with open(real, "rb") as f:
        for lineno, line in enumerate(f, 1):  # blank lines are skipped but still counted
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):  # a byte-order mark from some Windows editors
                line = line[3:]
            if not line.strip():
                continue
            try:
                yield shown, "", lineno, decode(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise UserError(f"{shown}:{lineno}: not UTF-8 text ({e.reason}); expected a UTF-8 JSON file.") from None
            except json.JSONDecodeError as e:
                hint = " (a JSON object spread over several lines? JSON Lines needs one per line)" \
                    if line.strip() in (b"{", b"[") else ""
                raise UserError(f"{shown}:{lineno}: malformed JSON ({e.msg}, column {e.colno}){hint}; expected one "
                                "complete JSON object per line.") from None


def _parquet(shown: str, real: str, what: str):
    import pyarrow.parquet as pq

    try:
        batches = pq.ParquetFile(real).iter_batches(batch_size=BATCH)
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield shown, "row ", n, row
    except UserError:
        raise
    except Exception as e:  # pyarrow's ArrowInvalid and OSError on a file that is not parquet
        raise UserError(f"{shown}: --{what} could not be read as parquet ({one_line(e)}); expected a parquet file "
                        "with one example per row.") from None


def _saved(shown: str, real: str, what: str, split: str | None):
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(real)
    except Exception as e:
        raise UserError(f"{shown}: --{what} is a folder but not one written by datasets.save_to_disk "
                        f"({one_line(e)}); expected {EXPECTED}.") from None
    if isinstance(dataset, DatasetDict):
        name = split or "train"
        if name not in dataset:
            raise UserError(f"{shown}: --{what} holds a DatasetDict with splits {sorted(dataset)} and no {name!r} "
                            "split; expected a Dataset, or a DatasetDict with that split (--train_split NAME).")
        dataset = dataset[name]
    n = 0
    for start in range(0, len(dataset), BATCH):
        for row in dataset.select(range(start, min(start + BATCH, len(dataset)))).to_list():
            n += 1
            yield shown, "row ", n, row
