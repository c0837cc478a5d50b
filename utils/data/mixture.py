"""Several data sources mixed to `--data_weights`: which stored rows a training epoch sees."""

from __future__ import annotations


def mix(counts: list[int], weights: list[float], seed: int, paths: list[str]) -> tuple[list[int], list[str]]:
    """Indices into the sources stored one after the other, so that source i makes up weights[i] / sum(weights) of
    the mixture; the mixture has as many rows as the sources together. A source asked for fewer rows than it has
    gives a random subset (no row twice); one asked for more gives every row, each as often as it fits, plus a
    random subset (its rows repeat: said in the notes). Shuffled; the same seed gives the same mixture."""
    import numpy as np

    rng = np.random.default_rng(seed)
    total, norm = sum(counts), sum(weights)
    wanted = [round(w / norm * total) for w in weights]
    wanted[max(range(len(wanted)), key=lambda i: weights[i])] += total - sum(wanted)  # rounding lands on the largest
    indices, notes, offset = [], [], 0
    for n, k, w, path in zip(counts, wanted, weights, paths):
        if n == 0 and k > 0:
            from utils.core.errors import UserError

            raise UserError(f"{path}: --data_weights gives it weight {w:g} but it has no row left; expected weight 0 "
                            "for it, or rows it keeps.")
        full, rest = divmod(k, n) if n else (0, 0)
        picked = np.concatenate([np.tile(np.arange(n), full), rng.choice(n, size=rest, replace=False)]) if n else []
        indices.append(np.asarray(picked, dtype=np.int64) + offset)
        offset += n
        share = f"{w / norm:.0%} of the {total:,}-row mixture"
        if k > n:
            notes.append(f"{path}: weight {w:g} = {share}: {k:,} rows from its {n:,}, so its rows repeat "
                         f"(each about {k / n:.1f} times)")
        elif k < n:
            notes.append(f"{path}: weight {w:g} = {share}: {k:,} of its {n:,} rows, sampled with seed {seed}")
        else:
            notes.append(f"{path}: weight {w:g} = {share}: all its {n:,} rows")
    order = np.concatenate(indices)
    rng.shuffle(order)
    return order.tolist(), notes
