"""The flagged sequences of a split, highest score first, the top ones explained line by line.

An explanation is the leave-one-out contribution of each line (`logllm.explain`): the drop in the
sequence's P(anomalous) when that line is left out, ranked by the drop in log-odds, one line per
distinct masked message (as `logllm detect` lists them). It needs the run's model, and costs one
scoring per line of each explained sequence, so only the ``explain_top`` highest-scoring flagged
sequences are explained. A sequence longer than the model's ``max_messages`` is read as windows
(`logllm.scoring.WindowPlan`) and explained over all its lines, each line left out of the windows
that hold it (`logllm.explain`); its row says how many windows the model read.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logllm.data.dataset import PreparedData
from logllm.errors import LogLLMError
from logllm.explain import ScoreCache, leave_one_out, log_odds_fn, top_k
from logllm.report.results import SplitResult
from logllm.report.sequences import SplitLines, input_name, read_raw_lines, where
from logllm.scoring import WindowPlan

log = logging.getLogger(__name__)


@dataclass
class TopLine:
    """One line of an explanation: where it is, its contribution, its masked message and raw text."""

    position: int
    file_index: int
    file: str
    line: int
    contribution: float
    message: str
    occurrences: int
    text: str | None = None


@dataclass
class FlaggedRow:
    """One flagged sequence as the table shows it."""

    rank: int
    sequence_id: str
    score: float
    label: int
    lines: int | None = None
    where: str | None = None
    top: list[TopLine] = field(default_factory=list)
    note: str = ""


@dataclass
class FlaggedTable:
    """The flagged sequences of one split: how many there are, the rows shown, and page notes."""

    split: str
    flagged: int
    rows: list[FlaggedRow]
    notes: list[str] = field(default_factory=list)


class Explainer:
    """Leave-one-out explanations with a model (anything with ``score(texts, sequences, batch_size)``;
    a LogLLM also gives ``answer_logits``, used for the log-odds ranking)."""

    def __init__(self, model: Any, batch_size: int = 64):
        self.windows: WindowPlan | None = WindowPlan.of(model)
        self.cache = ScoreCache(log_odds_fn(model), batch_size=batch_size, windows=self.windows)

    def explain(self, sequences: list[list[str]], k: int) -> list[list[tuple[int, float]]]:
        """Top ``k`` (position, probability drop) per sequence over all its lines, one per distinct
        masked message."""
        contributions = leave_one_out(self.cache, sequences, by="position")
        return [top_k(c, k, keys=s) for c, s in zip(contributions, sequences)]


def load_explainer(run_dir: Path, model: Any | None = None, batch_size: int = 64) -> tuple[Explainer | None, str]:
    """An explainer for the run's model (or for ``model`` when given) and ``""``; or None and why not."""
    if model is not None:
        return Explainer(model, batch_size), ""
    config_path = run_dir / "config.json"
    method = "logllm"
    if config_path.is_file():
        try:
            method = str(json.loads(config_path.read_text()).get("method", "logllm"))
        except (json.JSONDecodeError, AttributeError):
            return None, f"{config_path} is not a JSON object, so the run's model is unknown"
    if method != "logllm":
        return None, (f"this run's method is {method!r}; line explanations need a LogLLM model (the drop in its "
                      "score when a line is left out)")
    try:
        from logllm.model.logllm import LogLLM

        loaded = LogLLM.from_pretrained(run_dir, merge_adapters=True)
    except (LogLLMError, OSError, ImportError, RuntimeError, ValueError, KeyError) as err:
        log.warning("report: the model of %s could not be loaded, so flagged sequences are not explained: %s",
                    run_dir, err)
        return None, f"the model could not be loaded from {run_dir} ({type(err).__name__}: {err})"
    return Explainer(loaded, batch_size), ""


def flagged_table(res: SplitResult, data: PreparedData | None, lines: SplitLines | None,
                  explainer: Explainer | None, why_not: str, rows: int = 20, explain_top: int = 5,
                  top_lines: int = 3) -> FlaggedTable:
    """The ``rows`` highest-scoring flagged sequences of ``res``; the first ``explain_top`` of them
    explained by ``explainer`` (``why_not`` says why there is none) with their ``top_lines`` best lines,
    in raw text where the input files can be read (``data`` and ``lines`` give the sequences' lines)."""
    preds = res.predictions
    order = [int(i) for i in np.argsort(-res.scores, kind="stable") if preds[i] == 1]
    table = FlaggedTable(res.name, len(order), [
        FlaggedRow(rank + 1, res.sequence_ids[i], float(res.scores[i]), int(res.labels[i]))
        for rank, i in enumerate(order[:rows])
    ])
    if data is None or lines is None:
        table.notes.append("Lines and explanations need the prepared folder: pass --data.")
        return table
    missing = 0
    for row in table.rows:
        r = lines.row.get(row.sequence_id)
        if r is None:
            missing += 1
            row.note = "not in the prepared split"
            continue
        row.lines, row.where = len(lines.message_ids[r]), where(data, lines, r)
    if missing:
        table.notes.append(f"{missing} flagged sequence(s) are not in {data.root}/{res.name}.parquet (other data?).")
    chosen = [row for row in table.rows[:max(explain_top, 0)] if row.sequence_id in lines.row]
    if explain_top <= 0:
        table.notes.append("Explanations are off (--explain-top 0).")
    elif explainer is None:
        table.notes.append(f"No explanations: {why_not}.")
    elif chosen:
        _explain(chosen, data, lines, explainer, top_lines)
        if len(table.rows) > len(chosen):
            table.notes.append(f"The first {len(chosen)} rows are explained (--explain-top {explain_top}).")
    return _with_raw_text(table, data)


def _explain(chosen: list[FlaggedRow], data: PreparedData, lines: SplitLines, explainer: Explainer,
             top_lines: int) -> None:
    rows = [lines.row[row.sequence_id] for row in chosen]
    texts = [data.texts(lines.message_ids[r]) for r in rows]
    start = time.perf_counter()
    tops = explainer.explain(texts, top_lines)
    log.info("report: explained %d flagged sequences (%d lines) in %.1f s", len(chosen), sum(map(len, texts)),
             time.perf_counter() - start)
    for row, r, seq, top in zip(chosen, rows, texts, tops):
        files, nums = lines.file_index[r], lines.line_numbers[r]
        plan = explainer.windows
        if plan and len(seq) > plan.size:
            row.note = (f"read as {len(plan.spans(len(seq)))} windows of {plan.size} lines (stride {plan.stride}); "
                        "scored as its highest window, explained over all its lines")
        row.top = [TopLine(position=i, file_index=int(files[i]), file=input_name(data, int(files[i])),
                           line=int(nums[i]), contribution=value, message=seq[i], occurrences=seq.count(seq[i]))
                   for i, value in top]


def _with_raw_text(table: FlaggedTable, data: PreparedData) -> FlaggedTable:
    """Fill in the raw text of every explanation line from the input files."""
    wanted: dict[int, set[int]] = {}
    for row in table.rows:
        for t in row.top:
            wanted.setdefault(t.file_index, set()).add(t.line)
    if not wanted:
        return table
    raw = read_raw_lines(data, wanted)
    for row in table.rows:
        for t in row.top:
            t.text = raw.text.get((t.file_index, t.line))
    if raw.notes:
        table.notes.append("Raw lines not shown (masked messages instead) for: " + "; ".join(raw.notes))
    return table
