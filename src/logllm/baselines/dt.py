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

from logllm.baselines.base import MethodInput, register
from logllm.baselines.common import CountClassifier, count_vectors, param


@register
class DecisionTree(CountClassifier):
    name: ClassVar[str] = "dt"

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        from sklearn.tree import DecisionTreeClassifier

        self.model = DecisionTreeClassifier(max_depth=param(self.params, "max_depth", None, int),
                                            random_state=self.seed)
        self.model.fit(count_vectors(train), np.asarray(train.labels, dtype=np.int64))
