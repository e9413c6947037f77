"""KNN on template-count vectors.

Yu, Ma, Zhang, Liu, Chen, Li, Jiang, Zhang, "Deep Learning or Classical Machine Learning? An
Empirical Study on Log-Based Anomaly Detection", ICSE 2024. The study's classical reference: each
sequence becomes its vector of template counts (the event-count matrix; template 0 counts messages
unseen in training), and a k-nearest-neighbour classifier votes. scikit-learn's defaults as in the
study (k = 5, uniform weights, Euclidean distance).

Score: the share of anomalous neighbours; prediction: the classifier's majority vote.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from logllm.baselines.base import MethodInput, register
from logllm.baselines.common import CountClassifier, count_vectors, param


@register
class KNN(CountClassifier):
    name: ClassVar[str] = "knn"

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        from sklearn.neighbors import KNeighborsClassifier

        k = param(self.params, "k", 5, int)
        self.model = KNeighborsClassifier(n_neighbors=min(k, len(train)))
        self.model.fit(count_vectors(train), np.asarray(train.labels, dtype=np.int64))
