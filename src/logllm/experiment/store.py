"""The experiment folder: one JSON file per finished cell, written atomically, and the command log.

Layout of ``EXPDIR``::

    cells/<table>/<dataset>/<method>/<setting>/seed<N>.json   one finished cell (`write_cell`)
    runs/<dataset>/seed<N>/<key>/                              LogLLM run folders (shared by cells)
    data/<dataset>/seed<N>/<ratio=R | holdout=K>/              mutated prepared folders
    experiment.json                                            every invocation: command, tables, options
    summary/                                                   tables and figures (`logllm.experiment.summary`)

A cell file exists only once its cell has finished: it is written to a temporary file and renamed
into place, so an interrupted cell leaves nothing (a stray ``.seed<N>.json.tmp`` is ignored).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from logllm.baselines.outputs import write_atomic
from logllm.errors import ConfigError
from logllm.experiment.plan import Cell

log = logging.getLogger(__name__)

CELLS = "cells"
RUNS = "runs"
DATA = "data"
SUMMARY = "summary"
LOG = "experiment.json"


def cell_path(expdir: str | Path, cell: Cell) -> Path:
    return Path(expdir) / CELLS / cell.table / cell.dataset / cell.method / cell.setting / f"seed{cell.seed}.json"


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, record: Any) -> None:
    """``record`` as indented JSON at ``path``, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_plain(record), indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_cell(expdir: str | Path, cell: Cell, record: dict[str, Any]) -> Path:
    path = cell_path(expdir, cell)
    write_json(path, record)
    return path


def read_cell(path: Path) -> dict[str, Any]:
    """A cell file; a damaged one is an error naming it (delete it to run the cell again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not a readable cell file ({err}); delete it to run that cell again") from err
    if not isinstance(record, dict) or "f1" not in record:
        raise ConfigError(f"{path}: not a cell file (no 'f1'); delete it to run that cell again")
    return record


def finished(expdir: str | Path, cell: Cell) -> dict[str, Any] | None:
    """The cell's record when it has finished, else None."""
    path = cell_path(expdir, cell)
    return read_cell(path) if path.is_file() else None


def load_cells(expdir: str | Path) -> list[dict[str, Any]]:
    """Every finished cell of the folder, in path order."""
    root = Path(expdir) / CELLS
    return [read_cell(p) for p in sorted(root.glob("*/*/*/*/seed*.json"))]


def log_invocation(expdir: str | Path, entry: dict[str, Any]) -> None:
    """Append one invocation (command, tables, options, start time) to ``experiment.json``."""
    path = Path(expdir) / LOG
    runs = json.loads(path.read_text())["invocations"] if path.is_file() else []
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
    write_json(path, {"invocations": runs})


def invocations(expdir: str | Path) -> list[dict[str, Any]]:
    path = Path(expdir) / LOG
    return json.loads(path.read_text())["invocations"] if path.is_file() else []
