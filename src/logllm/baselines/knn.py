"""KNN on template-count vectors.

Yu, Ma, Zhang, Liu, Chen, Li, Jiang, Zhang, "Deep Learning or Classical Machine Learning? An
Empirical Study on Log-Based Anomaly Detection", ICSE 2024. The study's classical reference: each
sequence becomes its vector of template counts (the event-count matrix; template 0 counts messages
unseen in training), and a k-nearest-neighbour classifier votes. scikit-learn's defaults as in the
study (k = 5, uniform weights, Euclidean distance).

Score: the share of anomalous neighbours; prediction: the classifier's majority vote.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from logllm.baselines._common import param
from logllm.baselines.base import Method, MethodInput, register


def count_vectors(inp: MethodInput) -> np.ndarray:
    """(n_sequences, n_templates) template counts; template 0 counts messages unknown to training."""
    out = np.zeros((len(inp), inp.resources.n_templates), dtype=np.float64)
    for i, t in enumerate(inp.templates):
        out[i] = np.bincount(t, minlength=inp.resources.n_templates)
    return out


class CountClassifier(Method):
    """A scikit-learn classifier on template counts (Yu et al., ICSE'24); subclasses set ``self.model``
    in ``fit``. Score: the classifier's probability of the anomalous class; prediction: its class."""

    supervision = "supervised"
    uses_vectors: ClassVar[bool] = False  # template counts/ids only: the harness skips the encoder
    paper: ClassVar[str] = "Yu et al., ICSE 2024 (Deep Learning or Classical Machine Learning?)"
    model: Any

    def score(self, data: MethodInput) -> np.ndarray:
        proba = self.model.predict_proba(count_vectors(data))
        classes = list(self.model.classes_)
        return proba[:, classes.index(1)].astype(np.float64) if 1 in classes else np.zeros(len(data))

    def predict(self, data: MethodInput) -> np.ndarray:
        return self.model.predict(count_vectors(data)).astype(bool)


@register
class KNN(CountClassifier):
    name: ClassVar[str] = "knn"

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        from sklearn.neighbors import KNeighborsClassifier

        k = param(self.params, "k", 5, int)
        self.model = KNeighborsClassifier(n_neighbors=min(k, len(train)))
        self.model.fit(count_vectors(train), np.asarray(train.labels, dtype=np.int64))
