"""The bench's output folder: written row by row, atomically, and read back to resume.

After each method x seed finishes, every file is rewritten from all rows so far, each through a
temporary file renamed into place (``os.replace``), so a bench stopped at any moment (Ctrl-C, a
crash, a killed job) leaves complete files holding every finished run:

- ``runs.parquet`` (the record `--resume` reads) and ``runs.csv``: one row per method and seed;
- ``table.csv`` and ``table.md``: mean and sample standard deviation over seeds per method
  (``table.md`` says how many runs are still missing while the bench is incomplete);
- ``bench.json``: the settings that decide the results (`BenchSettings`: the prepared data's
  identity and file checksums, method parameters, ``semi_val``, Drain settings, pooling, LogLLM run
  folders), the planned methods and seeds, timings of the shared preprocessing, versions, and
  ``complete``.

``--resume`` keeps the rows already in the folder and runs only the missing (method, seed) cells;
it refuses when the folder's settings differ from the new invocation's (the message lists each
difference), since mixing rows of two settings would make a table that no single run produced.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from logllm.data.dataset import PreparedData
from logllm.data.manifest import data_identity
from logllm.errors import ConfigError

log = logging.getLogger(__name__)

RUNS_PARQUET = "runs.parquet"
RUNS_CSV = "runs.csv"
TABLE_CSV = "table.csv"
TABLE_MD = "table.md"
META = "bench.json"
FILES = (RUNS_PARQUET, RUNS_CSV, TABLE_CSV, TABLE_MD, META)

Cell = tuple[str, int]  # (method, seed)


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists, paths strings), for comparisons."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class BenchSettings:
    """What decides a bench's results; two invocations with equal settings may share one folder."""

    data: dict[str, Any]
    """`logllm.data.manifest.data_identity` of the prepared folder plus the sha256 of its tables."""
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Method parameters (``--set``)."""
    semi_val: str = "labeled"
    drain: dict[str, Any] = field(default_factory=dict)
    pooling: str = "mean"
    logllm_runs: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, data: PreparedData, params: Mapping[str, Mapping[str, object]], semi_val: str,
           drain: Mapping[str, Any], pooling: str, logllm_runs: Sequence[str | Path]) -> BenchSettings:
        files = {name: (rec or {}).get("sha256") for name, rec in (data.manifest.get("files") or {}).items()}
        return cls(data=_plain({**data_identity(data.manifest), "files": files}), params=_plain(dict(params)),
                   semi_val=semi_val, drain=_plain(dict(drain)), pooling=pooling,
                   logllm_runs=[str(Path(r).resolve()) for r in logllm_runs])

    def differences(self, earlier: Mapping[str, Any]) -> list[str]:
        """How ``earlier`` (settings read from a bench.json) differs from these, in words."""
        out = []
        now = asdict(self)
        for key in ("params", "semi_val", "drain", "pooling", "logllm_runs"):
            if _plain(earlier.get(key)) != now[key]:
                out.append(f"{key}: folder {earlier.get(key)!r}, now {now[key]!r}")
        before = earlier.get("data") or {}
        for key in sorted(set(before) | set(now["data"])):
            if before.get(key) != now["data"].get(key):
                out.append(f"data {key}: folder {before.get(key)!r}, now {now['data'].get(key)!r}")
        return out


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then rename the temporary file over ``path`` (same folder, one step)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def summarize(runs: pl.DataFrame) -> pl.DataFrame:
    """Mean and sample standard deviation over seeds, per method, in the order of the rows."""
    aggs = []
    for col in ("precision", "recall", "f1", "roc_auc"):
        aggs += [pl.col(col).mean().alias(f"{col}_mean"), pl.col(col).std(ddof=1).alias(f"{col}_std")]
    aggs += [pl.col("train_s").mean(), pl.col("test_s").mean(), pl.len().alias("seeds"),
             pl.col("n_train").first(), pl.col("n_test").first()]
    return runs.group_by(["method", "supervision"], maintain_order=True).agg(aggs)


def to_markdown(table: pl.DataFrame) -> str:
    """The summary as a Markdown table: P / R / F1 as mean ± std over seeds, then ROC-AUC and seconds."""

    def pm(mean: float | None, std: float | None) -> str:
        if mean is None or np.isnan(mean):
            return "-"
        return f"{mean:.3f}" if std is None or np.isnan(std) else f"{mean:.3f} ± {std:.3f}"

    lines = ["| method | supervision | precision | recall | F1 | ROC-AUC | train s | test s | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.iter_rows(named=True):
        lines.append(f"| {r['method']} | {r['supervision']} | {pm(r['precision_mean'], r['precision_std'])} | "
                     f"{pm(r['recall_mean'], r['recall_std'])} | {pm(r['f1_mean'], r['f1_std'])} | "
                     f"{pm(r['roc_auc_mean'], r['roc_auc_std'])} | {r['train_s']:.1f} | {r['test_s']:.1f} | "
                     f"{r['seeds']} |")
    return "\n".join(lines) + "\n"


class BenchOutputs:
    """One bench output folder: `start` (fresh or resumed), `add` after each run, `finish` at the end.

    ``cells`` are the planned (method, seed) runs in the order they run; rows are kept in that order
    (rows of an earlier invocation that this one does not plan stay, after them), so a resumed bench
    writes the same table as one that was never stopped.
    """

    def __init__(self, out: str | Path, settings: BenchSettings, cells: Sequence[Cell], meta: Mapping[str, Any]):
        self.out = Path(out)
        self.settings = settings
        self.cells = list(cells)
        self.meta = dict(meta)
        self.rows: list[dict[str, Any]] = []
        self.preprocessing: dict[str, float] = {}
        self.templates: int | None = None

    # ------------------------------------------------------------------ start

    def start(self, resume: bool) -> set[Cell]:
        """Prepare the folder; returns the cells already done (empty unless ``resume``)."""
        meta_path = self.out / META
        if not resume:
            if (self.out / RUNS_PARQUET).is_file() or (self.out / RUNS_CSV).is_file():
                log.warning("bench: %s holds the results of an earlier bench; they are replaced "
                            "(pass --resume to keep them and run only what is missing)", self.out)
            for name in FILES:
                (self.out / name).unlink(missing_ok=True)
            self.out.mkdir(parents=True, exist_ok=True)
            self._write()
            return set()
        if not meta_path.is_file():
            if (self.out / RUNS_CSV).is_file():
                raise ConfigError(f"--resume: {self.out} has {RUNS_CSV} but no {META}; it cannot be checked "
                                  "against this invocation, so run without --resume (it will be replaced)")
            log.info("bench: --resume: nothing to resume in %s; starting a new bench", self.out)
            return self.start(resume=False)
        try:
            earlier = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"--resume: {meta_path} is unreadable ({err}); run without --resume") from err
        if "settings" not in earlier:
            raise ConfigError(f"--resume: {meta_path} was written by a logllm without resumable benches; "
                              "run without --resume (the folder will be replaced)")
        diffs = self.settings.differences(earlier["settings"])
        if diffs:
            raise ConfigError(f"--resume: {self.out} holds a bench of other data or options; "
                              + "; ".join(diffs)
                              + ". Resume with the same --data/--set/--semi-val/--pooling/--drain-*/--logllm-run, "
                                "or pick another --out")
        if earlier.get("threads") is not None and earlier.get("threads") != self.meta.get("threads"):
            log.warning("bench: --resume: earlier rows ran with %s torch thread(s), these with %s "
                        "(timings differ; results may differ in the last digits)", earlier.get("threads"),
                        self.meta.get("threads"))
        self.preprocessing = dict(earlier.get("preprocessing_s") or {})
        self.templates = earlier.get("templates")
        self.rows = self._read_rows()
        done = {(r["method"], int(r["seed"])) for r in self.rows}
        planned = [c for c in self.cells if c in done]
        extra = [c for c in done if c not in set(self.cells)]
        log.info("bench: --resume: %d of %d planned runs already in %s; %d to run%s", len(planned),
                 len(self.cells), self.out, len(self.cells) - len(planned),
                 f" ({len(extra)} earlier runs not planned now are kept)" if extra else "")
        self._write()
        return done

    def _read_rows(self) -> list[dict[str, Any]]:
        path = self.out / RUNS_PARQUET
        if not path.is_file():
            return []
        try:
            runs = pl.read_parquet(path)
        except (OSError, pl.exceptions.PolarsError) as err:
            raise ConfigError(f"--resume: {path} is unreadable ({err}); run without --resume") from err
        missing = {"method", "supervision", "seed", "train_s", "test_s"} - set(runs.columns)
        if missing:
            raise ConfigError(f"--resume: {path} lacks column(s) {sorted(missing)}; run without --resume")
        return runs.to_dicts()

    # ------------------------------------------------------------------ progress

    def add(self, row: Mapping[str, Any], preprocessing: Mapping[str, float], templates: int | None) -> None:
        """Record one finished run and rewrite every file."""
        self.rows.append(dict(row))
        self.preprocessing.update(preprocessing)
        if templates is not None:
            self.templates = templates
        self._write()

    def finish(self, preprocessing: Mapping[str, float], templates: int | None) -> pl.DataFrame:
        """Write the final files; returns the summary table."""
        self.preprocessing.update(preprocessing)
        if templates is not None:
            self.templates = templates
        self._write()
        log.info("bench: wrote %s (%s)", self.out, ", ".join(FILES))
        return summarize(self.runs())

    # ------------------------------------------------------------------ files

    def runs(self) -> pl.DataFrame:
        """All rows so far, planned cells first in run order, then any earlier unplanned ones."""
        rank = {c: i for i, c in enumerate(self.cells)}
        ordered = sorted(range(len(self.rows)), key=lambda i: (
            rank.get((self.rows[i]["method"], int(self.rows[i]["seed"])), len(rank) + i)))
        return pl.DataFrame([self.rows[i] for i in ordered], infer_schema_length=None) if self.rows else pl.DataFrame()

    def done(self) -> set[Cell]:
        return {(r["method"], int(r["seed"])) for r in self.rows}

    def _write(self) -> None:
        runs = self.runs()
        missing = [c for c in self.cells if c not in self.done()]
        settings = asdict(self.settings)
        # the options also at the top level, where benches before `--resume` wrote them
        meta = {**self.meta, **{k: v for k, v in settings.items() if k not in ("data", "logllm_runs")},
                "settings": settings, "templates": self.templates,
                "preprocessing_s": self.preprocessing, "runs_done": len(self.rows),
                "runs_missing": [list(c) for c in missing], "complete": not missing}
        write_atomic(self.out / META, lambda p: p.write_text(json.dumps(meta, indent=2, default=str) + "\n"))
        if runs.is_empty():
            return
        table = summarize(runs)
        write_atomic(self.out / RUNS_PARQUET, runs.write_parquet)
        write_atomic(self.out / RUNS_CSV, runs.write_csv)
        write_atomic(self.out / TABLE_CSV, table.write_csv)
        write_atomic(self.out / TABLE_MD, lambda p: p.write_text(self._markdown(table, missing)))

    def _markdown(self, table: pl.DataFrame, missing: list[Cell]) -> str:
        splits = self.meta.get("splits") or {}
        counts = ", ".join(f"{k} {v['sequences']} ({v['anomalous']} anomalous)" for k, v in splits.items())
        templates = (f"{self.templates - 1} Drain templates from the training split" if self.templates
                     else "no Drain templates (no method run used them)")
        header = [f"Data: `{self.meta.get('data')}` ({counts}); {templates}.",
                  f"Seeds: {', '.join(map(str, self.meta.get('seeds') or []))}; torch threads per method: "
                  f"{self.meta.get('threads')}; ± is the sample standard deviation over seeds.", ""]
        if self.meta.get("command"):
            header.insert(0, f"Command: `{self.meta['command']}`")
        if missing:
            header.insert(0, f"**Incomplete: {len(missing)} of {len(self.cells)} runs missing** "
                             f"({', '.join(f'{m} seed {s}' for m, s in missing[:6])}"
                             f"{', ...' if len(missing) > 6 else ''}); rerun with `--resume` to finish.\n")
        return "\n".join(header) + "\n" + to_markdown(table)


__all__ = ["BenchOutputs", "BenchSettings", "summarize", "to_markdown", "write_atomic"]
