"""Decision tree on template-count vectors.

Yu, Ma, Zhang, Liu, Chen, Li, Jiang, Zhang, "Deep Learning or Classical Machine Learning? An
Empirical Study on Log-Based Anomaly Detection", ICSE 2024: a CART decision tree (scikit-learn's
defaults: Gini impurity, grown until leaves are pure) on each sequence's template counts, which
the study found as accurate as deep models on HDFS.

Score: the anomalous share of the training sequences in the leaf; prediction: the tree's class.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from logllm.baselines._common import param
from logllm.baselines.base import Method, MethodInput, register
from logllm.baselines.knn import count_vectors


@register
class DecisionTree(Method):
    name: ClassVar[str] = "dt"
    supervision = "supervised"
    uses_vectors: ClassVar[bool] = False  # template counts/ids only: the harness skips the encoder
    paper: ClassVar[str] = "Yu et al., ICSE 2024 (Deep Learning or Classical Machine Learning?)"

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        from sklearn.tree import DecisionTreeClassifier

        self.model = DecisionTreeClassifier(max_depth=param(self.params, "max_depth", None, int),
                                            random_state=self.seed)
        self.model.fit(count_vectors(train), np.asarray(train.labels, dtype=np.int64))

    def score(self, data: MethodInput) -> np.ndarray:
        proba = self.model.predict_proba(count_vectors(data))
        classes = list(self.model.classes_)
        return proba[:, classes.index(1)].astype(np.float64) if 1 in classes else np.zeros(len(data))

    def predict(self, data: MethodInput) -> np.ndarray:
        return self.model.predict(count_vectors(data)).astype(bool)
