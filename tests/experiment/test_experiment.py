"""`logllm experiment`: cells run through the library APIs, resume, interruption, aggregation, CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from logllm.cli import main
from logllm.data.manifest import sha256_file
from logllm.errors import ConfigError
from logllm.experiment import Cell, ExperimentOptions, run_experiment, summarize_experiment
from logllm.experiment import runner as runner_module
from logllm.experiment.store import cell_path, load_cells, write_cell


def _cells(expdir: Path) -> dict[tuple, dict]:
    return {(r["table"], r["method"], r["setting"], r["seed"]): r for r in load_cells(expdir)}


def test_table_runs_then_resume_runs_nothing(seed_folders: str, tmp_path: Path) -> None:
    options = ExperimentOptions(data={"tiny": seed_folders}, seeds=(0, 1), methods=("dt", "knn"))
    exp = tmp_path / "exp"
    first = run_experiment(["baselines"], options, exp, command="test")
    assert (first.planned, first.already_done, first.ran) == (4, 0, 4)
    cells = _cells(exp)
    assert set(cells) == {("baselines", m, "-", s) for m in ("dt", "knn") for s in (0, 1)}
    dt0 = cells[("baselines", "dt", "-", 0)]
    assert 0.0 <= dt0["f1"] <= 1.0 and dt0["train_s"] >= 0 and dt0["test_s"] >= 0
    assert dt0["test_data"]["path"].endswith("prep_s0") and dt0["versions"]["logllm"]
    assert cells[("baselines", "dt", "-", 1)]["test_data"]["path"].endswith("prep_s1")
    stamps = {p: p.stat().st_mtime_ns for p in (exp / "cells").rglob("*.json")}

    second = run_experiment(["baselines", "cost"], options, exp, command="again")
    assert (second.planned, second.already_done, second.ran) == (4, 4, 0)
    assert {p: p.stat().st_mtime_ns for p in (exp / "cells").rglob("*.json")} == stamps
    written = summarize_experiment(exp)
    assert {"baselines.md", "baselines.csv", "cost.md", "cost.csv", "cells"} <= set(written)
    cost = pl.read_csv(written["cost.csv"])
    assert cost["seeds"].to_list() == [2, 2]
    assert "    again" in written["cost.md"].read_text()

    changed = ExperimentOptions(data={"tiny": seed_folders}, seeds=(0,), methods=("dt",),
                                params={"dt": {"max_depth": "1"}})
    with pytest.raises(ConfigError, match="other settings"):
        run_experiment(["baselines"], changed, exp)


def test_interrupted_cell_is_rerun(seed_folders: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = ExperimentOptions(data={"tiny": seed_folders}, seeds=(0,), methods=("dt", "knn"))
    exp = tmp_path / "exp"
    real = runner_module.run_cell
    calls = []

    def stop_in_second(expdir, cell, opts):
        calls.append(cell.method)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(expdir, cell, opts)

    monkeypatch.setattr(runner_module, "run_cell", stop_in_second)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(["baselines"], options, exp)
    assert set(_cells(exp)) == {("baselines", "dt", "-", 0)}

    # a crash while the cell's file is being put in place leaves neither the file nor a temporary one
    import logllm.baselines.outputs as outputs

    real_replace = os.replace

    def no_rename(src, dst):
        if Path(dst).name.startswith("seed"):  # only a cell's file
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(runner_module, "run_cell", real)
    monkeypatch.setattr(outputs.os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        run_experiment(["baselines"], options, exp)
    knn = cell_path(exp, Cell("baselines", "tiny", "knn", "-", 0))
    assert knn.parent.is_dir() and not knn.exists() and not list(knn.parent.glob(".*"))
    monkeypatch.setattr(outputs.os, "replace", real_replace)

    again = run_experiment(["baselines"], options, exp)
    assert (again.already_done, again.ran) == (1, 1)
    assert set(_cells(exp)) == {("baselines", m, "-", 0) for m in ("dt", "knn")}


def test_aggregation_mean_and_sample_sd(tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    for seed, f1 in ((0, 0.5), (1, 0.7), (2, 0.9)):
        write_cell(exp, Cell("beta", "hdfs", "logllm", "beta=0.3", seed),
                   {"table": "beta", "dataset": "hdfs", "method": "logllm", "setting": "beta=0.3", "seed": seed,
                    "x": 0.3, "precision": 1.0, "recall": f1, "f1": f1, "roc_auc": None, "train_s": 10.0 * (seed + 1),
                    "test_s": 1.0, "versions": {"logllm": "0.1.0"}})
    write_cell(exp, Cell("beta", "hdfs", "logllm", "beta=0", 0),
               {"table": "beta", "dataset": "hdfs", "method": "logllm", "setting": "beta=0", "seed": 0, "x": 0.0,
                "precision": 0.25, "recall": 0.5, "f1": 0.4, "roc_auc": 0.8, "train_s": 3.0, "test_s": 1.0})
    written = summarize_experiment(exp)
    table = pl.read_csv(written["beta.csv"])
    assert table["setting"].to_list() == ["beta=0", "beta=0.3"]  # ordered by beta
    row = table.row(1, named=True)
    assert row["f1_mean"] == pytest.approx(0.7) and row["f1_sd"] == pytest.approx(0.2)
    assert row["train_s_mean"] == pytest.approx(20.0) and row["train_s_sd"] == pytest.approx(10.0)
    assert row["seeds"] == 3 and row["seed_list"] == "0,1,2" and row["roc_auc_mean"] is None
    one = table.row(0, named=True)
    assert one["seeds"] == 1 and one["f1_sd"] is None and one["f1_mean"] == pytest.approx(0.4)
    md = written["beta.md"].read_text()
    assert "| hdfs | logllm | beta=0.3 | 1.000 ± 0.000 | 0.700 ± 0.200 | 0.700 ± 0.200 | - | 3 (0,1,2) |" in md
    assert "| hdfs | logllm | beta=0 | 0.250 | 0.500 | 0.400 | 0.800 | 1 (0) |" in md
    assert written["beta.png"].read_bytes()[:4] == b"\x89PNG"


def test_unstable_ratio_zero_equals_unmutated(seed_folders: str, tmp_path: Path) -> None:
    options = ExperimentOptions(data={"tiny": seed_folders}, seeds=(0,), methods=("dt",), ratios=(0.0, 0.3),
                                holdout_templates=0)
    exp = tmp_path / "exp"
    train_hash = sha256_file(Path(seed_folders.format(seed=0)) / "train.parquet")
    run_experiment(["baselines", "unstable"], options, exp)
    cells = _cells(exp)
    plain, zero = cells[("baselines", "dt", "-", 0)], cells[("unstable", "dt", "ratio=0", 0)]
    for key in ("precision", "recall", "f1", "roc_auc", "n_test"):
        assert zero[key] == plain[key], key
    mutated = cells[("unstable", "dt", "ratio=0.3", 0)]
    assert mutated["test_data"]["mutation"]["options"]["ratio"] == 0.3
    assert sum(sum(c.values()) for c in mutated["test_data"]["mutation"]["counts"].values()) > 0
    assert mutated["test_data"]["files"]["train.parquet"] == train_hash  # training split never mutated
    assert sha256_file(Path(seed_folders.format(seed=0)) / "train.parquet") == train_hash
    written = summarize_experiment(exp)
    assert written["unstable_tiny.png"].is_file()
    assert pl.read_csv(written["unstable.csv"])["setting"].to_list() == ["ratio=0", "ratio=0.3"]


@pytest.mark.slow
def test_logllm_cells_share_runs(seed_folders: str, tiny_config: Path, tmp_path: Path) -> None:
    options = ExperimentOptions(data={"tiny": seed_folders}, seeds=(0,), config=tiny_config, stages=("full", "no-1-2"),
                                betas=(0.3,), methods=("logllm",), ratios=(0.0,), holdout_templates=0,
                                inputs=("regex", "raw", "template-id"))
    exp = tmp_path / "exp"
    result = run_experiment(["stages", "beta", "unstable", "inputs"], options, exp)
    # the tiny config keeps the small preset's distinct pairs of weight one, so the beta table warns too
    assert result.ran == 6 and len(result.notes) == 2 and result.notes[0].startswith("beta: this --config")
    assert result.notes[1] == "inputs: raw left out for tiny: no --raw-data tiny=FOLDER (a folder prepared with --mask none)"
    runs = [p for p in (exp / "runs" / "tiny" / "seed0").iterdir() if p.is_dir()]
    assert len(runs) == 3  # full = beta 0.3 (the config's) = regex = the unstable run; no-1-2; template-id
    cells = _cells(exp)
    full = cells[("stages", "logllm", "full", 0)]
    assert full["run"] == cells[("beta", "logllm", "beta=0.3", 0)]["run"]
    assert full["run"] != cells[("stages", "logllm", "no-1-2", 0)]["run"]
    assert cells[("unstable", "logllm", "ratio=0", 0)]["f1"] == full["f1"]
    assert cells[("inputs", "logllm", "regex", 0)]["run"] == full["run"]
    template = json.loads((Path(cells[("inputs", "logllm", "template-id", 0)]["run"]) / "config.json").read_text())
    assert template["model"]["input_mode"] == "template-id"
    assert full["train_s"] > 0 and full["test_s"] > 0
    saved = json.loads((Path(full["run"]) / "config.json").read_text())
    skipped = json.loads((Path(cells[("stages", "logllm", "no-1-2", 0)]["run"]) / "config.json").read_text())
    assert [s["skip"] for s in saved["stages"]] == [False] * 4
    assert [s["skip"] for s in skipped["stages"]] == [True, True, True, False]


def test_cli_runs_and_summarizes(seed_folders: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exp = tmp_path / "exp"
    args = ["experiment", "baselines", "--data", f"tiny={seed_folders}", "--seeds", "0", "--methods", "dt",
            "--out", str(exp)]
    assert main(args) == 0
    assert "1 cells: 0 already finished, 1 run now" in capsys.readouterr().out
    assert main(args) == 0
    assert "1 cells: 1 already finished, 0 run now" in capsys.readouterr().out
    assert main(["experiment", "summarize", "--out", str(exp)]) == 0
    assert "baselines.md" in capsys.readouterr().out
    md = (exp / "summary" / "baselines.md").read_text()
    assert f"    logllm experiment baselines --out {exp} --data 'tiny={seed_folders}' --seeds 0 --methods dt" in md


@pytest.mark.parametrize(("extra", "message"), [
    (["--data", "tiny"], "--data 'tiny': expected NAME=FOLDER"),
    (["--data", "tiny=/nonexistent/prep_s{seed}"], "/nonexistent/prep_s0 (seed 0) is not a prepared folder"),
    (["--data", "tiny=x", "--seeds", "0,a"], "--seeds '0,a'"),
    (["--data", "tiny=x", "--methods", "nope"], "unknown method 'nope'"),
])
def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    assert main(["experiment", "baselines", "--out", str(tmp_path / "e"), "--seeds", "0", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_damaged_cell_file_is_named(tmp_path: Path) -> None:
    path = cell_path(tmp_path, Cell("baselines", "hdfs", "dt", "-", 0))
    path.parent.mkdir(parents=True)
    path.write_text('{"table": "baselines", "f1": 0.5')  # cut short
    with pytest.raises(ConfigError, match=f"{path}: not a readable cell file"):
        summarize_experiment(tmp_path)


def test_beta_table_says_when_beta_cannot_act(tmp_path: Path) -> None:
    # distinct pairs with weight one (the small preset): oversampling repeats pairs that then train once
    # each, so every beta gives the same samples and weights, and the plan says so; on every sample it acts.
    import dataclasses

    import numpy as np

    from logllm.config import preset
    from logllm.experiment.plan import beta_notes, plan
    from logllm.training.sampling import training_samples

    ids = [[1, 2], [1, 2], [3], [4, 5], [6], [7], [8], [9]]
    labels = np.array([0, 0, 0, 1, 0, 0, 0, 0])
    small = preset("small")
    got = {b: training_samples(ids, labels, dataclasses.replace(small, beta=b).validate()) for b in (0.0, 0.3)}
    assert got[0.0][0].tolist() == got[0.3][0].tolist() and got[0.0][1].tolist() == got[0.3][1].tolist()
    every = {b: training_samples(ids, labels, dataclasses.replace(small, beta=b, distinct_samples=False).validate())
             for b in (0.0, 0.3)}
    assert len(every[0.3][0]) > len(every[0.0][0])  # on every sample, beta adds anomalous repeats

    data = {"hdfs": str(tmp_path / "d{seed}")}
    _, notes = plan("beta", ExperimentOptions(data=data, seeds=(0, 1)), [])
    assert len(notes) == 1 and "lora_every_sample.toml" in notes[0]
    every_file = Path(__file__).parents[2] / "benchmarks" / "decoder_variants" / "lora_every_sample.toml"
    assert beta_notes(ExperimentOptions(data=data, config=every_file)) == []
