"""DecisionTree: learns a simple pattern, and works on an HDFS slice."""

from __future__ import annotations

from pathlib import Path

from logllm.baselines.dt import DecisionTree

from .conftest import fit_and_measure, hdfs_inputs

PARAMS = {}  # small enough for a test; the bench uses the paper-sized defaults


def test_learns_the_synthetic_pattern(synthetic: dict) -> None:
    m = fit_and_measure(DecisionTree, PARAMS, synthetic["train"], synthetic["val"], synthetic["test"],
                        synthetic["test_labels"])
    assert m["f1"] >= 0.95 and m["roc_auc"] >= 0.99, m


def test_hdfs_slice(hdfs_prepared: Path) -> None:
    inp = hdfs_inputs(hdfs_prepared, DecisionTree.supervision)
    m = fit_and_measure(DecisionTree, PARAMS, inp.train, inp.val, inp.test, inp.test_labels)
    assert m["f1"] >= 0.6 and m["roc_auc"] >= 0.7, m
