"""RAPID: finds sequences unlike every normal one, with and without a labeled validation split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from logllm.baselines.base import MethodInput
from logllm.baselines.rapid import RAPID

from .conftest import fit_and_measure, hdfs_inputs


def test_learns_the_synthetic_pattern(synthetic: dict) -> None:
    m = fit_and_measure(RAPID, {}, synthetic["train_normal"], synthetic["val"], synthetic["test"],
                        synthetic["test_labels"])
    assert m["f1"] >= 0.95 and m["roc_auc"] >= 0.99, m


def test_threshold_from_normal_data_alone(synthetic: dict) -> None:
    m = fit_and_measure(RAPID, {"quantile": 1.0}, synthetic["train_normal"], None, synthetic["test"],
                        synthetic["test_labels"])
    assert m["recall"] == 1.0 and m["precision"] >= 0.9, m


def test_core_set_and_exact_matches(synthetic: dict) -> None:
    method = RAPID(seed=0, core_set=3)
    method.fit(synthetic["train_normal"], synthetic["val"])
    assert len(method.db_toks) == 3
    # a sequence identical to a database entry scores 0 with the pure token distance
    exact = RAPID(seed=0, only_tokens=True)
    exact.fit(synthetic["train_normal"], None)
    res = synthetic["resources"]
    s = exact.score(MethodInput([synthetic["train_normal"].messages[0], np.array([0, 3, 2])], res))
    assert s[0] < 1e-5 < s[1]


def test_hdfs_slice(hdfs_prepared: Path) -> None:
    inp = hdfs_inputs(hdfs_prepared, RAPID.supervision)
    m = fit_and_measure(RAPID, {}, inp.train, inp.val, inp.test, inp.test_labels)
    assert m["f1"] >= 0.6 and m["roc_auc"] >= 0.7, m
