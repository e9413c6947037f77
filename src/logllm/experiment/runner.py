"""`run_experiment`: plan the tables' cells, run the missing ones in order, one file per finished cell.

Resumable by construction: a cell whose file exists is never run again (after checking that it was
made with the same settings: data, LogLLM config, method parameters); a cell that stops half-way
writes nothing, so the next invocation runs it again (a LogLLM run it was training resumes from its
last checkpoint). A progress line is logged before and after each cell with the count done / total.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from logllm.errors import ConfigError
from logllm.experiment.cells import cell_settings, run_cell
from logllm.experiment.plan import Cell, ExperimentOptions, plan
from logllm.experiment.store import cell_path, finished, log_invocation, write_cell

log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    """What one invocation did: cells planned, already finished before it, and run by it."""

    planned: int
    already_done: int
    ran: int
    notes: list[str]


def plan_tables(tables: Sequence[str], options: ExperimentOptions) -> tuple[list[Cell], list[str]]:
    """The distinct cells of ``tables`` in order (``cost`` shares ``baselines``' cells), and the notes."""
    from logllm.baselines.harness import resolve_methods

    bench = resolve_methods("all")
    cells: list[Cell] = []
    notes: list[str] = []
    for table in tables:
        more, why = plan(table, options, bench)
        cells += [c for c in more if c not in cells]
        notes += why
    return cells, notes


def run_experiment(tables: Sequence[str], options: ExperimentOptions, expdir: str | Path,
                   command: str = "") -> ExperimentResult:
    """Run every missing cell of ``tables`` into ``expdir``; see the module docstring."""
    expdir = Path(expdir)
    options.validate()
    if not tables:
        raise ConfigError("experiment: name at least one table (baselines, cost, inputs, stages, beta, unstable)")
    cells, notes = plan_tables(tables, options)
    for note in notes:
        log.warning("experiment: %s", note)
    done = []
    for cell in cells:
        record = finished(expdir, cell)
        if record is None:
            continue
        now = cell_settings(options, cell)
        if record.get("settings") != now:
            raise ConfigError(f"{cell_path(expdir, cell)}: this cell was made with other settings (data, --config "
                              "or --set) than this command's; use another --out, or delete the cell's file to run it again")
        done.append(cell)
    todo = [c for c in cells if c not in done]
    log_invocation(expdir, {"command": command, "tables": list(tables),
                            "options": {**asdict(options), "config": str(options.config) if options.config else None},
                            "cells": len(cells), "already_done": len(done)})
    log.info("experiment %s: %d cells, %d already finished in %s, %d to run", ",".join(tables), len(cells),
             len(done), expdir, len(todo))
    ran = 0
    for cell in todo:
        position = len(done) + ran + 1
        log.info("experiment [%d/%d]: %s ...", position, len(cells), cell.label())
        try:
            record = run_cell(expdir, cell, options)
        except BaseException:
            log.warning("experiment: stopped in cell %s; %d of %d cells finished (rerun the command to go on)",
                        cell.label(), len(done) + ran, len(cells))
            raise
        write_cell(expdir, cell, record)
        ran += 1
        log.info("experiment [%d/%d]: %s done: P %.3f R %.3f F1 %.3f (train %.1fs, test %.1fs)", position,
                 len(cells), cell.label(), record["precision"], record["recall"], record["f1"],
                 record["train_s"] or 0.0, record["test_s"] or 0.0)
    return ExperimentResult(planned=len(cells), already_done=len(done), ran=ran, notes=notes)
