"""`score_archives`: many log files scored with a run, in-process or on Ray, written as parquet + a summary.

Output folder::

    OUT/detections/part-00000.parquet      the detections of input file 0 (one partition per file read;
    OUT/detections/part-00001.parquet      `DETECTION_COLUMNS`, in the order the sequences complete)
    OUT/detections/sessions-00000.parquet  instead, for key sessions joined across files: up to
                                           ``PART_ROWS`` sessions each, in the order they complete
    OUT/summary.json                       counts, files failed, seconds (`ScoreSummary`)

Both engines run the same functions (`file_sequences`, or `logllm.score.sessions` for joined
sessions, and `RunScorer.score_rows`) and write through the same writer, so their outputs are the
same rows. A file that cannot be read (missing by now, no permission, a truncated or corrupt gzip
stream) is named in the summary with the error, its partial detections (or its lines in joined
sessions) are left out, and the other files are scored. Every file is written to a temporary name
and renamed, so a partition or summary is either whole or absent.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from logllm.errors import ConfigError
from logllm.score.inputs import expand_inputs
from logllm.score.scorer import DETECTION_COLUMNS, RunScorer
from logllm.score.sequences import FileReport, PreprocessPlan, file_sequences
from logllm.score.sessions import joined_rows

log = logging.getLogger(__name__)

Engine = Literal["local", "ray"]
# The totals of the summary: every count of a `FileReport` (its one definition), summed over files.
COUNTS = tuple(f.name for f in fields(FileReport) if f.type in ("int", int) and f.name != "file_index")
PART_ROWS = 100_000  # joined sessions per parquet part


@dataclass
class ScoreOptions:
    """How `score_archives` runs (the flags of `logllm score`)."""

    engine: Engine = "local"
    """``local``: one process; ``ray``: CPU tasks per file and an actor pool on Ray Data."""
    workers: int = 2
    """Scoring actors with ``engine="ray"`` (each loads the run once; 1 GPU each when the cluster has GPUs)."""
    address: str | None = None
    """An existing Ray cluster to join (``ray://host:10001`` or ``host:6379``); None: start a local one."""
    threshold: float | None = None
    """Decision threshold on P(anomalous); None: the run's ``threshold.json``."""
    batch_size: int = 64
    """Sequences per model call (speed only)."""
    rows_per_batch: int = 256
    """Sequences handed to a scorer at once (a Ray Data batch; the local engine's scoring batch)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """`prepare`-style preprocessing overrides, as `logllm detect` takes them (``window``, ``mask``, ...)."""
    max_line_bytes: int = 1 << 20
    """Longer lines are cut (counted)."""
    max_open_sessions: int = 100_000
    """Open sessions per file; past it the least recently active is scored early (counted)."""
    overwrite: bool = False
    """Replace the detections and summary of an earlier run in the output folder."""
    per_file_sessions: bool = False
    """Key sessions (a session regex) per file; default: joined across the files by their key."""

    def check(self) -> None:
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {self.engine!r}")
        for name, value in (("--workers", self.workers), ("--batch-size", self.batch_size),
                            ("--max-line-bytes", self.max_line_bytes),
                            ("--max-open-sessions", self.max_open_sessions), ("rows_per_batch", self.rows_per_batch)):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.address and self.engine != "ray":
            raise ConfigError("--address joins a Ray cluster; it needs --engine ray")


@dataclass
class ScoreSummary:
    """What `summary.json` holds: the run, the engine, the totals, and every file's counts or error."""

    run: str
    engine: str
    workers: int
    threshold: float
    files: int = 0
    files_scored: int = 0
    files_failed: list[dict[str, Any]] = field(default_factory=list)
    flagged: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    lines_per_second: float = 0.0
    hidden_skipped: int = 0
    duplicates: int = 0
    session_scope: str = "per-file"
    """``across-files``: key sessions joined across the files; ``per-file``: every sequence in one file."""
    sessions_across_files: int = 0
    partitions: list[str] = field(default_factory=list)
    per_file: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _prepare_out(out: Path, overwrite: bool) -> Path:
    parts = out / "detections"
    old = [p for p in (parts, out / "summary.json") if p.exists()]
    if old and not overwrite:
        raise ConfigError(f"--out {out}: holds an earlier result ({', '.join(p.name for p in old)}); "
                          "pass --overwrite or choose another folder")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the detections")
    parts.mkdir(parents=True, exist_ok=True)
    for p in parts.glob("*.parquet"):
        p.unlink()
    (out / "summary.json").unlink(missing_ok=True)
    return parts


def _write_atomic(path: Path, write: Any) -> Path:
    """``write(tmp)`` then rename to ``path``: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def _write_partition(path: Path, rows: list[dict[str, Any]]) -> Path:
    import polars as pl

    span = pl.Struct({"source": pl.String, "first_line": pl.Int64, "last_line": pl.Int64})
    schema = {"source": pl.String, "sequence_id": pl.String, "first_line": pl.Int64, "last_line": pl.Int64,
              "lines": pl.Int64, "score": pl.Float64, "threshold": pl.Float64, "anomalous": pl.Boolean,
              "reason": pl.String, "label": pl.String, "spans": pl.List(span)}
    records = [{k: (json.loads(r[k] or "[]") if k == "spans" else r[k]) for k in DETECTION_COLUMNS} for r in rows]
    frame = pl.DataFrame(records, schema=schema, orient="row")
    return _write_atomic(path, frame.write_parquet)


def _local_rows(files: list[str], plan: PreprocessPlan, scorer: RunScorer, rows_per_batch: int) -> Iterator[dict]:
    pending: list[dict[str, Any]] = []
    if plan.joins_sessions:
        rows = joined_rows(files, plan)
    else:
        rows = (row for i, path in enumerate(files) for row in file_sequences(i, path, plan))
    for row in rows:
        pending.append(row)
        if len(pending) >= rows_per_batch or row["kind"] == "file":
            yield from scorer.score_rows(pending)
            pending = []
    yield from scorer.score_rows(pending)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The run's data manifest (the preprocessing every CPU task rebuilds), with `detect`'s errors."""
    path = run_dir / "data_manifest.json"
    if not path.is_file():
        raise ConfigError(f"{path}: missing; `logllm score` needs the run folder written by `logllm train` "
                          "(it records the data preprocessing there)")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot be read ({err}); it is written by `logllm train`") from err


def score_archives(run_dir: str | Path, inputs: list[str], out: str | Path,
                   options: ScoreOptions | None = None, *, model: Any | None = None) -> ScoreSummary:
    """Score every file named by ``inputs`` (files, globs, folders; plain or gzip) with the run at
    ``run_dir``; write ``out/detections/part-NNNNN.parquet`` and ``out/summary.json``.

    ``model`` replaces the run's model (local engine only; tests). Raises `ConfigError` for options,
    inputs that name no file and an output folder holding an earlier result; a file that fails to
    read is reported in the summary instead.
    """
    options = options or ScoreOptions()
    options.check()
    run_dir, out = Path(run_dir), Path(out)
    if model is not None and options.engine != "local":
        raise ConfigError("a model object can be given to the local engine only; Ray actors load the run")
    expanded = expand_inputs(inputs)
    manifest = read_manifest(run_dir)
    plan = PreprocessPlan(manifest, dict(options.overrides), str(run_dir / "data_manifest.json"),
                          options.max_line_bytes, options.max_open_sessions,
                          across_files=not options.per_file_sessions)
    check_preprocessing(plan)
    threshold = resolve_threshold(run_dir, options.threshold)
    parts = _prepare_out(out, options.overwrite)
    scorer_kwargs = {"threshold": threshold, "overrides": plan.overrides, "batch_size": options.batch_size}
    started = time.monotonic()
    if options.engine == "ray":
        from logllm.score.ray_engine import ray_rows

        rows = ray_rows(expanded.files, plan, str(run_dir), scorer_kwargs, workers=options.workers,
                        address=options.address, batch_size=options.rows_per_batch)
    else:
        scorer = RunScorer(run_dir, model=model, **scorer_kwargs)
        rows = _local_rows(expanded.files, plan, scorer, options.rows_per_batch)
    summary = ScoreSummary(str(run_dir), options.engine, options.workers if options.engine == "ray" else 1,
                           threshold, files=len(expanded.files), hidden_skipped=expanded.hidden_skipped,
                           duplicates=expanded.duplicates)
    if plan.joins_sessions:
        summary.session_scope = "across-files"
        _write_joined(rows, parts, summary)
    else:
        _write_per_file(rows, parts, summary)
    summary.partitions = [str(p.relative_to(out)) for p in sorted(parts.glob("*.parquet"))]
    summary.seconds = round(time.monotonic() - started, 3)
    summary.lines_per_second = round(summary.totals["lines_read"] / max(summary.seconds, 1e-9), 1)
    _write_atomic(out / "summary.json", lambda p: p.write_text(json.dumps(summary.to_dict(), indent=2) + "\n"))
    return summary


def _file_done(summary: ScoreSummary, report: FileReport, entry: dict[str, Any]) -> None:
    """Count a file's report into the summary (scored, or failed and named)."""
    if report.error is None:
        summary.files_scored += 1
        for k in COUNTS:
            summary.totals[k] = summary.totals.get(k, 0) + getattr(report, k)
        log.info("%d/%d %s: %s lines, %s lines in sequences", summary.files_scored + len(summary.files_failed),
                 summary.files, report.path, f"{report.lines_read:,}", f"{report.lines_used:,}")
    else:
        summary.files_failed.append({"path": report.path, "error": report.error, "lines_read": report.lines_read})
    summary.per_file.append(entry)


def _write_per_file(rows: Iterator[dict[str, Any]], parts: Path, summary: ScoreSummary) -> None:
    """One partition per file, written when its file row arrives (its detections held until then)."""
    summary.totals = dict.fromkeys(COUNTS, 0)
    pending: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        index = row["file_index"]
        if row["kind"] == "sequence":
            pending.setdefault(index, []).append(row)
            continue
        report = FileReport.from_json(row["report"])
        detections = pending.pop(index, [])
        entry = report.to_dict()
        if report.error is None:
            path = _write_partition(parts / f"part-{index:05d}.parquet", detections)
            entry["partition"] = f"{parts.name}/{path.name}"
            entry["flagged"] = sum(1 for d in detections if d["anomalous"])
            summary.flagged += entry["flagged"]
        else:
            entry["detections_dropped"] = len(detections)
        _file_done(summary, report, entry)


def _write_joined(rows: Iterator[dict[str, Any]], parts: Path, summary: ScoreSummary) -> None:
    """Joined sessions: parts of up to `PART_ROWS` rows, written as they fill; a session is counted
    (``sequences``, ``flagged``) in the file of its first line."""
    summary.totals = dict.fromkeys(COUNTS, 0)
    buffer: list[dict[str, Any]] = []
    written = 0
    per_file: dict[int, list[int]] = {}  # file index -> [sessions, flagged]
    reports: dict[int, tuple[FileReport, dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "file":
            report = FileReport.from_json(row["report"])
            entry = report.to_dict()
            if report.error is not None:
                entry["lines_dropped"] = report.lines_used  # left out of every session still open
            reports[report.file_index] = (report, entry)
            continue
        counts = per_file.setdefault(int(row["file_index"]), [0, 0])
        counts[0] += 1
        counts[1] += bool(row["anomalous"])
        summary.flagged += bool(row["anomalous"])
        if len({s["source"] for s in json.loads(row["spans"] or "[]")}) > 1:
            summary.sessions_across_files += 1
        buffer.append(row)
        if len(buffer) >= PART_ROWS:
            _write_partition(parts / f"sessions-{written:05d}.parquet", buffer)
            written, buffer = written + 1, []
    if buffer or not written:
        _write_partition(parts / f"sessions-{written:05d}.parquet", buffer)
    for index in sorted(reports):
        report, entry = reports[index]
        report.sequences = entry["sequences"] = per_file.get(index, [0, 0])[0]
        entry["partition"] = None  # sessions are written to the sessions-NNNNN parts, not by file
        entry["flagged"] = per_file.get(index, [0, 0])[1]
        _file_done(summary, report, entry)
    log.info("%d sessions, %d of them across files", sum(c[0] for c in per_file.values()),
             summary.sessions_across_files)


def check_preprocessing(plan: PreprocessPlan) -> None:
    """Rebuild the preprocessing once in the driver, so a bad override or manifest fails before any work."""
    from logllm.detect import preprocessor_from_manifest

    preprocessor_from_manifest(plan.manifest, plan.overrides, None, where=plan.where)


def resolve_threshold(run_dir: Path, threshold: float | None) -> float:
    """``threshold`` when given (checked to be a probability), else the run's ``threshold.json``."""
    import math

    from logllm.report import run_threshold

    if threshold is None:
        threshold = run_threshold(run_dir)
        if threshold is None:
            raise ConfigError(f"{run_dir}/threshold.json: missing; pass --threshold or finish training")
    if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1] (a probability), got {threshold}")
    return float(threshold)
