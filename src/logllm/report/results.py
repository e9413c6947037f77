"""What the report reads: a run's evaluated splits, threshold and training log, the message/anomaly
association of a prepared folder, and a `logllm bench` table.

Every reader raises :class:`~logllm.errors.DataError` naming the file for a broken input, and logs
what it skipped (with counts).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from logllm.errors import DataError
from logllm.metrics import predict

log = logging.getLogger(__name__)

SCORES = "scores.parquet"
METRICS = "metrics.json"
BENCH_TABLE = "table.csv"
BENCH_META = "bench.json"


@dataclass
class SplitResult:
    """Scores of one evaluated split, with labels (-1 where unknown) and its threshold."""

    name: str
    sequence_ids: list[str]
    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    metrics: dict[str, Any]

    @property
    def predictions(self) -> np.ndarray:
        """1 where the sequence is flagged (``score >= threshold``, `logllm.metrics.predict`), else 0."""
        return predict(self.scores, self.threshold).astype(np.int8)

    def labeled(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels and scores of the labeled sequences only."""
        mask = self.labels >= 0
        return self.labels[mask], self.scores[mask]

    def one_class(self) -> str | None:
        """``"normal"`` or ``"anomalous"`` when every sequence gets that prediction, else None."""
        if len(self.scores) == 0:
            return None
        flagged = int(self.predictions.sum())
        if flagged == 0:
            return "normal"
        if flagged == len(self.scores):
            return "anomalous"
        return None


def read_json(path: Path) -> Any:
    """A JSON file's content; DataError naming the file and line when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err


def run_threshold(run_dir: Path) -> float | None:
    """The run's decision threshold from ``threshold.json`` (None when the file is absent)."""
    path = Path(run_dir) / "threshold.json"
    if not path.is_file():
        return None
    data = read_json(path)
    value = data.get("threshold") if isinstance(data, dict) else data
    if not isinstance(value, (int, float)):
        raise DataError(f"{path}: expected a number under 'threshold', found {value!r}")
    return float(value)


def load_split(run_dir: Path, split: str) -> SplitResult:
    """Read ``RUN/eval/<split>/scores.parquet`` (and ``metrics.json`` beside it)."""
    folder = run_dir / "eval" / split
    path = folder / SCORES
    if not path.is_file():
        raise DataError(f"{path}: missing; run `logllm evaluate {run_dir} --split {split}` first, "
                        "or pass --data to let the report score the split")
    df = pl.read_parquet(path)
    for col in ("sequence_id", "label", "score"):
        if col not in df.columns:
            raise DataError(f"{path}: column {col!r} is missing (found {df.columns})")
    metrics = read_json(folder / METRICS) if (folder / METRICS).is_file() else {}
    threshold = metrics.get("threshold") if isinstance(metrics, dict) else None
    if not isinstance(threshold, (int, float)):
        threshold = run_threshold(run_dir)
    if threshold is None:
        threshold = 0.5
        log.warning("%s: no threshold in metrics.json or threshold.json; using 0.5", folder)
    return SplitResult(
        name=split,
        sequence_ids=df["sequence_id"].cast(pl.Utf8).to_list(),
        labels=df["label"].fill_null(-1).to_numpy().astype(np.int64),
        scores=df["score"].to_numpy().astype(np.float64),
        threshold=float(threshold),
        metrics=metrics if isinstance(metrics, dict) else {"metrics": metrics},
    )


def discover_splits(run_dir: Path) -> list[str]:
    """Splits with an ``eval/<split>/scores.parquet`` in the run, test first."""
    eval_dir = run_dir / "eval"
    found = sorted(p.parent.name for p in eval_dir.glob(f"*/{SCORES}")) if eval_dir.is_dir() else []
    return sorted(found, key=lambda s: (s != "test", s))


def read_train_log(run_dir: Path) -> list[dict]:
    """The rows of ``train_log.jsonl`` (empty when absent); bad lines are counted and skipped."""
    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    rows, bad = [], 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
    if bad:
        log.warning("%s: %d lines are not JSON and were skipped", path, bad)
    return rows


def message_association(data_dir: Path, splits: list[str] | None = None, top: int = 20) -> list[dict]:
    """Masked messages ranked by how much more often they occur in anomalous than normal sequences.

    For each message: the share of anomalous sequences containing it (``p_anom``), the share of
    normal ones (``p_norm``), and ``ratio = (p_anom + e) / (p_norm + e)`` with ``e = 1 / (2 n)`` a
    small smoothing term so that messages absent from normal sequences get a finite ratio. Labeled
    sequences of the given splits (default: all present) are used.
    """
    from logllm.data.dataset import SPLITS, PreparedData

    data = PreparedData.load(data_dir)
    splits = [s for s in (splits or list(SPLITS)) if data.has_split(s)]
    n_msg = len(data.messages)
    in_anom = np.zeros(n_msg, dtype=np.int64)
    in_norm = np.zeros(n_msg, dtype=np.int64)
    n_anom = n_norm = 0
    for split in splits:
        seqs = data.sequences(split)
        for ids, label in zip(seqs.message_ids, seqs.labels):
            if label < 0:
                continue
            present = np.unique(ids)
            if label == 1:
                in_anom[present] += 1
                n_anom += 1
            else:
                in_norm[present] += 1
                n_norm += 1
    if n_anom == 0 or n_norm == 0:
        log.info("%s: message association needs both classes (anomalous %d, normal %d)", data_dir, n_anom, n_norm)
        return []
    p_anom, p_norm = in_anom / n_anom, in_norm / n_norm
    eps = 1.0 / (2 * max(n_anom, n_norm))
    ratio = (p_anom + eps) / (p_norm + eps)
    order = [i for i in np.argsort(-ratio, kind="stable") if in_anom[i] > 0][:top]
    return [
        {"message_id": int(i), "text": data.messages[i], "anomalous_sequences": int(in_anom[i]),
         "normal_sequences": int(in_norm[i]), "p_anomalous": float(p_anom[i]),
         "p_normal": float(p_norm[i]), "ratio": float(ratio[i])}
        for i in order
    ]


# -- the bench table -----------------------------------------------------------------------------

@dataclass
class BenchTable:
    """A `logllm bench` summary (``table.csv``, one row per method) and the folder it came from."""

    folder: Path
    table: pl.DataFrame
    meta: dict[str, Any]


def bench_candidates(run_dir: Path, data_dir: Path | None) -> list[Path]:
    """Where a bench of this run or data may be, in the order they are tried: ``RUN/bench``, then
    ``DATA/bench`` and ``bench_<DATA name>`` beside DATA and in the working folder (`logllm bench`'s
    default ``--out``)."""
    out = [run_dir / "bench"]
    if data_dir is not None:
        name = f"bench_{data_dir.resolve().name}"
        out += [data_dir / "bench", data_dir.resolve().parent / name, Path.cwd() / name]
    return list(dict.fromkeys(out))


def read_bench(folder: Path) -> BenchTable:
    """Read ``table.csv`` (and ``bench.json`` when present) of a `logllm bench` output folder."""
    path = folder / BENCH_TABLE
    if not path.is_file():
        raise DataError(f"{path}: missing; give the --out folder of `logllm bench` (it holds table.csv)")
    try:
        table = pl.read_csv(path)
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{path}: not a readable CSV table ({err})") from err
    if "method" not in table.columns:
        raise DataError(f"{path}: column 'method' is missing (found {table.columns}); is it a bench table?")
    meta = read_json(folder / BENCH_META) if (folder / BENCH_META).is_file() else {}
    return BenchTable(folder, table, meta if isinstance(meta, dict) else {})


def find_bench(run_dir: Path, data_dir: Path | None, explicit: Path | None = None) -> BenchTable | None:
    """The bench table to show: ``explicit`` (must exist), else the first candidate folder holding a
    ``table.csv`` whose ``bench.json`` names the same data folder (or names none); None if no folder
    qualifies."""
    if explicit is not None:
        return read_bench(explicit)
    for folder in bench_candidates(run_dir, data_dir):
        if not (folder / BENCH_TABLE).is_file():
            continue
        bench = read_bench(folder)
        named = bench.meta.get("data")
        if data_dir is not None and named and Path(named).resolve() != data_dir.resolve():
            log.info("%s: a bench of %s, not of %s; not shown", folder, named, data_dir)
            continue
        log.info("bench table from %s (%d methods)", folder, len(bench.table))
        return bench
    return None
