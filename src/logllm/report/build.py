"""`build_report`: the run folder (and optionally its prepared data and bench) -> one HTML file."""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logllm.errors import ConfigError, DataError
from logllm.report import figures
from logllm.report.flagged import Explainer, flagged_table, load_explainer
from logllm.report.results import (
    SCORES,
    discover_splits,
    find_bench,
    load_split,
    message_association,
    read_json,
    read_train_log,
)
from logllm.report.sequences import SplitLines, timeline_positions
from logllm.report.tables import (
    CSS,
    assoc_table,
    bench_html,
    esc,
    flagged_html,
    img,
    kv_table,
    one_class_banner,
    summary,
    value_html,
)

log = logging.getLogger(__name__)


@dataclass
class ReportOptions:
    """What the report shows beyond the fixed figures."""

    #: rows in the table of masked messages most associated with anomalies (needs the data)
    top_messages: int = 20
    #: flagged sequences listed per split, highest score first
    flagged_rows: int = 20
    #: how many of those (the highest scores) get a leave-one-out explanation; 0 disables (and the
    #: model is not loaded). Each costs one model scoring per line of the sequence.
    explain_top: int = 5
    #: explanation lines per explained sequence (each of a different masked message)
    top_lines: int = 3
    #: a `logllm bench` output folder to show; None looks for one beside the run and the data
    bench: Path | None = None
    #: sequences per model call while explaining (speed only)
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("top_messages", "flagged_rows", "explain_top", "top_lines"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a whole number >= 0, got {value!r}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size!r}")


def _score_missing(run_dir: Path, data_dir: Path, split: str) -> None:
    """Score a split the run was not evaluated on, through `logllm.evaluate` (needs the model)."""
    from logllm.evaluate import evaluate

    log.info("scoring split %s of %s with the run's model", split, data_dir)
    evaluate(run_dir, data_dir, split=split)


def build_report(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    splits: list[str] | None = None,
    out: str | Path | None = None,
    options: ReportOptions | None = None,
    model: Any | None = None,
) -> Path:
    """Write the HTML report of a run (default ``RUN/report.html``) and return its path.

    ``data_dir`` (the prepared folder the run was evaluated on) adds the timeline by line number,
    the flagged sequences' lines and explanations, and the message association; it also lets a split
    without ``eval/<split>/scores.parquet`` be scored. ``model`` replaces the run's model for the
    explanations (anything with ``score(texts, sequences, batch_size)``).
    """
    opts = options or ReportOptions()
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: not a directory; give the run folder written by `logllm train`")
    data_path = Path(data_dir) if data_dir is not None else None
    wanted = splits or discover_splits(run_dir)
    if not wanted and data_path is not None:
        wanted = ["test"]
    if not wanted:
        raise DataError(f"{run_dir}: no eval/<split>/scores.parquet found; run `logllm evaluate` first "
                        "or pass --data to score the test split")
    results = []
    for split in wanted:
        if not (run_dir / "eval" / split / SCORES).is_file() and data_path is not None:
            _score_missing(run_dir, data_path, split)
        results.append(load_split(run_dir, split))

    config = read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    manifest = read_json(run_dir / "data_manifest.json") if (run_dir / "data_manifest.json").is_file() else {}
    train_rows = read_train_log(run_dir)
    data = None
    if data_path is not None:
        from logllm.data.dataset import PreparedData

        data = PreparedData(data_path)
    assoc = message_association(data_path, top=opts.top_messages) if data_path is not None else []
    bench = find_bench(run_dir, data_path, opts.bench)
    explainer: Explainer | None = None
    why_not = "pass --data with the prepared folder" if data is None else ""
    if data is not None and opts.explain_top > 0 and any(int(r.predictions.sum()) for r in results):
        explainer, why_not = load_explainer(run_dir, model, opts.batch_size)

    from logllm.versions import library_versions

    n_figures = 0
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>logllm report: {esc(run_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>logllm report: <code>{esc(run_dir)}</code></h1>",
        f'<p class="muted">written {_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}</p>',
    ]
    for res in results:
        lines = SplitLines.load(data, res.name) if data is not None and data.has_split(res.name) else None
        if data is not None and lines is not None:
            x, xlabel, bounds = timeline_positions(data, lines, res.sequence_ids)
        else:
            x, xlabel, bounds = np.arange(len(res.scores), dtype=float), "sequence (order in scores.parquet)", []
        parts.append(f"<h2>Split <code>{esc(res.name)}</code></h2>")
        parts.append(one_class_banner(res))
        parts.append("<h3>Summary at the threshold</h3>" + kv_table(summary(res)))
        parts.append('<div class="figs">' + img(figures.fig_timeline(res, x, xlabel, bounds),
                                                f"timeline of scores, {res.name}") + "</div>")
        parts.append('<div class="figs">')
        parts.append(img(figures.fig_pr(res), f"precision-recall curve, {res.name}"))
        parts.append(img(figures.fig_roc(res), f"ROC curve, {res.name}"))
        parts.append(img(figures.fig_histogram(res), f"score histograms, {res.name}"))
        parts.append(img(figures.fig_confusion(res), f"confusion matrix, {res.name}"))
        parts.append("</div>")
        n_figures += 5
        table = flagged_table(res, data, lines, explainer, why_not, rows=opts.flagged_rows,
                              explain_top=opts.explain_top, top_lines=opts.top_lines)
        parts.append("<h3>Flagged sequences</h3>" + flagged_html(table))
        if res.metrics:
            parts.append("<h3>metrics.json</h3>" + kv_table(res.metrics))
    if bench is not None:
        parts.append("<h2>Bench: every method on this data</h2>" + bench_html(bench))
    parts.append("<h2>Training</h2>")
    parts.append(f'<div class="figs">{img(figures.fig_training(train_rows), "training loss per stage")}</div>')
    n_figures += 1
    n_steps = sum(1 for r in train_rows if isinstance(r.get("loss"), (int, float)) and "event" not in r)
    parts.append(f"<p class=muted>{n_steps} logged optimiser steps in train_log.jsonl</p>")
    parts.append("<h2>Messages most associated with anomalies</h2>")
    if assoc:
        parts.append(f'<div class="figs">{img(figures.fig_messages(assoc), "messages most associated with anomalies")}'
                     "</div>")
        n_figures += 1
    parts.append(assoc_table(assoc))
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "versions"}  # shown under Versions
    parts.append("<h2>Configuration</h2>" + value_html(config))
    if manifest:
        shown = {k: v for k, v in manifest.items() if k != "versions"}
        parts.append("<h2>Data manifest</h2>" + value_html(shown))
    versions = {"this report": library_versions()}
    for name, src in (("training (config.json)", config), ("data (data_manifest.json)", manifest)):
        if isinstance(src, dict) and isinstance(src.get("versions"), dict):
            versions[name] = src["versions"]
    parts.append("<h2>Versions</h2>")
    for name, v in versions.items():
        parts.append(f"<h3>{esc(name)}</h3>" + kv_table(v))
    parts.append("</body></html>")

    out_path = Path(out) if out is not None else run_dir / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    log.info("wrote %s (%d splits, %d figures%s)", out_path, len(results), n_figures,
             f", bench table from {bench.folder}" if bench is not None else "")
    return out_path
