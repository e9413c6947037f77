"""logllm.metrics: the decision rule, the metrics and the threshold searches every part of logllm uses."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import numpy as np
import pytest

import logllm
from logllm.metrics import best_f1_threshold, classification_metrics, predict, quantile_threshold


def test_metrics_on_a_hand_made_example():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.1, 0.05])
    m = classification_metrics(labels, scores, threshold=0.5)
    # predicted anomalous: 0.9, 0.8 (true), 0.7 (false); missed: 0.3
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(6 / 8)
    # ROC-AUC: of the 15 (anomalous, normal) pairs, the anomaly scores higher in 14 (0.3 < 0.7)
    assert m["roc_auc"] == pytest.approx(14 / 15)
    # average precision: ranks 1, 2 (hits), 3 miss, 4 (0.3) hit -> (1 + 1 + 3/4) / 3
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert classification_metrics(labels, scores, threshold=0.9)["tp"] == 1  # >= threshold is anomalous


def test_metrics_of_a_methods_own_predictions():
    # a classifier's vote need not be a threshold on its scores: counts follow pred, areas follow scores
    labels = np.array([1, 1, 0, 0, 0])
    m = classification_metrics(labels, np.array([0.9, 0.2, 0.8, 0.1, 0.3]), pred=np.array([1, 0, 1, 0, 0]))
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 2) and m["f1"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(4 / 6)
    assert classification_metrics(labels, None, pred=np.ones(5))["roc_auc"] is None
    with pytest.raises(ValueError, match="threshold"):
        classification_metrics(labels, np.zeros(5))


def test_metrics_with_one_class_no_predictions_or_bad_input():
    m = classification_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 1.0
    assert classification_metrics(np.array([0, 1]), np.array([0.1, np.nan]), 0.5)["roc_auc"] is None
    with pytest.raises(ValueError, match="-1"):
        classification_metrics(np.array([0, 1, -1]), np.array([0.1, 0.2, 0.3]), 0.5)
    with pytest.raises(ValueError, match="same length"):
        classification_metrics(np.array([0, 1]), np.array([0.1, 0.2, 0.3]), 0.5)


def test_best_f1_threshold_cuts_between_scores():
    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.95, 0.9, 0.8, 0.6, 0.3, 0.1])
    threshold, f1 = best_f1_threshold(labels, scores)
    # cutting between 0.6 and 0.3 catches all three anomalies with one false alarm: F1 = 6/7
    assert threshold == pytest.approx(0.45) and f1 == pytest.approx(6 / 7)
    assert classification_metrics(labels, scores, threshold)["f1"] == f1
    # only anomalies: everything is flagged, just below the lowest score
    threshold, f1 = best_f1_threshold(np.ones(3), np.array([0.2, 0.5, 0.9]))
    assert 0.2 - 1e-9 < threshold < 0.2 and f1 == 1.0
    with pytest.raises(ValueError, match="no anomalous"):
        best_f1_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3]))


def test_best_f1_threshold_breaks_ties_towards_fewer_false_alarms():
    # cutting at 0.7 (one anomaly caught) and at 0.3 (two caught, two false alarms) both give F1 2/3
    labels = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    threshold, f1 = best_f1_threshold(labels, scores)
    assert threshold == pytest.approx(0.7) and f1 == pytest.approx(2 / 3)


def test_best_f1_threshold_agrees_with_an_exhaustive_search():
    rng = np.random.default_rng(0)
    for n, kind in itertools.product((2, 5, 30), ("continuous", "discrete")):
        for _ in range(30):
            labels = rng.integers(0, 2, n)
            labels[0] = 1
            scores = rng.random(n) if kind == "continuous" else rng.integers(0, 4, n) / 3
            distinct = np.unique(scores)
            cuts = np.concatenate([[distinct[0] - 1e-12 if distinct[0] > 0 else 0.0],
                                   (distinct[:-1] + distinct[1:]) / 2])
            f1s = [classification_metrics(labels, scores, c)["f1"] for c in cuts]
            best = max(f1s)
            expected = max(c for c, f in zip(cuts, f1s) if f >= best - 1e-12)  # ties: the higher cut
            assert best_f1_threshold(labels, scores) == (expected, best)


def test_quantile_threshold_leaves_the_quantile_normal():
    normal = np.array([0.1, 0.3, 0.3, 0.8])
    assert not predict(normal, quantile_threshold(normal, 1.0)).any()
    assert predict(normal, quantile_threshold(normal, 0.5)).tolist() == [False, False, False, True]
    assert quantile_threshold(np.zeros(0), 0.99) == 0.0


def test_the_best_f1_search_is_stated_once():
    src = Path(logllm.__file__).parent
    found = [f"{path.relative_to(src)}:{node.name}"
             for path in sorted(src.rglob("*.py"))
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.FunctionDef) and "best_f1" in node.name]
    assert found == ["metrics.py:best_f1_threshold"]
