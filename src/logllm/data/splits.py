"""Splitting sequences into train / val / test.

* random (sessions): a seeded permutation; the test share is ``1 - train_ratio``; validation is a
  random ``val_ratio`` share of the training part. Rows keep log order inside each split.
* chronological (windows): by line position; see :func:`chronological_bounds`.
"""

from __future__ import annotations

import numpy as np
import numpy.random  # noqa: F401  (numpy imports it on first use otherwise, inside the run)


def random_split(n: int, train_ratio: float, val_ratio: float, seed: int) -> dict[str, np.ndarray]:
    """Indices ``0..n-1`` per split (sorted), from ``numpy.random.default_rng(seed)``."""
    perm = np.random.default_rng(seed).permutation(n)
    n_train = int(n * train_ratio)
    n_val = int(round(n_train * val_ratio))
    out = {"train": np.sort(perm[n_val:n_train]), "test": np.sort(perm[n_train:])}
    if val_ratio > 0:
        out["val"] = np.sort(perm[:n_val])
    return out


def chronological_bounds(n: int, train_ratio: float, val_ratio: float) -> dict[str, tuple[int, int]]:
    """Half-open position ranges per split: train first, validation carved from the end of train."""
    n_train = int(n * train_ratio)
    n_val = int(round(n_train * val_ratio))
    out = {"train": (0, n_train - n_val), "test": (n_train, n)}
    if val_ratio > 0:
        out["val"] = (n_train - n_val, n_train)
    return out
