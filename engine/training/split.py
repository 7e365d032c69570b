"""The held-out split of aflw_train: every 20th crop (954 of 19,080), which no recipe trains on.

It is the reference split CPRFA's vertex selection and HS-U-Net already kept out of their training (defined here
once; engine/methods/cprfa reads it through ``held_out_rows``); the visibility benchmark
(``python main.py visibility``) measures the methods against the annotators' visibility flags on it, so every
recipe excludes it (``exclude_held_out``, applied by the harness to whatever dataset a recipe makes). Runs trained
before this rule saw these crops (all recipes but CPRFA's HS-U-Net): the weights shipped then are unchanged, and
their numbers on this split are flattered by it; only future training runs have the smaller training set.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from torch.utils.data import Dataset

HELD_OUT_STRIDE = 20


def held_out_rows(n: int, stride: int = HELD_OUT_STRIDE) -> np.ndarray:
    """Rows of the held-out split among the first ``n`` training crops: every ``stride``-th."""
    return np.arange(0, n, stride, dtype=np.int64)


def training_rows(n: int) -> np.ndarray:
    """Rows a recipe may train on among the first ``n`` training crops: all but the held-out split."""
    return np.setdiff1d(np.arange(n), held_out_rows(n))


class TrainingRows(Dataset):
    """``base`` (indexed by TrainingSet row) restricted to ``rows``; batched fetches are forwarded, so a batched
    AlignmentDataset still assembles whole batches (its items keep their TrainingSet row as ``index``)."""

    def __init__(self, base: Dataset, rows: np.ndarray) -> None:
        self.base, self.rows = base, np.asarray(rows, np.int64)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Any:
        return self.base[int(self.rows[i])]

    def __getitems__(self, indices: list[int]) -> Any:
        rows = [int(self.rows[i]) for i in indices]
        if hasattr(self.base, "__getitems__"):
            return self.base.__getitems__(rows)
        return [self.base[r] for r in rows]


def exclude_held_out(dataset: Dataset, n: int) -> Dataset:
    """``dataset`` over a TrainingSet of ``n`` crops without the held-out rows. A dataset that already lists its
    rows (``rows``, e.g. CPRFA's) must not contain any of them; one of ``n`` items is taken as indexed by row."""
    held = held_out_rows(n)
    rows = getattr(dataset, "rows", None)
    if rows is not None:
        overlap = np.intersect1d(np.asarray(rows), held)
        if len(overlap):
            raise ValueError(f"the recipe's dataset trains on {len(overlap)} held-out rows (engine/training/split.py)")
        return dataset
    if len(dataset) != n:
        raise ValueError(f"cannot exclude the held-out split from a dataset of {len(dataset)} items over {n} crops "
                         "(give it a ``rows`` attribute)")
    return TrainingRows(dataset, training_rows(n))
