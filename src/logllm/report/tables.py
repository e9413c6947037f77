"""HTML pieces of the report: style, figures, key/value tables (nested values as nested tables),
the message association, flagged sequences and bench tables, and the one-class warning banner.

Every text from a file or a log line is escaped; the page holds no script and no external URL.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import polars as pl

from logllm.metrics import classification_metrics
from logllm.report.flagged import FlaggedTable
from logllm.report.results import BenchTable, SplitResult

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:0}
img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
td table{margin:0;font-size:1em}
code{font-size:.95em}.muted{color:#777}
.warning{background:#fff3cd;border:1px solid #e0a800;border-left:6px solid #e0a800;padding:.7em 1em;margin:1em 0}
.topline{margin:.15em 0;white-space:pre-wrap;word-break:break-all}
td.where{white-space:nowrap}.topline .ln{color:#555;font-variant-numeric:tabular-nums}.topline .c{color:#b02a37}
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def img(b64: str, alt: str) -> str:
    """A figure with its PNG inline (``data:`` URL)."""
    return f'<figure><img class="figure" alt="{esc(alt)}" src="data:image/png;base64,{b64}"></figure>'


def value_html(value: Any, depth: int = 0) -> str:
    """A JSON-like value as HTML: a dict as a nested key/value table, a list of dicts as a table with
    one column per key, other lists joined by commas, floats to 6 significant digits."""
    if isinstance(value, dict):
        return kv_table(value, depth + 1) if value else '<span class="muted">(empty)</span>'
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            return records_table(value, depth + 1)
        return esc(", ".join(_scalar(v) for v in value)) if value else '<span class="muted">(none)</span>'
    return esc(_scalar(value))


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "-"
    return str(value)


def kv_table(d: dict[str, Any], depth: int = 0) -> str:
    """A dict as a two-column table; nested dicts and lists of dicts become nested tables."""
    rows = [f"<tr><th>{esc(k)}</th><td>{value_html(v, depth)}</td></tr>" for k, v in d.items()]
    return "<table>" + "".join(rows) + "</table>"


def records_table(rows: list[dict[str, Any]], depth: int = 0) -> str:
    """A list of dicts as a table with one column per key (in first-seen order)."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "<tr>" + "".join(f"<th>{esc(k)}</th>" for k in keys) + "</tr>"
    body = ["<tr>" + "".join(f"<td>{value_html(r.get(k), depth)}</td>" for k in keys) + "</tr>" for r in rows]
    return "<table>" + head + "".join(body) + "</table>"


def summary(res: SplitResult) -> dict[str, Any]:
    """Counts and precision / recall / F1 / accuracy at the threshold, over the labeled sequences."""
    y, s = res.labeled()
    m = classification_metrics(y, s, res.threshold)
    return {
        "sequences": len(res.scores), "labeled": int(len(y)), "anomalous": int((y == 1).sum()),
        "flagged": int(res.predictions.sum()), "threshold": res.threshold,
        **{k: m[k] for k in ("precision", "recall", "f1", "accuracy")},
    }


def one_class_banner(res: SplitResult) -> str:
    """A warning when every sequence of the split gets the same prediction (else ``""``)."""
    which = res.one_class()
    if which is None:
        return ""
    lo, hi = float(np.min(res.scores)), float(np.max(res.scores))
    if which == "normal":
        what = "nothing is flagged: the detector would never raise an alert on these logs"
    else:
        what = "everything is flagged: every sequence would raise an alert"
    return (f'<div class="warning" role="alert"><strong>Warning: every one of the {len(res.scores):,} sequences '
            f'of split <code>{esc(res.name)}</code> is predicted {which}</strong>: {what}. Scores range from '
            f"{lo:.4g} to {hi:.4g}; the threshold is {res.threshold:.4g}. Check the threshold "
            "(<code>threshold.json</code>, chosen on validation data) and whether the model learned the classes "
            "(training loss below; a model that gives every sequence the same answer has collapsed).</div>")


def assoc_table(assoc: list[dict]) -> str:
    if not assoc:
        return '<p class="muted">Not available: pass <code>--data</code> with the prepared folder.</p>'
    head = ("<tr><th>#</th><th>masked message</th><th>in anomalous seq.</th><th>in normal seq.</th>"
            "<th>ratio</th></tr>")
    rows = [
        f"<tr><td class=num>{i + 1}</td><td><code>{esc(r['text'])}</code></td>"
        f"<td class=num>{r['anomalous_sequences']:,} ({r['p_anomalous']:.1%})</td>"
        f"<td class=num>{r['normal_sequences']:,} ({r['p_normal']:.1%})</td>"
        f"<td class=num>{r['ratio']:.3g}</td></tr>"
        for i, r in enumerate(assoc)
    ]
    return "<table>" + head + "".join(rows) + "</table>"


_LABEL = {1: "anomalous", 0: "normal", -1: "-"}


def flagged_html(table: FlaggedTable) -> str:
    """The flagged sequences of a split as a table (``id="flagged-<split>"``, a ``data-sequence``
    attribute per row), each with its explanation lines: line number, contribution, raw text."""
    shown = len(table.rows)
    parts = [f'<p>{table.flagged:,} sequences flagged (score &ge; threshold); '
             f'{"the " + str(shown) + " highest scores" if shown < table.flagged else "all"} shown.</p>']
    parts += [f'<p class="muted">{esc(n)}</p>' for n in table.notes]
    if not table.rows:
        return "".join(parts)
    parts.append(f'<table id="flagged-{esc(table.split)}"><tr><th>#</th><th>sequence</th><th>score</th>'
                 "<th>label</th><th>lines</th><th>where</th><th>top lines (contribution: drop in score without "
                 "the line)</th></tr>")
    for row in table.rows:
        tops = "".join(
            f'<div class="topline"><span class="ln">{esc(t.file)}:{t.line}</span> '
            f'<span class="c">{t.contribution:+.3g}</span>'
            f'{f" (&times;{t.occurrences})" if t.occurrences > 1 else ""} '
            f"<code>{esc(t.text if t.text is not None else t.message)}</code></div>"
            for t in row.top
        )
        note = f'<div class="muted">{esc(row.note)}</div>' if row.note else ""
        parts.append(
            f'<tr data-sequence="{esc(row.sequence_id)}"><td class=num>{row.rank}</td>'
            f"<td><code>{esc(row.sequence_id)}</code></td><td class=num>{row.score:.4g}</td>"
            f"<td>{_LABEL.get(row.label, str(row.label))}</td>"
            f"<td class=num>{'' if row.lines is None else f'{row.lines:,}'}</td>"
            f"<td class=where>{esc(row.where or '')}</td><td>{tops}{note}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


def bench_html(bench: BenchTable) -> str:
    """A bench ``table.csv`` as an HTML table: ``X_mean`` / ``X_std`` column pairs shown as one
    ``mean ± std`` column, other columns as they are."""
    t: pl.DataFrame = bench.table
    cols: list[tuple[str, str | None]] = []
    for c in t.columns:
        if c.endswith("_std") and f"{c[:-4]}_mean" in t.columns:
            continue
        if c.endswith("_mean"):
            std = f"{c[:-5]}_std"
            cols.append((c, std if std in t.columns else None))
        else:
            cols.append((c, None))
    head = "<tr>" + "".join(f"<th>{esc(c[:-5] if c.endswith('_mean') else c)}</th>" for c, _ in cols) + "</tr>"
    rows = []
    for r in t.iter_rows(named=True):
        cells = []
        for c, std in cols:
            v = r[c]
            if isinstance(v, float):
                text = "-" if math.isnan(v) else f"{v:.3f}"
                if std is not None and isinstance(r[std], float) and not math.isnan(r[std]) and text != "-":
                    text += f" ± {r[std]:.3f}"
                cells.append(f"<td class=num>{text}</td>")
            else:
                cells.append(f"<td>{esc(_scalar(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    command = bench.meta.get("command")
    where = f'<p class="muted">From <code>{esc(bench.folder)}</code>'
    where += f"; command <code>{esc(command)}</code>" if command else ""
    return where + ".</p><table id=\"bench\">" + head + "".join(rows) + "</table>"
