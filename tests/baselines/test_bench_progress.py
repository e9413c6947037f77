"""A bench a user can wait for: rows on disk as each run finishes, --resume, lazy shared work, progress lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from logllm.baselines import shared
from logllm.baselines.base import REGISTRY, Method, MethodInput
from logllm.baselines.common import pad, train_classifier
from logllm.baselines.harness import load_methods, run_bench
from logllm.baselines.outputs import write_atomic
from logllm.errors import ConfigError

from .conftest import fake_token_vectors, fake_vectors

TIMINGS = ("train_s", "test_s")


def _without_timings(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop([c for c in df.columns if c in TIMINGS])


class _Stop(RuntimeError):
    pass


@pytest.fixture
def knn_fails(monkeypatch: pytest.MonkeyPatch):
    """KNN's fit raises: the bench stops after DT, as if killed while training KNN."""
    knn = load_methods()["knn"]

    def fail(self, train, val=None):
        raise _Stop("stopped while training knn")

    monkeypatch.setattr(knn, "fit", fail)
    return monkeypatch


def _spy_fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record every (method, seed) that the bench fits, for dt and knn (their real fit still runs)."""
    calls: list[tuple[str, int]] = []
    for name in ("dt", "knn"):
        cls = load_methods()[name]
        real = cls.fit

        def spy(self, train, val=None, _real=real):
            calls.append((self.name, self.seed))
            return _real(self, train, val)

        monkeypatch.setattr(cls, "fit", spy)
    return calls


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    return _spy_fits(monkeypatch)


def _bench(data: Path, out: Path | None, **kw) -> pl.DataFrame:
    return run_bench(data, kw.pop("methods", "dt,knn"), seeds=kw.pop("seeds", [0, 1]), out=out,
                     vector_fn=fake_vectors, token_vector_fn=fake_token_vectors, **kw)


def test_a_stopped_bench_keeps_its_finished_rows_and_resume_runs_only_the_rest(
        tiny_prepared: Path, tmp_path: Path, knn_fails: pytest.MonkeyPatch) -> None:
    out = tmp_path / "bench"
    with pytest.raises(_Stop):
        _bench(tiny_prepared, out)
    runs = pl.read_parquet(out / "runs.parquet")
    assert runs.select("method", "seed").rows() == [("dt", 0), ("dt", 1)]
    assert pl.read_csv(out / "runs.csv").select("method", "seed").rows() == [("dt", 0), ("dt", 1)]
    assert pl.read_csv(out / "table.csv")["method"].to_list() == ["dt"]
    assert "Incomplete: 2 of 4 runs missing" in (out / "table.md").read_text()
    meta = json.loads((out / "bench.json").read_text())
    assert meta["complete"] is False and meta["runs_missing"] == [["knn", 0], ["knn", 1]]
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind

    knn_fails.undo()  # the cause of the stop is gone
    calls = _spy_fits(knn_fails)
    resumed = _bench(tiny_prepared, out, resume=True)
    assert calls == [("knn", 0), ("knn", 1)]  # dt is not run again

    whole = tmp_path / "whole"
    uninterrupted = _bench(tiny_prepared, whole)
    assert _without_timings(resumed).equals(_without_timings(uninterrupted))
    for name in ("runs.parquet", "table.csv"):
        read = pl.read_parquet if name.endswith("parquet") else pl.read_csv
        assert _without_timings(read(out / name)).equals(_without_timings(read(whole / name)))
    assert json.loads((out / "bench.json").read_text())["complete"] is True
    assert "Incomplete" not in (out / "table.md").read_text()


def test_resume_refuses_other_options_or_data(tiny_prepared: Path, tmp_path: Path, fits) -> None:
    from logllm.data.dataset import PreparedData, write_prepared

    out = tmp_path / "bench"
    _bench(tiny_prepared, out, methods="dt", seeds=[0])
    with pytest.raises(ConfigError, match=r"params: folder \{\}, now \{'dt': \{'max_depth': '3'\}\}"):
        _bench(tiny_prepared, out, methods="dt", seeds=[0], params={"dt": {"max_depth": "3"}}, resume=True)
    with pytest.raises(ConfigError, match="semi_val"):
        _bench(tiny_prepared, out, methods="dt", seeds=[0], semi_val="none", resume=True)
    # the same data with one test label flipped is other data
    data = PreparedData(tiny_prepared)
    splits = {s: data.split(s) for s in ("train", "val", "test")}
    splits["test"] = splits["test"].with_columns(
        pl.when(pl.int_range(pl.len()) == 1).then(1 - pl.col("label")).otherwise(pl.col("label")).alias("label"))
    other = write_prepared(tmp_path / "other", list(data.messages), splits, {
        k: v for k, v in data.manifest.items() if k not in ("files", "splits")})
    with pytest.raises(ConfigError, match="data (files|splits)"):
        _bench(other, out, methods="dt", seeds=[0], resume=True)
    assert fits == [("dt", 0)]  # nothing ran after the first bench
    # more seeds and methods with the same settings: only the new cells run
    _bench(tiny_prepared, out, methods="dt,knn", seeds=[0, 1], resume=True)
    assert fits == [("dt", 0), ("dt", 1), ("knn", 0), ("knn", 1)]


def test_cli_bench_interrupted_then_resumed(tiny_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    from logllm.cli import main

    knn = load_methods()["knn"]
    real = knn.fit

    def interrupt(self, train, val=None):
        raise KeyboardInterrupt

    out = tmp_path / "cli"
    args = ["bench", "--data", str(tiny_prepared), "--methods", "dt,knn", "--seeds", "0", "--out", str(out)]
    monkeypatch.setattr(knn, "fit", interrupt)
    assert main(args) == 130
    assert pl.read_csv(out / "runs.csv")["method"].to_list() == ["dt"]
    monkeypatch.setattr(knn, "fit", real)
    assert main([*args, "--resume"]) == 0
    assert pl.read_csv(out / "runs.csv")["method"].to_list() == ["dt", "knn"]
    assert "| knn | supervised |" in capsys.readouterr().out
    assert main([*args, "--resume", "--set", "dt.max_depth=2"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "other data or options" in err and "max_depth" in err


def test_dt_alone_never_builds_sentence_vectors(tiny_prepared: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    encoded: list[int] = []

    def vectors(texts: list[str]) -> np.ndarray:
        encoded.append(len(texts))
        return fake_vectors(texts)

    def no_encoder(*args, **kwargs):
        raise AssertionError("the MiniLM encoder must not run for dt")

    monkeypatch.setattr("logllm.embeddings.encode_texts", no_encoder)
    out = tmp_path / "dt"
    run_bench(tiny_prepared, "dt", seeds=[0], out=out, vector_fn=vectors)
    run_bench(tiny_prepared, "dt", seeds=[0], out=tmp_path / "default")  # the default encoder is not called
    assert encoded == []
    prep = json.loads((out / "bench.json").read_text())["preprocessing_s"]
    assert "templates_s" in prep and "message_vectors_s" not in prep
    # a method that reads vectors gets them, once, computed before it starts
    run_bench(tiny_prepared, "dt,logrobust", seeds=[0, 1], vector_fn=vectors,
              params={"logrobust": {"epochs": "1", "hidden": "4", "layers": "1"}})
    assert encoded == [5]


class _IdsOnly(Method):
    """Reads message ids only and declares it."""

    name: ClassVar[str] = "idsonly"
    supervision = "supervised"
    uses_templates: ClassVar[bool] = False
    uses_vectors: ClassVar[bool] = False

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        pass

    def score(self, data: MethodInput) -> np.ndarray:
        return np.array([float(3 in s) for s in data.messages])

    def predict(self, data: MethodInput) -> np.ndarray:
        return self.score(data) > 0.5


def test_a_method_without_templates_never_fits_drain(tiny_prepared: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    fitted: list[int] = []
    real = shared.load_or_fit_templates

    def spy(data, config=None, store=True):
        fitted.append(1)
        return real(data, config, store)

    monkeypatch.setattr(shared, "load_or_fit_templates", spy)
    monkeypatch.setitem(REGISTRY, "idsonly", _IdsOnly)
    out = tmp_path / "ids"
    table = run_bench(tiny_prepared, "idsonly", seeds=[0], out=out, vector_fn=fake_vectors)
    assert fitted == [] and table["f1_mean"][0] == pytest.approx(1.0)
    assert "no Drain templates" in (out / "table.md").read_text()
    assert json.loads((out / "bench.json").read_text())["templates"] is None
    run_bench(tiny_prepared, "idsonly,dt", seeds=[0], vector_fn=fake_vectors)
    assert fitted == [1]


def test_progress_lines_per_run_and_epoch(tiny_prepared: Path, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    caplog.set_level(logging.INFO, logger="logllm")
    run_bench(tiny_prepared, "dt", seeds=[0, 1], vector_fn=fake_vectors)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bench [")]
    assert lines[0].startswith("bench [1/2]: dt seed 0: training on 64 sequences")
    assert lines[1].startswith("bench [1/2]: dt seed 0 done: P ") and "(train " in lines[1] and "s, test " in lines[1]
    assert lines[3].startswith("bench [2/2]: dt seed 1 done")

    caplog.clear()
    from logllm.baselines.common import distinct

    seqs = [np.array([0, 1]), np.array([2, 3, 1]), np.array([3])]
    data, labels = distinct(seqs, np.array([0, 1, 1]))
    model = torch.nn.Sequential(torch.nn.EmbeddingBag(4, 2, mode="mean"), torch.nn.Linear(2, 2))

    def batch(s: list[np.ndarray]) -> tuple:
        return (torch.from_numpy(pad(s)[0]),)

    train_classifier(model, batch, data, labels, epochs=3, batch_size=2, lr=0.1, seed=0, name="tiny")
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tiny epoch")]
    assert [e.split(":")[0] for e in epochs] == ["tiny epoch 1/3", "tiny epoch 2/3", "tiny epoch 3/3"]
    assert all("s left)" in e for e in epochs)


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    write_atomic(path, lambda p: p.write_text("old\n"))

    def broken(p: Path) -> None:
        p.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["runs.csv"]
