"""`logllm prepare logllm-csv --test CSV` alone: a test-only folder that `evaluate` scores with a trained run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.cli import main
from logllm.data.dataset import PreparedData
from logllm.errors import ConfigError, DataError
from logllm.evaluate import evaluate


class FailureWordModel:
    """A stand-in for LogLLM: P(anomalous) rises with the share of messages that hold 'failure'."""

    def score(self, texts, sequences, batch_size=64):
        return np.array([np.mean(["failure" in texts[i] for i in seq]) * 0.9 + 0.05 for seq in sequences])


def test_a_test_only_csv_is_prepared_and_evaluated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "train.csv").write_text('Content,Label\n"open 1 ;-; read 22 bytes",0\n"disk failure sda1",1\n')
    (tmp_path / "test.csv").write_text('Content,Label\n"open 2 ;-; close",0\n')
    (tmp_path / "new.csv").write_text('BlockId,Content,Label\nblk_1,"open 3 ;-; close",normal\n'
                                      'blk_2,"open 4 ;-; disk failure sdb",1\nblk_3,"read 5 bytes",0\n')
    assert main(["prepare", "logllm-csv", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"),
                 "--out", str(tmp_path / "trained_on")]) == 0
    assert main(["prepare", "logllm-csv", "--test", str(tmp_path / "new.csv"), "--out", str(tmp_path / "new")]) == 0
    new = PreparedData(tmp_path / "new")
    assert not new.has_split("train") and new.split("test")["sequence_id"].to_list() == ["blk_1", "blk_2", "blk_3"]
    assert new.split("test")["line_numbers"].to_list() == [[2, 2], [3, 3], [4]]  # CSV record lines

    run = tmp_path / "run"  # a run folder as `logllm train` leaves it, trained on the other folder
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"seed": 0, "score_batch_size": 8}))
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.3, "source": "val"}))
    shutil.copyfile(tmp_path / "trained_on" / "manifest.json", run / "data_manifest.json")
    with pytest.raises(DataError, match="--allow-other-data"):
        evaluate(run, tmp_path / "new", "test", model=FailureWordModel())
    m = evaluate(run, tmp_path / "new", "test", model=FailureWordModel(), allow_other_data=True)
    assert (m.tp, m.fp, m.fn, m.tn) == (1, 0, 0, 2)
    scores = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    assert scores["sequence_id"].to_list() == ["blk_1", "blk_2", "blk_3"]
    assert scores["score"].to_list() == pytest.approx([0.05, 0.5, 0.05])

    capsys.readouterr()
    assert main(["prepare", "logllm-csv", "--train", str(tmp_path / "train.csv"), "--out", str(tmp_path / "x")]) == 2
    assert "logllm-csv needs --test CSV" in capsys.readouterr().err


def test_detect_says_why_a_csv_run_has_no_raw_lines(tmp_path: Path) -> None:
    from logllm.detect.preprocess import preprocessor_from_manifest

    (tmp_path / "test.csv").write_text('Content,Label\n"open 2 ;-; close",0\n')
    assert main(["prepare", "logllm-csv", "--test", str(tmp_path / "test.csv"), "--out", str(tmp_path / "p")]) == 0
    with pytest.raises(ConfigError, match="pre-built sequences from CSV.*--format and --window or --session-regex"):
        preprocessor_from_manifest(PreparedData(tmp_path / "p").manifest)
