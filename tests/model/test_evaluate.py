"""Evaluation: metrics on hand-made cases, threshold choice, and that test labels never pick the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.errors import ConfigError, DataError
from logllm.evaluate import choose_threshold, classification_metrics, evaluate


def test_metrics_on_a_hand_made_example():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.1, 0.05])
    m = classification_metrics(labels, scores, threshold=0.5)
    # predicted anomalous: 0.9, 0.8 (true), 0.7 (false); missed: 0.3
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 1, 4)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(6 / 8)
    # ROC-AUC: of the 15 (anomalous, normal) pairs, the anomaly scores higher in 14 (0.3 < 0.7)
    assert m["roc_auc"] == pytest.approx(14 / 15)
    # average precision: ranks 1, 2 (hits), 3 miss, 4 (0.3) hit -> (1 + 1 + 3/4) / 3
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert classification_metrics(labels, scores, threshold=0.9)["tp"] == 1  # >= threshold is anomalous


def test_metrics_with_one_class_and_no_predictions():
    m = classification_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), threshold=0.5)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0 and m["accuracy"] == 1.0


def test_choose_threshold_maximises_f1_between_scores():
    labels = np.array([1, 1, 0, 1, 0, 0])
    scores = np.array([0.95, 0.9, 0.8, 0.6, 0.3, 0.1])
    threshold, f1 = choose_threshold(labels, scores)
    # cutting between 0.6 and 0.3 catches all three anomalies with one false alarm: F1 = 6/7
    assert threshold == pytest.approx(0.45) and f1 == pytest.approx(6 / 7)
    assert classification_metrics(labels, scores, threshold)["f1"] == pytest.approx(f1)
    with pytest.raises(ValueError):
        choose_threshold(np.zeros(3), np.array([0.1, 0.2, 0.3]))


class TextRuleModel:
    """A stand-in for LogLLM: P(anomalous) rises with the share of messages that mention 'failure'.

    It sees texts and message ids only, as LogLLM.score does; it has no access to labels.
    """

    calls = 0

    def score(self, texts, sequences, batch_size=64):
        TextRuleModel.calls += 1
        return np.array([np.mean(["failure" in texts[i] for i in seq]) * 0.9 + 0.05 for seq in sequences])


def rewrite_split(root: Path, name: str, table: pl.DataFrame) -> None:
    """Replace one split of a prepared folder by hand, with its size and sha256 in the manifest
    (the reader refuses a table that does not match the manifest)."""
    from logllm.data.manifest import file_record

    table.write_parquet(root / f"{name}.parquet")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][f"{name}.parquet"] = file_record(root / f"{name}.parquet")
    (root / "manifest.json").write_text(json.dumps(manifest))


def make_run(root: Path, threshold: float, source: str = "val") -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"seed": 3, "score_batch_size": 8}))
    (root / "threshold.json").write_text(json.dumps({"threshold": threshold, "source": source}))
    return root


def test_evaluate_writes_metrics_and_scores(tiny_prepared: Path, tmp_path: Path):
    run = make_run(tmp_path / "run", threshold=0.06)
    m = evaluate(run, tiny_prepared, "test", model=TextRuleModel())
    assert m.f1 == 1.0 and m.sequences == 32 and m.anomalous == 8 and m.seed == 3
    assert m.threshold == 0.06 and m.threshold_source == "val" and m.roc_auc == 1.0
    assert m.data["family"] == "synthetic" and "torch" in m.versions
    written = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    for key in ("precision", "recall", "f1", "accuracy", "roc_auc", "pr_auc", "threshold", "threshold_source",
                "tp", "fp", "fn", "tn", "sequences", "seconds", "sequences_per_second", "seed", "versions"):
        assert key in written
    scores = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    assert scores.columns == ["sequence_id", "label", "score", "pred"] and len(scores) == 32
    assert ((scores["score"] >= 0.06).cast(pl.Int8) == scores["pred"]).all()


def test_evaluate_never_uses_test_labels_for_the_threshold(tiny_prepared: Path, tmp_path: Path):
    run = make_run(tmp_path / "run", threshold=0.5)
    first = evaluate(run, tiny_prepared, "test", model=TextRuleModel())
    before = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    # Flip every test label: threshold and predictions must not move; only the metrics do.
    path = tiny_prepared / "test.parquet"
    table = pl.read_parquet(path)
    rewrite_split(tiny_prepared, "test", table.with_columns((1 - pl.col("label")).cast(pl.Int8).alias("label")))
    second = evaluate(run, tiny_prepared, "test", model=TextRuleModel())
    after = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    assert first.threshold == second.threshold == 0.5
    assert before["pred"].to_list() == after["pred"].to_list()
    assert before["score"].to_list() == after["score"].to_list()
    assert first.tp == second.fp and first.tn == second.fn


def test_evaluate_counts_unlabeled_and_refuses_an_unfinished_run(tiny_prepared: Path, tmp_path: Path):
    path = tiny_prepared / "test.parquet"
    table = pl.read_parquet(path)
    rewrite_split(tiny_prepared, "test", table.with_columns(
        pl.when(pl.int_range(pl.len()) < 4).then(None).otherwise(pl.col("label")).cast(pl.Int8).alias("label")))
    run = make_run(tmp_path / "run", threshold=0.06)
    m = evaluate(run, tiny_prepared, "test", model=TextRuleModel())
    assert m.unlabeled == 4 and m.labeled == 28 and m.sequences == 32
    assert pl.read_parquet(run / "eval" / "test" / "scores.parquet")["label"].null_count() == 4
    (run / "threshold.json").unlink()
    with pytest.raises(ConfigError, match="threshold.json"):
        evaluate(run, tiny_prepared, "test", model=TextRuleModel())
    with pytest.raises(DataError, match="split 'nope' not found"):
        make_run(tmp_path / "run2", 0.5)
        evaluate(tmp_path / "run2", tiny_prepared, "nope", model=TextRuleModel())
