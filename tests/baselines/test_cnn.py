"""CNN: learns a simple pattern, and works on an HDFS slice."""

from __future__ import annotations

from pathlib import Path

from logllm.baselines.cnn import CNN

from .conftest import assert_batch_independent, fit_and_measure, hdfs_inputs

PARAMS = {"width": 16, "filters": 8, "epochs": 15, "lr": 1e-2}  # small enough for a test; the bench uses the paper-sized defaults


def test_learns_the_synthetic_pattern(synthetic: dict) -> None:
    m = fit_and_measure(CNN, PARAMS, synthetic["train"], synthetic["val"], synthetic["test"],
                        synthetic["test_labels"])
    assert m["f1"] >= 0.95 and m["roc_auc"] >= 0.99, m


def test_seeded_and_batch_independent(synthetic: dict) -> None:
    a, b = CNN(seed=3, **PARAMS), CNN(seed=3, **PARAMS)
    a.fit(synthetic["train"], synthetic["val"])
    b.fit(synthetic["train"], synthetic["val"])
    assert (a.score(synthetic["test"]) == b.score(synthetic["test"])).all()
    assert_batch_independent(a, synthetic["test"])


def test_hdfs_slice(hdfs_prepared: Path) -> None:
    inp = hdfs_inputs(hdfs_prepared, CNN.supervision)
    m = fit_and_measure(CNN, PARAMS, inp.train, inp.val, inp.test, inp.test_labels)
    assert m["f1"] >= 0.6 and m["roc_auc"] >= 0.7, m
