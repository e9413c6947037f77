"""One decision rule everywhere: a sequence is anomalous when ``score >= threshold`` (logllm.metrics),
and one helper module for the baselines."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np

import logllm.baselines
from logllm.baselines.common import TorchClassifier, f1_threshold
from logllm.baselines.harness import RunFolderMethod
from logllm.metrics import best_f1_threshold, classification_metrics, predict, quantile_threshold


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
    t, f1 = best_f1_threshold(labels, scores)
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
    t = f1_threshold(scores, labels)
    f1 = classification_metrics(labels, scores, t)["f1"]
    assert f1 == max(classification_metrics(labels, scores, c)["f1"] for c in np.unique(scores))
    # thresholds from normal data only flag none of those data, including the highest score
    normal = np.array([0.1, 0.3, 0.3, 0.8])
    assert not predict(normal, quantile_threshold(normal, 1.0)).any()
    assert not predict(normal, f1_threshold(normal, np.zeros(4))).any()


def test_baselines_break_f1_ties_as_logllm_does():
    # cutting at 0.7 (one anomaly caught) and at 0.3 (two caught, two false alarms) both give F1 2/3
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.1])
    labels = np.array([1, 1, 0, 0, 0])
    assert best_f1_threshold(labels, scores) == (0.7, 2 / 3)  # the higher one: fewer false alarms
    assert f1_threshold(scores, labels) == 0.7
    assert f1_threshold(scores, np.array([1, 1, 0, 0, -1])) == 0.7  # unlabelled sequences are left out


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from logllm... import name` in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("logllm"):
            out += [(node.module, alias.name) for alias in node.names]
    return out


def test_each_baseline_module_holds_its_method_and_takes_helpers_from_common():
    folder = Path(logllm.baselines.__file__).parent
    shared = {"logllm.baselines.base", "logllm.baselines.common", "logllm.baselines.templates"}
    # The bench itself (its loop, its output files, its lazily computed inputs) may use its own modules.
    bench = {"harness", "outputs", "shared"}
    for path in sorted(folder.glob("*.py")):
        if path.stem in bench:
            shared_here = shared | {f"logllm.baselines.{m}" for m in bench}
        else:
            shared_here = shared
        for module, name in _imports(path):
            assert not name.startswith("_") and not any(p.startswith("_") for p in module.split(".")), \
                f"{path.name} imports the private {module}.{name}"
            if module.startswith("logllm.baselines.") and module not in shared_here:
                # a method may build on another method (LogAnomaly is DeepLog with other inputs), not on helpers in it
                assert (path.stem, module, name) in {("loganomaly", "logllm.baselines.deeplog", "DeepLog"),
                                                     ("loganomaly", "logllm.baselines.deeplog", "DeepLogConfig")}, \
                    f"{path.name} imports {name} from {module}; shared helpers belong in baselines/common.py"
