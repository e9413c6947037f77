"""A run trained with `--input template` or `--input template-id`: `detect` on the raw lines maps the
messages with the run's saved Drain state and gives the same scores as `evaluate` on the same sequences."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import polars as pl
import pytest

from logllm.cli import main

MODES = ["template", "template-id"]


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory, write_tiny_config) -> Path:
    return write_tiny_config(tmp_path_factory.mktemp("tiny_inputs_detect"))


def _train_evaluate(prepared: Path, run: Path, config: Path, mode: str) -> pl.DataFrame:
    assert main(["-q", "train", "--data", str(prepared), "--out", str(run), "--config", str(config), "--input", mode,
                 "--no-progress"]) == 0
    assert main(["-q", "evaluate", str(run), "--data", str(prepared), "--split", "test"]) == 0
    return pl.read_parquet(run / "eval" / "test" / "scores.parquet")


def _detections(run: Path, log: Path, out: Path, *extra: str) -> list[dict]:
    assert main(["-q", "detect", str(run), str(log), "--out", str(out), "--explain", "none", *extra]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("mode", MODES)
def test_detect_matches_evaluate_on_windows(tmp_path: Path, tiny_config_file: Path, mode: str):
    """Thunderbird-format lines in windows of 20; the test half has messages Drain never saw in training."""
    from logllm.data.dataset import PreparedData

    rows = []
    for i in range(1, 301):
        head = f"{1131568278 + i} 2005.11.09 dn{i % 7} Nov 9 12:31:{i % 60:02d} dn{i % 7}/dn{i % 7}"
        if i % 23 == 0:
            rows.append(f"VAPI {head} kernel: disk failure on sda{i % 4}")
        elif i > 200 and i % 11 == 0:  # only in the test split: new templates
            rows.append(f"- {head} ntpd[{3000 + i}]: clock stepped by {i % 5} seconds")
        else:
            rows.append(f"- {head} sshd[{1000 + i}]: session opened for user root")
    log = tmp_path / "tb.log"
    log.write_text("\n".join(rows) + "\n")
    prepared = tmp_path / "prepared"
    assert main(["-q", "prepare", "thunderbird", "--log", str(log), "--out", str(prepared), "--window", "20",
                 "--split", "chronological", "--train-ratio", "0.6"]) == 0
    run = tmp_path / "run"
    scores = _train_evaluate(prepared, run, tiny_config_file, mode)
    table = PreparedData(prepared).split("test")
    first_line = int(table["line_numbers"].list.first().min())
    dets = _detections(run, log, tmp_path / "det.jsonl", "--start-line", str(first_line))
    expected = {(int(lines[0]), int(lines[-1])): s for lines, s in zip(table["line_numbers"].to_list(), scores["score"])}
    got = {(d["first_line"], d["last_line"]): d["score"] for d in dets}
    assert got.keys() == expected.keys() and len(got) == 6
    for key, score in expected.items():
        assert got[key] == pytest.approx(score, abs=1e-5)
    saved = json.loads((run / "model" / "inputs.json").read_text())
    assert not any("ntpd" in t or "clock" in t for t in saved["training_texts"])  # fitted on train only


@pytest.mark.parametrize("mode", MODES)
def test_hdfs_2pct_slice_trains_evaluates_and_detects_alike(shared_data: Path, tmp_path: Path,
                                                           tiny_config_file: Path, mode: str):
    """The first 20,000 lines of HDFS_2pct, sessions by block id."""
    log = tmp_path / "hdfs.log"
    with open(shared_data / "HDFS_2pct" / "HDFS_2pct.log") as fh:
        log.write_text("".join(islice(fh, 20_000)))
    prepared = tmp_path / "prepared"
    assert main(["-q", "prepare", "hdfs", "--log", str(log), "--labels",
                 str(shared_data / "HDFS_2pct" / "anomaly_label.csv"), "--out", str(prepared)]) == 0
    run = tmp_path / "run"
    scores = _train_evaluate(prepared, run, tiny_config_file, mode)
    assert json.loads((run / "config.json").read_text())["model"]["input_mode"] == mode
    expected = dict(zip(scores["sequence_id"].to_list(), scores["score"].to_list(), strict=True))
    got = {d["sequence_id"]: d["score"] for d in _detections(run, log, tmp_path / "det.jsonl")}
    assert len(expected) > 100 and expected.keys() <= got.keys()
    for sid, score in expected.items():
        assert got[sid] == pytest.approx(score, abs=1e-5)
