"""Evaluation: what it writes, and that test labels never pick the threshold (the metrics: tests/test_metrics.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.errors import ConfigError, DataError
from logllm.evaluate import evaluate


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
