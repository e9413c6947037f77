"""One self-contained HTML page describing a run: a timeline of scores, the flagged sequences with
their explaining lines, curves, histograms, confusion matrix, training loss, the messages most
associated with anomalies, the bench table, configuration and versions.

Reads the run folder (docs/architecture.md, contract 2)::

    RUN/eval/<split>/scores.parquet   sequence_id, label, score, pred      (one section per split)
    RUN/eval/<split>/metrics.json     shown as a table; its threshold is used when present
    RUN/threshold.json                the decision threshold otherwise
    RUN/train_log.jsonl               training loss per stage
    RUN/config.json, RUN/data_manifest.json
    RUN/model/                        only to explain flagged sequences (``explain_top`` > 0)

With ``data_dir`` (the prepared folder the run was evaluated on) the timeline is drawn by line
number, flagged sequences show their lines (raw text from the input files the manifest lists),
the masked messages are ranked by their association with anomalies, and a split whose
``scores.parquet`` is missing is scored (this needs the model). A `logllm bench` table is shown
when one is found (`results.find_bench`).

Modules: ``results`` (reading), ``sequences`` (sequences -> lines and files), ``flagged``
(selection and explanations), ``figures`` (matplotlib, base64 PNG), ``tables`` (HTML pieces),
``build`` (the page).
"""

from __future__ import annotations

from logllm.report.build import ReportOptions, build_report
from logllm.report.results import (
    SplitResult,
    discover_splits,
    load_split,
    message_association,
    read_train_log,
    run_threshold,
)

__all__ = ["ReportOptions", "SplitResult", "build_report", "discover_splits", "load_split", "message_association",
           "read_train_log", "run_threshold"]
