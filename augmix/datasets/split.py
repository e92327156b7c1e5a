"""Holding a validation set out of the training split, reproducibly.

Model selection (Tune, early stopping) must never look at the test split, so the validation rows
come out of train, chosen by a seed so that every worker and every rerun agrees on them.
"""
from __future__ import annotations

import numpy as np

from augmix.errors import InputError


def train_validation_split(
    n: int, fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each sorted, disjoint, covering range(n).

    With labels, each class gives round(fraction * its count) rows, so class frequencies are the
    same in both parts (stratified); without, round(fraction * n) rows are drawn uniformly.
    """
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation fraction {fraction!r} out of range; allowed: 0 <= fraction < 1")
    if n < 0:
        raise InputError(f"row count {n} is negative")
    if labels is not None and len(labels) != n:
        raise InputError(f"{len(labels)} labels for {n} rows")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    order = rng.permutation(n)
    if labels is None:
        held_out = order[: int(round(fraction * n))]
    else:
        classes, class_of_row = np.unique(np.asarray(labels)[order], return_inverse=True)
        grouped = np.argsort(class_of_row, kind="stable")  # rows grouped by class, random within
        counts = np.bincount(class_of_row, minlength=len(classes))
        class_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rank_in_class = np.arange(n) - np.repeat(class_start, counts)
        quota = np.round(fraction * counts).astype(np.int64)
        chosen = rank_in_class < np.repeat(quota, counts)
        held_out = order[grouped[chosen]]
    is_validation = np.zeros(n, dtype=bool)
    is_validation[held_out] = True
    return np.flatnonzero(~is_validation), np.flatnonzero(is_validation)
