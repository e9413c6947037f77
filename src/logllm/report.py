"""One self-contained HTML page describing a run: curves, histograms, confusion matrix, training
loss, the messages most associated with anomalies, configuration and versions.

Reads the run folder (docs/architecture.md, contract 2)::

    RUN/eval/<split>/scores.parquet   sequence_id, label, score, pred      (one section per split)
    RUN/eval/<split>/metrics.json     shown as a table; its threshold is used when present
    RUN/threshold.json                the decision threshold otherwise
    RUN/train_log.jsonl               training loss per stage
    RUN/config.json, RUN/data_manifest.json

With ``--data DIR`` (the prepared folder the run was evaluated on) it also ranks the masked messages
by how much more often they occur in anomalous than in normal sequences, and it can score a split
whose ``scores.parquet`` is missing (this needs the model).

Figures are drawn with matplotlib's Agg backend and embedded as base64 PNG, so the file opens
anywhere without network access.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from logllm.errors import DataError
from logllm.metrics import classification_metrics

log = logging.getLogger(__name__)

SCORES = "scores.parquet"
METRICS = "metrics.json"


@dataclass
class SplitResult:
    """Scores of one evaluated split, with labels (-1 where unknown) and its threshold."""

    name: str
    sequence_ids: list[str]
    labels: np.ndarray
    scores: np.ndarray
    threshold: float
    metrics: dict[str, Any]


# -- loading -------------------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err


def run_threshold(run_dir: Path) -> float | None:
    """The run's decision threshold from ``threshold.json`` (None when the file is absent)."""
    path = run_dir / "threshold.json"
    if not path.is_file():
        return None
    data = _read_json(path)
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
    metrics = _read_json(folder / METRICS) if (folder / METRICS).is_file() else {}
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


# -- figures -------------------------------------------------------------------------------------

def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(figsize=(5.2, 4.0)):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def fig_pr(res: SplitResult) -> str:
    from sklearn.metrics import precision_recall_curve

    fig, ax = _figure()
    y, s = _labeled(res)
    if len(np.unique(y)) < 2:
        _no_data(ax, "precision-recall needs both classes among the labeled sequences")
    else:
        p, r, _ = precision_recall_curve(y, s)
        m = classification_metrics(y, s, res.threshold)
        ax.plot(r, p, drawstyle="steps-post", label=f"AP = {m['pr_auc']:.4f}")
        tp, fp, fn = m["tp"], m["fp"], m["fn"]
        if tp + fp and tp + fn:
            ax.plot([tp / (tp + fn)], [tp / (tp + fp)], "o", color="C3",
                    label=f"threshold {res.threshold:.4g}")
        ax.axhline(y.mean(), color="grey", lw=0.8, ls=":", label=f"base rate {y.mean():.3f}")
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="lower left")
    ax.set_title(f"Precision-recall ({res.name})")
    return _png(fig)


def fig_roc(res: SplitResult) -> str:
    from sklearn.metrics import roc_curve

    fig, ax = _figure()
    y, s = _labeled(res)
    if len(np.unique(y)) < 2:
        _no_data(ax, "ROC needs both classes among the labeled sequences")
    else:
        fpr, tpr, _ = roc_curve(y, s)
        m = classification_metrics(y, s, res.threshold)
        ax.plot(fpr, tpr, label=f"AUC = {m['roc_auc']:.4f}")
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        tp, fp, fn, tn = m["tp"], m["fp"], m["fn"], m["tn"]
        if (fp + tn) and (tp + fn):
            ax.plot([fp / (fp + tn)], [tp / (tp + fn)], "o", color="C3", label=f"threshold {res.threshold:.4g}")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(loc="lower right")
    ax.set_title(f"ROC ({res.name})")
    return _png(fig)


def fig_histogram(res: SplitResult) -> str:
    fig, ax = _figure((6.4, 4.0))
    bins = np.linspace(0.0, 1.0, 41)
    groups = [("normal", res.labels == 0, "C0"), ("anomalous", res.labels == 1, "C3"),
              ("unlabeled", res.labels < 0, "C7")]
    for name, mask, color in groups:
        if mask.any():
            ax.hist(np.clip(res.scores[mask], 0, 1), bins=bins, alpha=0.6, color=color,
                    label=f"{name} ({int(mask.sum())})")
    ax.axvline(res.threshold, color="k", ls="--", lw=1.2, label=f"threshold {res.threshold:.4g}")
    ax.set_yscale("log")
    ax.set_xlabel("score = P(anomalous)")
    ax.set_ylabel("sequences (log scale)")
    ax.set_title(f"Scores per class ({res.name})")
    ax.legend()
    return _png(fig)


def fig_confusion(res: SplitResult) -> str:
    fig, ax = _figure((4.2, 3.8))
    y, s = _labeled(res)
    m = classification_metrics(y, s, res.threshold)
    mat = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    ax.imshow(mat, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{mat[i, j]:,}", ha="center", va="center",
                    color="white" if mat[i, j] > mat.max() / 2 else "black", fontsize=13)
    ax.set_xticks([0, 1], ["normal", "anomalous"])
    ax.set_yticks([0, 1], ["normal", "anomalous"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion at {res.threshold:.4g} ({res.name})")
    return _png(fig)


def fig_training(rows: list[dict]) -> str:
    fig, ax = _figure((7.0, 4.0))
    steps = [r for r in rows if isinstance(r.get("loss"), (int, float)) and "event" not in r]
    vals = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
    if not steps:
        _no_data(ax, "no training log (train_log.jsonl) with losses")
    else:
        def x_of(i: int, r: dict) -> float:
            return float(r["step"]) if isinstance(r.get("step"), (int, float)) else float(i)

        stages: dict[str, list[tuple[float, float]]] = {}
        for i, r in enumerate(steps):  # rows are in training order
            stages.setdefault(str(r.get("stage", "?")), []).append((x_of(i, r), float(r["loss"])))
        for i, (stage, pts) in enumerate(stages.items()):
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1.0, color=f"C{i % 10}", label=f"stage {stage}",
                    marker="o" if len(pts) < 30 else None, ms=4)  # a short stage is still visible
        if vals:
            ax.plot([x_of(i, r) for i, r in enumerate(vals)], [r["val_loss"] for r in vals], "k.", ms=6,
                    label="validation loss")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("loss")
        if min(float(r["loss"]) for r in steps) > 0:
            ax.set_yscale("log")
        ax.legend()
    ax.set_title("Training loss per stage")
    return _png(fig)


def fig_messages(assoc: list[dict], top: int = 12) -> str:
    fig, ax = _figure((7.5, 0.45 * max(3, min(top, len(assoc))) + 1))
    if not assoc:
        _no_data(ax, "no message association (needs --data with both classes)")
    else:
        rows = assoc[:top][::-1]
        labels = [(r["text"][:60] + "...") if len(r["text"]) > 60 else r["text"] for r in rows]
        ax.barh(range(len(rows)), [r["ratio"] for r in rows], color="C3")
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("share in anomalous / share in normal sequences (smoothed)")
    ax.set_title("Messages most associated with anomalies")
    return _png(fig)


def _labeled(res: SplitResult) -> tuple[np.ndarray, np.ndarray]:
    mask = res.labels >= 0
    return res.labels[mask], res.scores[mask]


# -- page ----------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:0}
img{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em;max-height:40em}
code{font-size:.95em}.muted{color:#777}
"""


def _img(b64: str, alt: str) -> str:
    return (f'<figure><img class="figure" alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{b64}"></figure>')


def _kv_table(d: dict[str, Any]) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, float):
            v = f"{v:.6g}"
        elif isinstance(v, (dict, list)):
            v = json.dumps(v, default=str)
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _summary(res: SplitResult) -> dict[str, Any]:
    y, s = _labeled(res)
    m = classification_metrics(y, s, res.threshold)
    return {
        "sequences": len(res.scores), "labeled": int(len(y)), "anomalous": int((y == 1).sum()),
        "threshold": res.threshold, **{k: m[k] for k in ("precision", "recall", "f1", "accuracy")},
    }


def _assoc_table(assoc: list[dict]) -> str:
    if not assoc:
        return '<p class="muted">Not available: pass <code>--data</code> with the prepared folder.</p>'
    head = ("<tr><th>#</th><th>masked message</th><th>in anomalous seq.</th><th>in normal seq.</th>"
            "<th>ratio</th></tr>")
    rows = [
        f"<tr><td class=num>{i + 1}</td><td><code>{html.escape(r['text'])}</code></td>"
        f"<td class=num>{r['anomalous_sequences']:,} ({r['p_anomalous']:.1%})</td>"
        f"<td class=num>{r['normal_sequences']:,} ({r['p_normal']:.1%})</td>"
        f"<td class=num>{r['ratio']:.3g}</td></tr>"
        for i, r in enumerate(assoc)
    ]
    return "<table>" + head + "".join(rows) + "</table>"


def discover_splits(run_dir: Path) -> list[str]:
    """Splits with an ``eval/<split>/scores.parquet`` in the run, test first."""
    eval_dir = run_dir / "eval"
    found = sorted(p.parent.name for p in eval_dir.glob(f"*/{SCORES}")) if eval_dir.is_dir() else []
    return sorted(found, key=lambda s: (s != "test", s))


def _score_missing(run_dir: Path, data_dir: Path, split: str) -> None:
    """Score a split the run was not evaluated on, through `logllm.evaluate` (needs the model)."""
    try:
        from logllm import evaluate
    except ImportError as err:  # pragma: no cover - depends on the model package being present
        raise DataError(f"{run_dir}: eval/{split} is missing and logllm.evaluate is unavailable ({err})") from err
    fn = getattr(evaluate, "evaluate_run", None) or getattr(evaluate, "evaluate", None)
    if fn is None:
        raise DataError(f"{run_dir}: eval/{split} is missing; run `logllm evaluate {run_dir} --data {data_dir} "
                        f"--split {split}` first")
    log.info("scoring split %s of %s with the run's model", split, data_dir)
    fn(run_dir, data_dir, split=split)


def build_report(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    splits: list[str] | None = None,
    out: str | Path | None = None,
    top_messages: int = 20,
) -> Path:
    """Write the HTML report of a run (default ``RUN/report.html``) and return its path."""
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

    config = _read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    manifest = (_read_json(run_dir / "data_manifest.json")
                if (run_dir / "data_manifest.json").is_file() else {})
    train_rows = read_train_log(run_dir)
    assoc = message_association(data_path, top=top_messages) if data_path is not None else []

    from logllm.versions import library_versions

    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>logllm report: {html.escape(run_dir.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>logllm report: <code>{html.escape(str(run_dir))}</code></h1>",
        f'<p class="muted">written {_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}</p>',
    ]
    for res in results:
        parts.append(f"<h2>Split <code>{html.escape(res.name)}</code></h2>")
        parts.append("<h3>Summary at the threshold</h3>" + _kv_table(_summary(res)))
        if res.metrics:
            parts.append("<h3>metrics.json</h3>" + _kv_table(res.metrics))
        parts.append('<div class="figs">')
        parts.append(_img(fig_pr(res), f"precision-recall curve, {res.name}"))
        parts.append(_img(fig_roc(res), f"ROC curve, {res.name}"))
        parts.append(_img(fig_histogram(res), f"score histograms, {res.name}"))
        parts.append(_img(fig_confusion(res), f"confusion matrix, {res.name}"))
        parts.append("</div>")
    parts.append("<h2>Training</h2>")
    parts.append(f'<div class="figs">{_img(fig_training(train_rows), "training loss per stage")}</div>')
    n_steps = sum(1 for r in train_rows if isinstance(r.get("loss"), (int, float)) and "event" not in r)
    parts.append(f"<p class=muted>{n_steps} logged optimiser steps in train_log.jsonl</p>")
    parts.append("<h2>Messages most associated with anomalies</h2>")
    if assoc:
        parts.append(f'<div class="figs">{_img(fig_messages(assoc), "messages most associated with anomalies")}</div>')
    parts.append(_assoc_table(assoc))
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(config, indent=2, default=str)) + "</pre>")
    if manifest:
        shown = {k: v for k, v in manifest.items() if k != "versions"}
        parts.append("<h2>Data manifest</h2><pre>" + html.escape(json.dumps(shown, indent=2, default=str)) + "</pre>")
    versions = {"this report": library_versions()}
    for name, src in (("training (config.json)", config), ("data (data_manifest.json)", manifest)):
        if isinstance(src, dict) and isinstance(src.get("versions"), dict):
            versions[name] = src["versions"]
    parts.append("<h2>Versions</h2>")
    for name, v in versions.items():
        parts.append(f"<h3>{html.escape(name)}</h3>" + _kv_table(v))
    parts.append("</body></html>")

    out_path = Path(out) if out is not None else run_dir / "report.html"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(parts), encoding="utf-8")
    log.info("wrote %s (%d splits, %d figures)", out_path, len(results),
             4 * len(results) + 1 + (1 if assoc else 0))
    return out_path
