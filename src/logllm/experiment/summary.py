"""Aggregation: the finished cells of an experiment folder as one table per paper table, and figures.

`summarize_experiment(expdir)` reads every cell file (`store.load_cells`) and writes, in
``EXPDIR/summary/`` (each file atomically):

- ``<table>.csv`` and ``<table>.md`` for each table with cells: per (dataset, method, setting) the mean
  and sample standard deviation (ddof 1; blank with one seed) over seeds of precision, recall, F1,
  ROC-AUC, train and test seconds, with the number of seeds and which; the markdown adds the library
  versions and the commands of ``experiment.json``. ``cost`` (Table III) is made from the
  ``baselines`` cells' seconds.
- ``cells.csv``: every cell, one row each.
- ``beta.png`` (F1 against beta, one line per dataset) and ``unstable_<dataset>.png`` (F1 against the
  injection ratio, one line per method), drawn by `logllm.report.figures`.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import polars as pl

from logllm.baselines.outputs import write_atomic
from logllm.errors import ConfigError
from logllm.experiment.plan import INPUT_MODES, STAGE_VARIANTS
from logllm.experiment.store import SUMMARY, invocations, load_cells

log = logging.getLogger(__name__)

METRICS = ("precision", "recall", "f1", "roc_auc", "train_s", "test_s")
TITLES = {
    "baselines": "Table II: methods compared (precision, recall, F1 of the anomalous class)",
    "cost": "Table III: training and testing seconds per method",
    "inputs": "Table IV: LogLLM's input modes",
    "stages": "Table V: LogLLM's training stages (ablation)",
    "beta": "Fig. 4: LogLLM's minority oversampling beta",
    "unstable": "Unstable logs: F1 on mutated test splits (injection ratio) and a template holdout",
}
_VERSION_KEYS = ("logllm", "python", "torch", "transformers", "peft", "polars", "scikit-learn", "drain3")


def _order(record: dict[str, Any]) -> float:
    setting = record["setting"]
    if setting in INPUT_MODES:
        return INPUT_MODES.index(setting)
    if setting in STAGE_VARIANTS:
        return list(STAGE_VARIANTS).index(setting)
    if record.get("x") is not None:
        return float(record["x"])
    return 1e9  # holdout after the ratios


def cells_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    """One row per cell: its name, seed, x and the metrics (missing values null)."""
    rows = [{"table": r["table"], "dataset": r["dataset"], "method": r["method"], "setting": r["setting"],
             "seed": int(r["seed"]), "x": r.get("x"), "order": _order(r),
             **{m: (None if r.get(m) is None else float(r[m])) for m in METRICS}} for r in records]
    schema = {"table": pl.String, "dataset": pl.String, "method": pl.String, "setting": pl.String, "seed": pl.Int64,
              "x": pl.Float64, "order": pl.Float64, **{m: pl.Float64 for m in METRICS}}
    return pl.DataFrame(rows, schema=schema)


def aggregate(cells: pl.DataFrame) -> pl.DataFrame:
    """Per (table, dataset, method, setting): ``<metric>_mean`` and ``<metric>_sd`` (sample, ddof 1) over
    seeds, ``seeds`` (how many) and ``seed_list``."""
    aggs: list[pl.Expr] = [pl.col("x").first(), pl.len().alias("seeds"),
                           pl.col("seed").sort().cast(pl.String).str.join(",").alias("seed_list")]
    for m in METRICS:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std(ddof=1).alias(f"{m}_sd")]
    return (cells.sort(["table", "dataset", "method", "order", "setting", "seed"])  # seed: sums in one order
            .group_by(["table", "dataset", "method", "setting"], maintain_order=True).agg(aggs))


def _pm(mean: float | None, sd: float | None, digits: int = 3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _versions(records: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, int] = {}
    for r in records:
        v = r.get("versions") or {}
        key = ", ".join(f"{k} {v[k]}" for k in _VERSION_KEYS if k in v)
        seen[key] = seen.get(key, 0) + 1
    return [f"{k} ({n} cells)" if len(seen) > 1 else k for k, n in seen.items()]


def table_markdown(table: str, agg: pl.DataFrame, records: list[dict[str, Any]], commands: list[str]) -> str:
    """One table as markdown: a row per (dataset, method, setting), mean ± sd over the stated seeds."""
    if table == "cost":
        head = ["dataset", "method", "train s", "test s", "seeds"]
        rows = [[r["dataset"], r["method"], _pm(r["train_s_mean"], r["train_s_sd"], 1),
                 _pm(r["test_s_mean"], r["test_s_sd"], 1), f"{r['seeds']} ({r['seed_list']})"]
                for r in agg.iter_rows(named=True)]
    else:
        head = ["dataset", "method", "setting", "precision", "recall", "F1", "ROC-AUC", "seeds"]
        rows = [[r["dataset"], r["method"], r["setting"], *(_pm(r[f"{m}_mean"], r[f"{m}_sd"])
                                                            for m in ("precision", "recall", "f1", "roc_auc")),
                 f"{r['seeds']} ({r['seed_list']})"] for r in agg.iter_rows(named=True)]
    lines = [f"# {TITLES[table]}", "", "Each cell: mean ± sample standard deviation over the seeds in the last column "
             "(no ± with one seed).", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    lines += ["", "Versions: " + "; ".join(_versions(records)), "", "Commands:", ""]
    lines += [f"    {c}" for c in commands] or ["    (none recorded)"]
    return "\n".join(lines) + "\n"


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _write_png(path: Path, b64: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(base64.b64decode(b64)))


def line_figure(series: dict[str, pl.DataFrame], xlabel: str, title: str) -> str:
    """F1 (mean, error bar = sd) against ``x``, one line per entry of ``series``; a base64 PNG."""
    from logllm.report.figures import figure, png

    fig, ax = figure((6.0, 4.0))
    for label, df in series.items():
        df = df.sort("x")
        ax.errorbar(df["x"].to_list(), df["f1_mean"].to_list(), yerr=df["f1_sd"].fill_null(0.0).to_list(),
                    marker="o", capsize=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("F1 (mean ± sd over seeds)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return png(fig)


def summarize_experiment(expdir: str | Path) -> dict[str, Path]:
    """Write the tables and figures of ``expdir`` (see the module docstring); returns name -> path."""
    expdir = Path(expdir)
    records = load_cells(expdir)
    if not records:
        raise ConfigError(f"{expdir}: no finished cell to summarize (run `logllm experiment TABLE --out {expdir}` first)")
    out = expdir / SUMMARY
    out.mkdir(parents=True, exist_ok=True)
    cells = cells_frame(records)
    written: dict[str, Path] = {}
    path = out / "cells.csv"
    write_atomic(path, lambda tmp: cells.drop("order").write_csv(tmp))
    written["cells"] = path
    agg = aggregate(cells)
    calls = invocations(expdir)
    tables = [t for t in TITLES if t != "cost" and t in set(cells["table"])]
    if "baselines" in tables:
        tables.insert(tables.index("baselines") + 1, "cost")
    for table in tables:
        filed = "baselines" if table == "cost" else table
        part = agg.filter(pl.col("table") == filed)
        mine = [r for r in records if r["table"] == filed]
        commands = [c.get("command") or "(library call)" for c in calls if filed in c.get("tables", ())
                    or (filed == "baselines" and "cost" in c.get("tables", ()))]
        path = out / f"{table}.csv"
        write_atomic(path, lambda tmp, part=part: part.write_csv(tmp))
        written[f"{table}.csv"] = path
        path = out / f"{table}.md"
        _write_text(path, table_markdown(table, part, mine, list(dict.fromkeys(commands))))
        written[f"{table}.md"] = path
    beta = agg.filter(pl.col("table") == "beta")
    if len(beta):
        path = out / "beta.png"
        _write_png(path, line_figure({d: beta.filter(pl.col("dataset") == d)
                                      for d in beta["dataset"].unique(maintain_order=True)},
                                     "beta (minority share after oversampling)", "LogLLM F1 against beta (Fig. 4)"))
        written["beta.png"] = path
    unstable = agg.filter((pl.col("table") == "unstable") & pl.col("x").is_not_null())
    for dataset in unstable["dataset"].unique(maintain_order=True):
        part = unstable.filter(pl.col("dataset") == dataset)
        path = out / f"unstable_{dataset}.png"
        _write_png(path, line_figure({m: part.filter(pl.col("method") == m)
                                      for m in part["method"].unique(maintain_order=True)},
                                     "injection ratio (share of test sequences mutated per kind)",
                                     f"F1 on unstable test logs ({dataset})"))
        written[path.name] = path
    log.info("experiment summary: %d cells -> %d files in %s", len(records), len(written), out)
    return written
