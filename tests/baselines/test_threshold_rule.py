"""One decision rule everywhere: a sequence is anomalous when ``score >= threshold`` (logllm.evaluate.predict)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from logllm.baselines._common import TorchClassifier, best_f1_threshold, normal_quantile_threshold
from logllm.baselines.harness import RunFolderMethod
from logllm.evaluate import choose_threshold, classification_metrics, predict


def test_a_score_equal_to_the_threshold_is_anomalous():
    assert predict([0.2, 0.5, 0.7], 0.5).tolist() == [False, True, True]
    assert predict(np.array([0.5], dtype=np.float32), 0.5).tolist() == [True]
    metrics = classification_metrics(np.array([1, 0]), np.array([0.5, 0.4]), 0.5)
    assert (metrics["tp"], metrics["fp"], metrics["fn"], metrics["tn"]) == (1, 0, 0, 1)


def test_bench_logllm_row_predicts_with_the_rule_its_threshold_was_chosen_for():
    method = RunFolderMethod(seed=0, run="RUN")
    method.model = SimpleNamespace(threshold=0.5)
    method.score = lambda data: np.array([0.4, 0.5, 0.6])
    assert method.predict(None).tolist() == [False, True, True]
    # the threshold LogLLM's training chooses, applied by the bench, gives the F1 it was chosen for
    labels, scores = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.3, 0.3, 0.8, 0.9, 0.95])
    t, f1 = choose_threshold(labels, scores)
    method.model.threshold = t
    method.score = lambda data: scores
    pred = method.predict(None)
    assert classification_metrics(labels, scores, t)["f1"] == f1
    assert 2 * (pred & (labels == 1)).sum() / (pred.sum() + labels.sum()) == f1


def test_baseline_thresholds_are_chosen_for_the_same_rule():
    classifier = SimpleNamespace(score=lambda data: np.array([0.4, 0.5, 0.6]), threshold=0.5)
    assert TorchClassifier.predict(classifier, None).tolist() == [False, True, True]
    scores = np.array([0.1, 0.2, 0.2, 0.7, 0.9])
    labels = np.array([0, 0, 1, 1, 1])
    t = best_f1_threshold(scores, labels)
    f1 = classification_metrics(labels, scores, t)["f1"]
    assert f1 == max(classification_metrics(labels, scores, c)["f1"] for c in np.unique(scores))
    # thresholds from normal data only flag none of those data, including the highest score
    normal = np.array([0.1, 0.3, 0.3, 0.8])
    assert not predict(normal, normal_quantile_threshold(normal, 1.0)).any()
    assert not predict(normal, best_f1_threshold(normal, np.zeros(4))).any()
