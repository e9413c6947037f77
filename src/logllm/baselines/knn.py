"""KNN on template-count vectors.

Yu, Ma, Zhang, Liu, Chen, Li, Jiang, Zhang, "Deep Learning or Classical Machine Learning? An
Empirical Study on Log-Based Anomaly Detection", ICSE 2024. The study's classical reference: each
sequence becomes its vector of template counts (the event-count matrix; template 0 counts messages
unseen in training), and a k-nearest-neighbour classifier votes. scikit-learn's defaults as in the
study (k = 5, uniform weights, Euclidean distance).

Score: the share of anomalous neighbours; prediction: the classifier's majority vote.

Saved state: the training count vectors and labels (all a nearest-neighbour classifier holds); loading
fits the same classifier on them again.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from logllm.baselines.base import MethodInput, param, register
from logllm.baselines.common import CountClassifier, count_vectors


@register
class KNN(CountClassifier):
    name: ClassVar[str] = "knn"
    param_names: ClassVar[frozenset[str] | None] = frozenset({"k"})

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        k = param(self.params, "k", 5, int)
        self._fit_arrays(count_vectors(train), np.asarray(train.labels, dtype=np.int64), min(k, len(train)))

    def _fit_arrays(self, x: np.ndarray, y: np.ndarray, k: int) -> None:
        from sklearn.neighbors import KNeighborsClassifier

        self.x, self.y, self.k = x, y, k
        self.model = KNeighborsClassifier(n_neighbors=k)
        self.model.fit(x, y)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"x": self.x, "y": self.y}, {"k": self.k}

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self._fit_arrays(np.asarray(arrays["x"]), np.asarray(arrays["y"], dtype=np.int64), int(info["k"]))
