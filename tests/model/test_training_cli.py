"""`logllm train` and `logllm evaluate` end to end on the tiny prepared folder with tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from logllm.cli import main


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory, write_tiny_config) -> Path:
    """A config file: the small preset with a random width-16 encoder (saved here) and decoder."""
    return write_tiny_config(tmp_path_factory.mktemp("tiny_cli"), "checkpoint_every = 1\n")


def test_train_then_evaluate(tiny_prepared: Path, tiny_config_file: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--data", str(tiny_prepared), "--out", str(run), "--config", str(tiny_config_file),
                 "--seed", "4", "--skip-stage", "2a", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "decision threshold" in out and "val split" in out
    for name in ("config.json", "data_manifest.json", "train_log.jsonl", "threshold.json", "model"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 4 and config["model"]["decoder_width"] == 16
    assert [s["skip"] for s in config["stages"]] == [False, True, False, False]
    assert json.loads((run / "data_manifest.json").read_text())["family"] == "synthetic"
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["stage-1", "stage-2b", "stage-3", "step-0000003", "step-0000005"]  # newest 2 step ones kept
    state = json.loads((run / "checkpoints" / "stage-3" / "trainer_state.json").read_text())
    assert state["state"]["global_step"] == 6 and "torch" in state["versions"]
    for name in ("optimizer.safetensors", "scheduler.json", "rng.safetensors", "model"):
        assert (run / "checkpoints" / "step-0000005" / name).exists(), name

    code = main(["evaluate", str(run), "--data", str(tiny_prepared), "--split", "test"])
    assert code == 0
    out = capsys.readouterr().out
    assert "precision" in out and "recall" in out and "f1" in out
    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert metrics["sequences"] == 32 and metrics["tp"] + metrics["fn"] == 8 and metrics["seed"] == 4
    assert metrics["threshold"] == json.loads((run / "threshold.json").read_text())["threshold"]
    assert metrics["threshold_source"] == "val"
    assert len(pl.read_parquet(run / "eval" / "test" / "scores.parquet")) == 32


def test_resume_and_refusals(tiny_prepared: Path, tiny_config_file: Path, tmp_path: Path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_prepared), "--out", str(run), "--config", str(tiny_config_file),
                 "--no-progress"]) == 0
    first = json.loads((run / "threshold.json").read_text())
    # a second run into the same folder without --resume is refused with a clear message
    assert main(["train", "--data", str(tiny_prepared), "--out", str(run), "--no-progress"]) == 2
    assert "--resume" in capsys.readouterr().err
    # --resume with other options is refused; plain --resume of a finished run redoes nothing but the end
    assert main(["train", "--data", str(tiny_prepared), "--out", str(run), "--resume", "--seed", "2"]) == 2
    assert main(["train", "--data", str(tiny_prepared), "--out", str(run), "--resume", "--no-progress"]) == 0
    assert json.loads((run / "threshold.json").read_text())["threshold"] == first["threshold"]
    # resuming a folder that was never trained says so
    assert main(["train", "--data", str(tiny_prepared), "--out", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_bad_config_file_is_a_clean_error(tiny_prepared: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stages]]\nname = \"1\"\nepochs = 0\n")
    assert main(["train", "--data", str(tiny_prepared), "--out", str(tmp_path / "run"), "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "epochs=0" in err and "Traceback" not in err
