"""The report's figures, drawn with matplotlib's Agg backend and returned as base64 PNG (so the page
embeds them and opens anywhere without network access).

Each function takes the data it draws and returns the PNG as a base64 string; none reads files.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np

from logllm.metrics import classification_metrics
from logllm.report.results import SplitResult


def png(fig) -> str:
    """The figure as a base64 PNG (100 dpi); the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figure(figsize=(5.2, 4.0)):
    """A new ``(fig, ax)`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def no_data(ax, text: str) -> None:
    """Write ``text`` in an empty axes instead of a plot."""
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def fig_pr(res: SplitResult) -> str:
    from sklearn.metrics import precision_recall_curve

    fig, ax = figure()
    y, s = res.labeled()
    if len(np.unique(y)) < 2:
        no_data(ax, "precision-recall needs both classes among the labeled sequences")
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
    return png(fig)


def fig_roc(res: SplitResult) -> str:
    from sklearn.metrics import roc_curve

    fig, ax = figure()
    y, s = res.labeled()
    if len(np.unique(y)) < 2:
        no_data(ax, "ROC needs both classes among the labeled sequences")
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
    return png(fig)


def fig_histogram(res: SplitResult) -> str:
    fig, ax = figure((6.4, 4.0))
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
    return png(fig)


def fig_confusion(res: SplitResult) -> str:
    fig, ax = figure((4.2, 3.8))
    y, s = res.labeled()
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
    return png(fig)


def fig_training(rows: list[dict]) -> str:
    fig, ax = figure((7.0, 4.0))
    steps = [r for r in rows if isinstance(r.get("loss"), (int, float)) and "event" not in r]
    vals = [r for r in rows if isinstance(r.get("val_loss"), (int, float))]
    if not steps:
        no_data(ax, "no training log (train_log.jsonl) with losses")
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
    return png(fig)


def fig_messages(assoc: list[dict], top: int = 12) -> str:
    fig, ax = figure((7.5, 0.45 * max(3, min(top, len(assoc))) + 1))
    if not assoc:
        no_data(ax, "no message association (needs --data with both classes)")
    else:
        rows = assoc[:top][::-1]
        labels = [(r["text"][:60] + "...") if len(r["text"]) > 60 else r["text"] for r in rows]
        ax.barh(range(len(rows)), [r["ratio"] for r in rows], color="C3")
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("share in anomalous / share in normal sequences (smoothed)")
    ax.set_title("Messages most associated with anomalies")
    return png(fig)


def fig_timeline(res: SplitResult, x: np.ndarray, xlabel: str,
                 boundaries: Sequence[tuple[float, str]] = ()) -> str:
    """Score per sequence against ``x`` (its first line's position, or its order in the split).

    Flagged sequences (``score >= threshold``) are drawn as red triangles over the others, sequences
    labelled anomalous get a black ring (a ring without a triangle is a missed anomaly), the threshold
    is a dashed line, and ``boundaries`` (position, file name) mark where each input file starts.
    """
    fig, ax = figure((11.0, 3.8))
    if len(res.scores) == 0:
        no_data(ax, "no sequences in this split")
    else:
        flagged = res.predictions == 1
        many = len(res.scores) > 5000  # rasterize dense point clouds: a small PNG either way
        size = 6 if len(res.scores) > 2000 else 20
        ax.scatter(x[~flagged], res.scores[~flagged], s=size, color="C0", alpha=0.6, lw=0, rasterized=many,
                   label=f"normal prediction ({int((~flagged).sum()):,})")
        ax.scatter(x[flagged], res.scores[flagged], s=3 * size, color="C3", marker="^", lw=0, rasterized=many,
                   label=f"flagged ({int(flagged.sum()):,})")
        anomalous = res.labels == 1
        if anomalous.any():
            ax.scatter(x[anomalous], res.scores[anomalous], s=8 * size, facecolors="none", edgecolors="k",
                       lw=0.7, rasterized=many, label=f"labelled anomalous ({int(anomalous.sum()):,})")
        ax.axhline(res.threshold, color="k", ls="--", lw=1.0, label=f"threshold {res.threshold:.4g}")
        for i, (pos, name) in enumerate(boundaries):
            ax.axvline(pos, color="grey", lw=0.6, ls=":")
            if len(boundaries) <= 12:
                ax.text(pos, 1.04, name[-30:], fontsize=7, rotation=0, ha="left", va="bottom",
                        color="grey", transform=ax.get_xaxis_transform())
            elif i == 0:
                ax.text(pos, 1.04, f"{len(boundaries)} input files (dotted lines)", fontsize=7,
                        color="grey", transform=ax.get_xaxis_transform())
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("score = P(anomalous)")
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.set_title(f"Timeline: score per sequence ({res.name})", pad=16)
    return png(fig)
