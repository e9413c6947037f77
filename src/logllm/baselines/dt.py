"""Decision tree on template-count vectors.

Yu, Ma, Zhang, Liu, Chen, Li, Jiang, Zhang, "Deep Learning or Classical Machine Learning? An
Empirical Study on Log-Based Anomaly Detection", ICSE 2024: a CART decision tree (scikit-learn's
defaults: Gini impurity, grown until leaves are pure) on each sequence's template counts, which
the study found as accurate as deep models on HDFS.

Score: the anomalous share of the training sequences in the leaf; prediction: the tree's class.

Saved state: the fitted tree as arrays (`TreeArrays`: children, split feature and threshold, class
weights per node, as scikit-learn's ``tree_`` holds them), walked in numpy after loading, so no
pickle of a scikit-learn object is needed; a loaded tree gives the same probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from logllm.baselines.base import MethodInput, param, register
from logllm.baselines.common import CountClassifier, count_vectors


@dataclass
class TreeArrays:
    """A fitted scikit-learn classification tree as plain arrays, with its ``predict_proba`` rule."""

    left: np.ndarray  # (n_nodes,) child index, -1 at a leaf
    right: np.ndarray
    feature: np.ndarray  # split feature per node
    threshold: np.ndarray  # go left when x[feature] <= threshold (x as float32, as scikit-learn casts it)
    value: np.ndarray  # (n_nodes, n_classes) class weights or fractions
    classes_: np.ndarray

    @classmethod
    def of(cls, model: Any) -> TreeArrays:
        tree = model.tree_
        return cls(tree.children_left.astype(np.int64), tree.children_right.astype(np.int64),
                   tree.feature.astype(np.int64), tree.threshold.astype(np.float64),
                   np.asarray(tree.value, dtype=np.float64)[:, 0, :], np.asarray(model.classes_))

    def leaves(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32).astype(np.float64)
        node = np.zeros(len(x), dtype=np.int64)
        rows = np.arange(len(x))
        while True:
            inner = self.left[node] >= 0
            if not inner.any():
                return node
            r, n = rows[inner], node[inner]
            go_left = x[r, self.feature[n]] <= self.threshold[n]
            node[r] = np.where(go_left, self.left[n], self.right[n])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        v = self.value[self.leaves(x)]
        total = v.sum(1, keepdims=True)
        return v / np.where(total == 0, 1.0, total)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(1)]


@register
class DecisionTree(CountClassifier):
    name: ClassVar[str] = "dt"
    param_names: ClassVar[frozenset[str] | None] = frozenset({"max_depth"})

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        from sklearn.tree import DecisionTreeClassifier

        self.model = DecisionTreeClassifier(max_depth=param(self.params, "max_depth", None, int),
                                            random_state=self.seed)
        self.model.fit(count_vectors(train), np.asarray(train.labels, dtype=np.int64))
        self.n_templates = train.resources.n_templates

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        t = TreeArrays.of(self.model) if not isinstance(self.model, TreeArrays) else self.model
        return ({"left": t.left, "right": t.right, "feature": t.feature, "threshold": t.threshold,
                 "value": t.value, "classes": t.classes_.astype(np.int64)}, {"n_templates": self.n_templates})

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.model = TreeArrays(arrays["left"], arrays["right"], arrays["feature"], arrays["threshold"],
                                arrays["value"], arrays["classes"])
        self.n_templates = int(info["n_templates"])
