"""A run is tied to its data: evaluate, report, bench and train --resume refuse a prepared folder that
is not the one the run was trained on unless --allow-other-data (then recorded), and a fresh train
into a used run folder leaves no stale evaluation behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from logllm.cli import main
from logllm.data.dataset import PreparedData, write_prepared
from logllm.data.manifest import check_run_data, identity_differences
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.errors import DataError
from logllm.evaluate import evaluate


class FailureWordModel:
    """A stand-in for LogLLM: P(anomalous) rises with the share of messages that hold 'failure'."""

    def score(self, texts, sequences, batch_size=64):
        return np.array([np.mean(["failure" in texts[i] for i in seq]) * 0.9 + 0.05 for seq in sequences])


def make_run(root: Path, data: Path) -> Path:
    """A run folder as `logllm train` leaves it (without a model): trained on ``data``."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"seed": 3, "score_batch_size": 8}))
    (root / "threshold.json").write_text(json.dumps({"threshold": 0.06, "source": "val"}))
    shutil.copyfile(data / "manifest.json", root / "data_manifest.json")
    return root


def reseeded(src: Path, out: Path, seed: int) -> Path:
    """The same tables under another seed (as another seed's prepare would record)."""
    data = PreparedData(src)
    return write_prepared(out, data.message_table, {s: data.split(s) for s in ("train", "val", "test")},
                          {**data.manifest, "seed": seed})


def test_evaluate_refuses_another_seeds_folder_unless_allowed_and_records_it(tiny_prepared: Path, tmp_path: Path):
    run = make_run(tmp_path / "run", tiny_prepared)
    other = reseeded(tiny_prepared, tmp_path / "seed1", seed=1)
    assert evaluate(run, tiny_prepared, "test", model=FailureWordModel()).other_data is None
    first = (run / "eval" / "test" / "metrics.json").read_text()
    with pytest.raises(DataError, match=r"is not the data .* was trained on \(seed: run 0, data 1\).*--allow-other-data"):
        evaluate(run, other, "test", model=FailureWordModel())
    assert (run / "eval" / "test" / "metrics.json").read_text() == first  # not overwritten
    m = evaluate(run, other, "test", model=FailureWordModel(), allow_other_data=True)
    recorded = json.loads((run / "eval" / "test" / "metrics.json").read_text())["other_data"]
    assert recorded == m.other_data and recorded["allow_other_data"] is True
    assert recorded["data"] == str(other) and recorded["differences"] == ["seed: run 0, data 1"]


def test_evaluate_cli_refuses_before_loading_the_model(tiny_prepared: Path, tmp_path: Path, capsys):
    run = make_run(tmp_path / "run", tiny_prepared)
    other = reseeded(tiny_prepared, tmp_path / "seed1", seed=1)
    assert main(["evaluate", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "--allow-other-data" in err and "seed" in err and err.count("\n") == 1
    # with the flag the data check passes; this run has no model, which is the next thing said
    assert main(["evaluate", str(run), "--data", str(other), "--allow-other-data"]) == 2
    assert "model: missing" in capsys.readouterr().err
    # report and bench --logllm-run use the same check
    assert main(["report", str(run), "--data", str(other)]) == 2
    assert "--allow-other-data" in capsys.readouterr().err
    assert main(["bench", "--data", str(other), "--methods", "logllm", "--logllm-run", str(run),
                 "--out", str(tmp_path / "bench")]) == 2
    assert "--allow-other-data" in capsys.readouterr().err and not (tmp_path / "bench").exists()


@pytest.mark.integration
def test_another_seeds_random_split_is_told_apart(shared_data: Path, tmp_path: Path):
    log = str(shared_data / "BGL_2k" / "BGL_2k.log")
    a = prepare(PrepareOptions(family="bgl", inputs=(log,), window=20, split="random", seed=0), tmp_path / "a")
    b = prepare(PrepareOptions(family="bgl", inputs=(log,), window=20, split="random", seed=1), tmp_path / "b")
    same = prepare(PrepareOptions(family="bgl", inputs=(log,), window=20, split="random", seed=0), tmp_path / "c")
    assert identity_differences(a.manifest, same.manifest) == []  # another folder, the same data
    differences = identity_differences(a.manifest, b.manifest)
    assert differences[0] == "seed: run 0, data 1" and len(differences) <= 2  # (and maybe the anomalies per split)
    chrono = prepare(PrepareOptions(family="bgl", inputs=(log,), window=20), tmp_path / "d")
    assert "option split: run 'random', data 'chronological'" in identity_differences(a.manifest, chrono.manifest)
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(tmp_path / "a" / "manifest.json", run / "data_manifest.json")
    assert check_run_data(run, PreparedData(tmp_path / "c")) is None
    with pytest.raises(DataError, match="seed: run 0, data 1"):
        check_run_data(run, PreparedData(tmp_path / "b"))


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory, write_tiny_config) -> Path:
    """The small preset with a random width-16 encoder and decoder, 16 samples per stage."""
    return write_tiny_config(tmp_path_factory.mktemp("tiny_guard"), "")


def test_retraining_clears_old_eval_and_resume_checks_the_data(tiny_prepared: Path, tiny_config_file: Path,
                                                               tmp_path: Path, capsys):
    run = tmp_path / "run"
    train = ["train", "--data", str(tiny_prepared), "--out", str(run), "--config", str(tiny_config_file),
             "--no-progress"]
    assert main(train) == 0
    assert main(["evaluate", str(run), "--data", str(tiny_prepared)]) == 0
    (run / "report.html").write_text("old")
    # resuming on another seed's folder is refused, and accepted (and logged) with the flag
    other = reseeded(tiny_prepared, tmp_path / "seed1", seed=1)
    resume = ["train", "--data", str(other), "--out", str(run), "--resume", "--no-progress"]
    capsys.readouterr()
    assert main(resume) == 2
    assert "--allow-other-data" in capsys.readouterr().err
    assert main([*resume, "--allow-other-data"]) == 0
    events = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [e["differences"] for e in events if e.get("event") == "other_data"] == [["seed: run 0, data 1"]]
    assert json.loads((run / "data_manifest.json").read_text())["seed"] == 0  # still the run's data
    # a fresh train into the folder (its checkpoints deleted) leaves nothing of the old run's results
    shutil.rmtree(run / "checkpoints")
    assert (run / "eval" / "test" / "metrics.json").is_file()
    assert main([*train[:2], str(other), *train[3:]]) == 0
    assert not (run / "eval").exists() and not (run / "report.html").exists()
    assert json.loads((run / "data_manifest.json").read_text())["seed"] == 1
    assert main(["evaluate", str(run), "--data", str(other)]) == 0
