"""The decision rule, the metrics and the threshold searches, stated once for the whole package.

Every score in logllm means "higher = more anomalous", and a sequence is predicted anomalous when
``score >= threshold`` (`predict`). Evaluation, the report, the bench and every baseline use the
functions here, so a threshold chosen by one of them means the same thing to all the others:

- `classification_metrics`: precision, recall, F1 (anomalous class, paper Eq. 2-4), accuracy,
  ROC-AUC, PR-AUC (average precision) and the confusion counts;
- `best_f1_threshold`: the threshold with the best F1 on labelled (validation) scores;
- `quantile_threshold`: a threshold from normal scores only (a quantile of them).

scikit-learn computes the curves and areas; it is imported on first use (it is slow to import).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: The decision threshold on a probability when none was chosen (no labelled validation data).
DEFAULT_THRESHOLD = 0.5

#: F1 values closer than this are equal when `best_f1_threshold` breaks ties.
F1_TIE = 1e-12

#: The quantile of normal training scores that a deployed baseline run's threshold lies just above
#: when no labelled validation split decides it (`quantile_threshold`; `logllm train --method`).
NORMAL_QUANTILE = 0.99

def predict(scores: np.ndarray | Sequence[float], threshold: float) -> np.ndarray:
    """The decision rule everywhere: anomalous when ``score >= threshold``.

    Returns a boolean array; a score equal to the threshold is anomalous.
    """
    return np.asarray(scores, dtype=np.float64) >= threshold


def _binary_labels(labels: np.ndarray | Sequence[int]) -> np.ndarray:
    y = np.asarray(labels)
    if y.size and not np.isin(y, (0, 1)).all():
        bad = sorted(set(np.unique(y).tolist()) - {0, 1})
        raise ValueError(f"labels must be 0 (normal) or 1 (anomalous), found {bad[:5]}; "
                         "leave unlabelled sequences (-1) out first")
    return y.astype(np.int64)


def classification_metrics(
    labels: np.ndarray | Sequence[int],
    scores: np.ndarray | Sequence[float] | None,
    threshold: float | None = None,
    *,
    pred: np.ndarray | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Precision, recall, F1 (anomalous class), accuracy, ROC-AUC, PR-AUC and tp/fp/fn/tn.

    The predictions are ``predict(scores, threshold)``, or ``pred`` when given (a method that
    decides by other means than a threshold on its scores, e.g. a classifier's vote). Precision
    (recall) is 0 when nothing is predicted (is) anomalous; F1 is ``2tp / (2tp + fp + fn)``.
    ROC-AUC and PR-AUC rank the ``scores``; they are None without scores, when the labels hold
    only one class, or when a score is not finite.
    """
    y = _binary_labels(labels).astype(bool)
    s = None if scores is None else np.asarray(scores, dtype=np.float64)
    if pred is None:
        if s is None or threshold is None:
            raise ValueError("classification_metrics needs scores and a threshold, or pred")
        p = predict(s, threshold)
    else:
        p = np.asarray(pred).astype(bool)
    if p.shape != y.shape or (s is not None and s.shape != y.shape):
        raise ValueError(f"labels {y.shape}, predictions {p.shape} and scores "
                         f"{None if s is None else s.shape} must have the same length")
    tp, fp = int((y & p).sum()), int((~y & p).sum())
    fn, tn = int((y & ~p).sum()), int((~y & ~p).sum())
    roc_auc = pr_auc = None
    if s is not None and y.any() and (~y).any() and np.isfinite(s).all():
        from sklearn.metrics import average_precision_score, roc_auc_score

        roc_auc = float(roc_auc_score(y, s))
        pr_auc = float(average_precision_score(y, s))
    return {
        "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn), "accuracy": _ratio(tp + tn, len(y)),
        "roc_auc": roc_auc, "pr_auc": pr_auc,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def best_f1_threshold(labels: np.ndarray | Sequence[int], scores: np.ndarray | Sequence[float]) -> tuple[float, float]:
    """The threshold that maximises F1 on labelled (validation) scores, and that F1.

    Candidates are midpoints between consecutive distinct scores, and one just below the lowest
    (everything anomalous), so the cut falls between a predicted-anomalous and a predicted-normal
    sequence rather than exactly on a score seen here. Ties in F1 go to the higher threshold
    (fewer false alarms). Needs at least one anomalous label; raises ValueError otherwise.
    """
    from sklearn.metrics import precision_recall_curve

    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must have the same length")
    if not y.any():
        raise ValueError("no anomalous sequence among the labels; F1 cannot pick a threshold")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite to choose a threshold")
    # thresholds: the distinct scores, ascending; precision[i], recall[i]: predicting score >= thresholds[i]
    precision, recall, thresholds = precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]
    f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    best = int(np.flatnonzero(f1 >= f1.max() - F1_TIE)[-1])  # the highest of the tied thresholds
    distinct = np.unique(s)
    j = int(np.searchsorted(distinct, thresholds[best]))
    if j > 0:
        cut = float((distinct[j - 1] + distinct[j]) / 2)
    else:  # every sequence anomalous
        cut = float(distinct[0] - 1e-12) if distinct[0] > 0 else float(distinct[0])
    return cut, classification_metrics(y, None, pred=predict(s, cut))["f1"]


def quantile_threshold(normal_scores: np.ndarray | Sequence[float], quantile: float) -> float:
    """A threshold from normal scores only: the smallest one above their ``quantile``.

    With ``score >= threshold``, a score equal to the quantile is normal, so ``quantile=1.0``
    flags none of these scores. 0.0 when there are no scores.
    """
    s = np.asarray(normal_scores, dtype=np.float64)
    if not len(s):
        return 0.0
    return float(np.nextafter(np.quantile(s, quantile), np.inf))


__all__ = ["DEFAULT_THRESHOLD", "NORMAL_QUANTILE", "best_f1_threshold", "classification_metrics", "predict", "quantile_threshold"]
