"""KNN: learns a simple pattern, and works on an HDFS slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from logllm.baselines.base import MethodInput
from logllm.baselines.common import count_vectors
from logllm.baselines.knn import KNN

from .conftest import fit_and_measure, hdfs_inputs

PARAMS = {}  # small enough for a test; the bench uses the paper-sized defaults


def _split(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Normal: open, 2-6 reads, close; anomalous: the reads fail (message 3) instead."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 4 == 0).astype(np.int8)
    seqs = [np.array([0, *([3 if y else int(rng.choice([1, 4]))] * int(rng.integers(2, 7))), 2]) for y in labels]
    return seqs, labels


def test_learns_the_synthetic_pattern(synthetic: dict) -> None:
    # KNN votes by Euclidean distance between raw counts, so its pattern is a change of counts
    # (the shared synthetic pattern, one extra message among 2-7 varying reads, is too faint for it).
    res = synthetic["resources"]
    tr, trl = _split(200, 0)
    te, tel = _split(80, 1)
    m = fit_and_measure(KNN, PARAMS, MethodInput(tr, res, trl), None, MethodInput(te, res), tel)
    assert m["f1"] == 1.0 and m["roc_auc"] == 1.0, m


def test_count_vectors(synthetic: dict) -> None:
    v = count_vectors(MethodInput([np.array([0, 1, 1, 2])], synthetic["resources"]))
    assert v.tolist() == [[0, 1, 2, 1, 0, 0]]  # template 0 = unknown, then one column per template


def test_hdfs_slice(hdfs_prepared: Path) -> None:
    inp = hdfs_inputs(hdfs_prepared, KNN.supervision)
    m = fit_and_measure(KNN, PARAMS, inp.train, inp.val, inp.test, inp.test_labels)
    assert m["f1"] >= 0.6 and m["roc_auc"] >= 0.7, m
