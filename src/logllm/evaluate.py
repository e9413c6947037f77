"""Scores -> metrics: ``logllm evaluate`` and its Python API.

``evaluate(run_dir, data_dir, split)`` loads the trained model of a run folder, scores every
sequence of one split of a prepared folder in one forward pass per batch, applies the run's
decision threshold (chosen on the validation split at training time, never on the split being
evaluated) and writes::

    RUN/eval/<split>/metrics.json    precision, recall, f1, accuracy, roc_auc, pr_auc, threshold and
                                     where it was chosen, tp/fp/fn/tn, sequences, seconds, throughput,
                                     seed, versions, a summary of the data manifest, and
                                     other_data when --allow-other-data let a folder other than
                                     the run's training data be evaluated (what differs)
    RUN/eval/<split>/scores.parquet  sequence_id, label, score, pred

Metrics are on the anomalous class (paper Eq. 2-4); sequences without a label are scored but left
out of the metrics (counted in ``unlabeled``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from logllm.errors import ConfigError, DataError
from logllm.versions import library_versions

log = logging.getLogger(__name__)

THRESHOLD_FILE = "threshold.json"
DEFAULT_THRESHOLD = 0.5


@dataclass
class Metrics:
    """The result of evaluating one split (also written to ``metrics.json``)."""

    split: str
    precision: float
    recall: float
    f1: float
    accuracy: float
    roc_auc: float | None
    pr_auc: float | None
    threshold: float
    threshold_source: str
    tp: int
    fp: int
    fn: int
    tn: int
    sequences: int
    labeled: int
    anomalous: int
    unlabeled: int
    seconds: float = 0.0
    sequences_per_second: float = 0.0
    seed: int | None = None
    run: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    #: set when the data is not the run's training data and that was allowed (what differs)
    other_data: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """A few lines for people: P/R/F1 first, then the rest."""
        auc = "n/a" if self.roc_auc is None else f"{self.roc_auc:.4f}"
        return (
            f"{self.split}: precision {self.precision:.4f}  recall {self.recall:.4f}  f1 {self.f1:.4f}\n"
            f"  accuracy {self.accuracy:.4f}  roc_auc {auc}  tp {self.tp} fp {self.fp} fn {self.fn} tn {self.tn}\n"
            f"  threshold {self.threshold:.4g} ({self.threshold_source}); {self.sequences} sequences "
            f"({self.anomalous} anomalous) in {self.seconds:.1f} s ({self.sequences_per_second:.0f}/s)"
        )


def confusion(labels: np.ndarray, preds: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) with 1 = anomalous."""
    labels = np.asarray(labels).astype(bool)
    preds = np.asarray(preds).astype(bool)
    return (int((labels & preds).sum()), int((~labels & preds).sum()),
            int((labels & ~preds).sum()), int((~labels & ~preds).sum()))


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def predict(scores: np.ndarray | Sequence[float], threshold: float) -> np.ndarray:
    """The decision rule everywhere (evaluate, bench, training's threshold choice): anomalous when
    ``score >= threshold``. Returns a boolean array; a score equal to the threshold is anomalous."""
    return np.asarray(scores, dtype=np.float64) >= threshold


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 (anomalous class), accuracy, ROC-AUC, PR-AUC and the confusion counts.

    A sequence is predicted anomalous when its score is >= ``threshold``. ROC-AUC and PR-AUC are None
    when the labels hold only one class. Precision (recall) is 0 when nothing is predicted (is) anomalous.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    preds = predict(scores, threshold)
    tp, fp, fn, tn = confusion(labels, preds)
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    two_classes = len(np.unique(labels)) == 2
    return {
        "precision": precision, "recall": recall, "f1": f1,
        "accuracy": _ratio(tp + tn, len(labels)),
        "roc_auc": float(roc_auc_score(labels, scores)) if two_classes else None,
        "pr_auc": float(average_precision_score(labels, scores)) if two_classes else None,
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def choose_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises F1 on (validation) labels and scores, and that F1.

    Candidates are midpoints between consecutive distinct scores (and just below the lowest), so the
    cut falls between a predicted-anomalous and a predicted-normal sequence rather than exactly on a
    validation score. Ties in F1 go to the higher threshold (fewer false alarms). Needs at least
    one anomalous label; raises ValueError otherwise.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.sum() == 0:
        raise ValueError("no anomalous sequence among the labels; F1 cannot pick a threshold")
    distinct = np.unique(scores)  # ascending
    candidates = np.concatenate([[distinct[0] - 1e-12 if distinct[0] > 0 else 0.0],
                                 (distinct[:-1] + distinct[1:]) / 2])
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    best_t, best_f1 = DEFAULT_THRESHOLD, -1.0
    total_pos = int(labels.sum())
    for t in candidates[::-1]:  # high to low, so a tie keeps the higher threshold
        k = int(np.searchsorted(-s, -t, side="right"))  # sequences with score >= t
        tp = int(y[:k].sum())
        f1 = 2 * tp / (k + total_pos)
        if f1 > best_f1 + 1e-12:
            best_t, best_f1 = float(t), f1
    return best_t, best_f1


def read_threshold(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``threshold.json`` (threshold and where it was chosen)."""
    path = Path(run_dir) / THRESHOLD_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: missing; is {run_dir} a finished `logllm train` run folder?")
    data = json.loads(path.read_text())
    if not isinstance(data.get("threshold"), (int, float)) or not math.isfinite(data["threshold"]):
        raise ConfigError(f"{path}: 'threshold' must be a number, got {data.get('threshold')!r}")
    return data


def _manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    keep = ("family", "lines", "unparsed_lines", "distinct_messages", "splits", "seed", "version")
    out = {k: manifest[k] for k in keep if k in manifest}
    out["inputs"] = [{k: i.get(k) for k in ("path", "sha256")} for i in manifest.get("inputs", [])]
    return out


def evaluate(
    run_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    batch_size: int | None = None,
    model: Any | None = None,
    write: bool = True,
    allow_other_data: bool = False,
) -> Metrics:
    """Score one split of a prepared folder with a trained run and write its metrics and scores.

    The decision threshold comes from the run's ``threshold.json`` (chosen on validation data when
    training); the labels of ``split`` are used only to compute the metrics, after prediction.
    ``model`` may be passed to reuse an already loaded LogLLM; ``batch_size`` changes speed, not scores.
    The folder must hold the data the run was trained on (its ``data_manifest.json``) unless
    ``allow_other_data``, which is then recorded in the metrics (``other_data``).
    """
    from logllm.data.dataset import PreparedData
    from logllm.data.manifest import check_run_data

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (config.json is missing); create one with `logllm train`")
    config = json.loads(config_path.read_text())
    threshold_info = read_threshold(run_dir)
    threshold = float(threshold_info["threshold"])
    data = PreparedData(data_dir)
    other_data = check_run_data(run_dir, data, allow_other_data=allow_other_data, command="evaluate")
    seqs = data.sequences(split)
    if model is None:
        from logllm.model.logllm import LogLLM

        model_dir = run_dir / "model"
        if not model_dir.is_dir():
            raise ConfigError(f"{model_dir}: missing; the run did not finish (resume it with `logllm train --resume`)")
        model = LogLLM.from_pretrained(model_dir)
    if batch_size is None:
        batch_size = int(config.get("score_batch_size", 64))

    start = time.perf_counter()
    scores = np.asarray(model.score(data.messages, [m.tolist() for m in seqs.message_ids], batch_size=batch_size),
                        dtype=np.float64)
    seconds = time.perf_counter() - start
    preds = predict(scores, threshold).astype(np.int8)
    # Labels are read only from here on: prediction is done.
    labels = seqs.labels
    known = labels >= 0
    if not known.any():
        raise DataError(f"{data_dir}/{split}.parquet: no labeled sequence, so there is nothing to measure "
                        "(use `logllm detect` to score unlabeled logs)")
    if (~known).sum():
        log.warning("%d of %d %s sequences have no label: scored, but left out of the metrics",
                    int((~known).sum()), len(labels), split)
    values = classification_metrics(labels[known], scores[known], threshold)
    metrics = Metrics(
        split=split, **values, threshold=threshold,
        threshold_source=str(threshold_info.get("source", "unknown")),
        sequences=len(seqs), labeled=int(known.sum()), anomalous=int((labels == 1).sum()),
        unlabeled=int((~known).sum()), seconds=seconds,
        sequences_per_second=len(seqs) / seconds if seconds > 0 else 0.0,
        seed=config.get("seed"), run=str(run_dir), data={"path": str(data_dir), **_manifest_summary(data.manifest)},
        versions=library_versions(), other_data=other_data,
    )
    if write:
        out = run_dir / "eval" / split
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics.to_dict(), indent=2) + "\n")
        pl.DataFrame({
            "sequence_id": seqs.ids,
            "label": pl.Series([int(x) if x >= 0 else None for x in labels], dtype=pl.Int8),
            "score": scores,
            "pred": pl.Series(preds, dtype=pl.Int8),
        }).write_parquet(out / "scores.parquet")
        log.info("wrote %s and scores.parquet (%d sequences)", out / "metrics.json", len(seqs))
    return metrics
