"""Scores -> metrics: ``logllm evaluate`` and its Python API.

``evaluate(run_dir, data_dir, split)`` loads the trained model of a run folder (any method:
`logllm.methods.load_run` reads ``config.json``'s ``method``), scores every
sequence of one split of a prepared folder in one forward pass per batch, applies the run's
decision threshold (chosen on the validation split at training time, never on the split being
evaluated) and writes::

    RUN/eval/<split>/metrics.json    precision, recall, f1, accuracy, roc_auc, pr_auc, threshold and
                                     where it was chosen, tp/fp/fn/tn, sequences, seconds, throughput,
                                     seed, versions, a summary of the data manifest, and
                                     other_data when --allow-other-data let a folder other than
                                     the run's training data be evaluated (what differs)
    RUN/eval/<split>/scores.parquet  sequence_id, label, score, pred

Metrics (`logllm.metrics`) are on the anomalous class (paper Eq. 2-4); sequences without a label are scored but left
out of the metrics (counted in ``unlabeled``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from logllm.errors import ConfigError, DataError
from logllm.methods.model import THRESHOLD_FILE, load_run, read_run_config
from logllm.metrics import DEFAULT_THRESHOLD, best_f1_threshold, classification_metrics, predict
from logllm.versions import library_versions

log = logging.getLogger(__name__)

# Training imports these from here; the rules themselves live in logllm.metrics.
choose_threshold = best_f1_threshold
__all__ = ["DEFAULT_THRESHOLD", "THRESHOLD_FILE", "Metrics", "choose_threshold", "classification_metrics", "evaluate",
           "predict", "read_threshold"]


@dataclass
class Metrics:
    """The result of evaluating one split (also written to ``metrics.json``)."""

    split: str
    method: str
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
    ``model`` may be passed to reuse an already loaded model (anything with ``score(texts, sequences,
    batch_size)``, as `logllm.methods.load_run` returns); ``batch_size`` changes speed, not scores.
    The folder must hold the data the run was trained on (its ``data_manifest.json``) unless
    ``allow_other_data``, which is then recorded in the metrics (``other_data``).
    """
    from logllm.data.dataset import PreparedData
    from logllm.data.manifest import check_run_data

    run_dir, data_dir = Path(run_dir), Path(data_dir)
    config = read_run_config(run_dir)
    threshold_info = read_threshold(run_dir)
    threshold = float(threshold_info["threshold"])
    data = PreparedData(data_dir)
    other_data = check_run_data(run_dir, data, allow_other_data=allow_other_data, command="evaluate")
    seqs = data.sequences(split)
    if model is None:
        model = load_run(run_dir)
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
        split=split, method=str(config.get("method", "logllm")), **values, threshold=threshold,
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
