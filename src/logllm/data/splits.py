"""Splitting sequences into train / val / test.

* random (sessions): a seeded permutation; the test share is ``1 - train_ratio``; validation is a
  random ``val_ratio`` share of the training part. Rows keep log order inside each split.
* chronological (windows): by line position; see :func:`chronological_bounds`.
* by group (``--split-by file|dir``): whole files or folders go to one split; sequences that span
  several join them into one group (:func:`connected_groups`, :func:`group_split`).
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.random  # noqa: F401  (numpy imports it on first use otherwise, inside the run)
import polars as pl

log = logging.getLogger(__name__)


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


def connected_groups(keys: list[np.ndarray], n_keys: int) -> tuple[np.ndarray, int]:
    """The group of each sequence when a split keeps whole files or folders: ``keys[i]`` holds the
    file or folder numbers (``0..n_keys-1``) of sequence i's lines; two keys that one sequence spans
    are one group (union-find), so a group is never cut by a split. Returns ``(group of each sequence,
    numbered 0.. in order of first appearance, number of groups)``."""
    parent = np.arange(n_keys, dtype=np.int64)

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = int(parent[k])
        return k

    for ks in keys:
        if len(ks) > 1:
            first = root(int(ks[0]))
            for k in ks[1:]:
                other = root(int(k))
                if other != first:
                    parent[max(first, other)] = min(first, other)
                    first = min(first, other)
    roots = np.fromiter((root(int(ks[0])) for ks in keys), dtype=np.int64, count=len(keys))
    _, first_seen, inverse = np.unique(roots, return_index=True, return_inverse=True)
    rank = np.empty(len(first_seen), dtype=np.int64)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(len(first_seen))
    return rank[inverse], len(first_seen)


def group_split(groups: np.ndarray, n_groups: int, mode: str, train_ratio: float, val_ratio: float,
                seed: int) -> dict[str, np.ndarray]:
    """Sequence indices per split where whole groups (numbered in order of first appearance) go to
    one split: the groups are split as sequences would be (``random``: :func:`random_split` of the
    groups; ``chronological``: :func:`chronological_bounds` over them, in order), and each sequence
    follows its group. The ratios count groups, not sequences or lines."""
    if mode == "random":
        parts = random_split(n_groups, train_ratio, val_ratio, seed)
    else:
        parts = {k: np.arange(lo, hi) for k, (lo, hi) in chronological_bounds(n_groups, train_ratio, val_ratio).items()}
    split_of = np.empty(n_groups, dtype=np.int64)
    names = list(parts)
    for i, name in enumerate(names):
        split_of[parts[name]] = i
    member = split_of[groups]
    return {name: np.flatnonzero(member == i) for i, name in enumerate(names)}


def split_sequences(seqs: pl.DataFrame, mode: str, split_by: str, train_ratio: float, val_ratio: float,
                    seed: int, group_of_file: np.ndarray | None = None) -> tuple[dict[str, pl.DataFrame], dict]:
    """A sequence table (in log order) split into train / val / test, and what the manifest records.

    ``split_by="sequence"``: each sequence on its own (``random``: :func:`random_split`;
    ``chronological``: :func:`chronological_bounds` over the sequences in order). ``"file"`` or
    ``"dir"``: ``group_of_file[i]`` numbers the file or folder of input file i; every sequence of a
    group goes to one split (:func:`connected_groups`, :func:`group_split`)."""
    if split_by == "sequence" or group_of_file is None:
        if mode == "random":
            idx = random_split(len(seqs), train_ratio, val_ratio, seed)
            return {k: seqs[v] for k, v in idx.items()}, {}
        bounds = chronological_bounds(len(seqs), train_ratio, val_ratio)
        return {k: seqs[lo:hi] for k, (lo, hi) in bounds.items()}, {}
    files = seqs["file_index"].list.unique(maintain_order=True).to_list()
    keys = [np.unique(group_of_file[np.asarray(f, dtype=np.int64)]) for f in files]
    used = len(np.unique(np.concatenate(keys))) if keys else 0
    groups, n_groups = connected_groups(keys, int(group_of_file.max()) + 1 if len(group_of_file) else 0)
    idx = group_split(groups, n_groups, mode, train_ratio, val_ratio, seed)
    splits = {k: seqs[v] for k, v in idx.items()}
    per_split = {k: len(np.unique(groups[v])) for k, v in idx.items()}
    if used > n_groups:
        log.warning("--split-by %s: %d %ss make %d groups: sequences that span several join them, so that "
                    "none is in two splits", split_by, used, split_by, n_groups)
    log.info("--split-by %s (%s): %d groups of %d sequences; groups per split: %s", split_by, mode, n_groups,
             len(seqs), ", ".join(f"{k} {n}" for k, n in per_split.items()))
    return splits, {"split_groups": {"by": split_by, split_by + "s": used, "groups": n_groups,
                                     "per_split": per_split}}
