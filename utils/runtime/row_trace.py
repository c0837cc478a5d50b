"""From a batch the trainer built back to the rows of the data file: the NaN guard names the rows of a batch whose
loss is not finite by their FILE:LINE (utils/runtime/non_finite.py)."""

from __future__ import annotations

from collections.abc import Mapping


def examples_of(recent, inputs):
    """The rows (as the collator got them) that made `inputs`, or None when no recent batch matches."""
    import torch

    for examples, batch in reversed(recent):
        if not isinstance(batch, Mapping):  # e.g. online RL: the collator hands the rows on as they are
            continue
        keys = [k for k in batch.keys() if torch.is_tensor(batch[k])]
        if keys and isinstance(inputs, Mapping) and all(
                torch.is_tensor(inputs.get(k)) and inputs[k].shape == batch[k].shape
                and torch.equal(inputs[k].detach().cpu(), batch[k].detach().cpu()) for k in keys):
            return list(examples)
    return None


def name_rows(trainer, origin, examples, which: list[int]) -> list[str]:
    """FILE:LINE of each row `which` of the failing batch (found by its tokens in the trainer's dataset), or an
    excerpt of its text when it cannot be traced."""
    where = _locate(trainer, origin, [examples[i] for i in which])
    names = []
    for i, found in zip(which, where):
        if found is None:
            ids = next((v for k, v in examples[i].items() if k.endswith("input_ids") or k == "prompt_ids"), None)
            text = trainer.processing_class.decode(list(ids)[:40]) if ids is not None else str(examples[i])
            found = repr(text[:80] + ("..." if len(text) > 80 else ""))
        names.append(found)
    return names


def _locate(trainer, origin, examples) -> list[str | None]:
    """FILE:LINE of each example, found by its token ids among the trainer's dataset rows (None: not found)."""
    from datasets import Dataset

    data = getattr(trainer, "train_dataset", None)
    if (origin is None or not isinstance(data, Dataset) or not examples
            or len(data) != origin.size):  # rows dropped or packed on the way: indices differ
        return [None] * len(examples)
    keys = [k for k, v in examples[0].items() if k in data.column_names and _ids(v) is not None]
    if not keys:
        return [None] * len(examples)
    wanted = {}
    for j, ex in enumerate(examples):
        wanted.setdefault(tuple(_ids(ex[k]) for k in keys), []).append(j)
    found: list[str | None] = [None] * len(examples)
    start = 0
    for chunk in data.select_columns(keys).iter(batch_size=1000):
        for offset, values in enumerate(zip(*(chunk[k] for k in keys))):
            for j in wanted.pop(tuple(_ids(v) for v in values), []):
                found[j] = origin(start + offset)
        start += len(chunk[keys[0]])
        if not wanted:
            break
    return found


def _ids(value):
    """A row's token ids as a tuple (lists of ints, or nested), or None for any other value."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def row_origin(dataset, rows):
    """i -> FILE:LINE of row i of `dataset` (built by utils.data.loading from `rows`), or None when the rows were reshaped
    (KTO's unpaired rows)."""
    if rows is None or rows.unpair:
        return None
    indices = dataset._indices.column(0) if getattr(dataset, "_indices", None) is not None else None
    size = len(dataset)

    def origin(i: int) -> str | None:
        if i >= size:
            return None
        return rows.where(indices[i].as_py() if indices is not None else i)

    origin.size = size
    return origin
