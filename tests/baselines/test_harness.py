"""The bench harness: what each kind of method sees, metrics, outputs, the registry and the CLI."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from logllm.baselines import harness
from logllm.baselines.base import REGISTRY, Method, MethodInput
from logllm.baselines.harness import build_inputs, load_methods, metrics, resolve_methods, run_bench
from logllm.baselines.templates import build_resources
from logllm.data.dataset import PreparedData
from logllm.errors import ConfigError

from .conftest import fake_token_vectors, fake_vectors

SEEN: dict[str, list] = {}


class _Spy(Method):
    """Records what the harness hands it; predicts 'anomalous' when message 3 is present."""

    name: ClassVar[str] = "spy"
    supervision = "semi-supervised"

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        SEEN.setdefault(self.name, []).append((train, val, self.seed, dict(self.params)))

    def score(self, data: MethodInput) -> np.ndarray:
        assert data.labels is None  # test labels never reach a method
        return np.array([float(3 in s) for s in data.messages])

    def predict(self, data: MethodInput) -> np.ndarray:
        return self.score(data) > 0.5


class _SupSpy(_Spy):
    name: ClassVar[str] = "supspy"
    supervision = "supervised"


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch):
    SEEN.clear()
    monkeypatch.setitem(REGISTRY, "spy", _Spy)
    monkeypatch.setitem(REGISTRY, "supspy", _SupSpy)
    return SEEN


def _resources(root: Path):
    return build_resources(PreparedData(root), vector_fn=fake_vectors, token_vector_fn=fake_token_vectors)


def test_inputs_follow_the_supervision_rules(tiny_prepared: Path) -> None:
    data = PreparedData(tiny_prepared)
    res = _resources(tiny_prepared)
    train = data.sequences("train")
    sup = build_inputs(data, res, "supervised")
    assert len(sup.train) == len(train) and (sup.train.labels == train.labels).all()
    assert sup.val is not None and sup.val.labels is not None
    for kind in ("semi-supervised", "training-free"):
        semi = build_inputs(data, res, kind)
        assert semi.train.labels is None
        assert len(semi.train) == int((train.labels == 0).sum())
        assert all(3 not in s for s in semi.train.messages)  # the anomalous message never appears
        assert semi.test.labels is None and semi.val is not None
        assert build_inputs(data, res, kind, semi_val="normal").val.labels is None
        assert build_inputs(data, res, kind, semi_val="none").val is None
    assert sup.test.labels is None and len(sup.test_labels) == len(data.sequences("test"))


def test_metrics_by_hand() -> None:
    m = metrics(np.array([1, 1, 0, 0, 0]), np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.2, 0.8, 0.1, 0.3]))
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (1, 1, 1, 2)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5) and m["accuracy"] == pytest.approx(0.6)
    assert m["roc_auc"] == pytest.approx(4 / 6)
    assert np.isnan(metrics(np.array([0, 0]), np.array([0, 1]), np.array([0.1, 0.2]))["roc_auc"])


def test_run_bench_writes_the_table(tiny_prepared: Path, tmp_path: Path, spies) -> None:
    out = tmp_path / "bench"
    table = run_bench(tiny_prepared, "spy,supspy,knn", seeds=[0, 1], out=out, params={"spy": {"x": "1"}},
                      vector_fn=fake_vectors, token_vector_fn=fake_token_vectors, command="logllm bench ...")
    assert table["method"].to_list() == ["spy", "supspy", "knn"]
    assert table["seeds"].to_list() == [2, 2, 2]
    # the spy flags exactly the sequences holding message 3, which are the anomalous ones
    assert table.filter(pl.col("method") == "spy")["f1_mean"][0] == pytest.approx(1.0)
    runs = pl.read_csv(out / "runs.csv")
    assert len(runs) == 6 and {"precision", "recall", "f1", "roc_auc", "train_s", "test_s"} <= set(runs.columns)
    assert len(pl.read_csv(out / "table.csv")) == 3
    md = (out / "table.md").read_text()
    assert "| spy | semi-supervised | 1.000 ± 0.000 |" in md and "logllm bench" in md
    assert (out / "bench.json").is_file()
    semi_train, _, seed, params = spies["spy"][0]
    assert semi_train.labels is None and all(3 not in s for s in semi_train.messages)
    assert seed == 0 and params == {"x": "1", "threads": 1}
    assert [s[2] for s in spies["spy"]] == [0, 1]
    assert spies["supspy"][0][0].labels is not None


def test_every_module_is_imported_and_failures_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    methods = load_methods()
    assert {"knn", "dt", "logrobust", "cnn", "neurallog", "rapid"} <= set(methods)
    real = importlib.import_module

    def broken(name: str, *args, **kwargs):
        if name == "logllm.baselines.knn":
            raise SyntaxError("bad module")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(harness.importlib, "import_module", broken)
    with pytest.raises(ImportError, match="logllm.baselines.knn"):
        load_methods()


def test_method_names_are_checked() -> None:
    assert "knn" in resolve_methods("all") and resolve_methods("dt,knn,dt") == ["dt", "knn"]
    with pytest.raises(ConfigError, match="nosuch"):
        resolve_methods("knn,nosuch")
    with pytest.raises(ConfigError, match="logllm-run"):
        run_bench(".", "logllm", seeds=[0])


def test_cli_bench(tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from logllm.cli import main

    out = tmp_path / "cli"
    assert main(["bench", "--data", str(tiny_prepared), "--methods", "knn,dt", "--seeds", "0,1",
                 "--out", str(out), "--set", "dt.max_depth=3"]) == 0
    assert "| knn | supervised |" in capsys.readouterr().out
    assert len(pl.read_csv(out / "runs.csv")) == 4
    assert main(["bench", "--data", str(tiny_prepared), "--methods", "nosuch"]) == 2
    assert "unknown method 'nosuch'" in capsys.readouterr().err
    assert main(["bench", "--data", str(tiny_prepared), "--set", "oops"]) == 2
    assert main(["bench", "--data", str(tmp_path / "missing"), "--methods", "knn"]) == 2
    assert main(["bench", "--data", str(tiny_prepared), "--methods", "knn", "--seeds", "0,x"]) == 2
    assert "--seeds '0,x': expected a comma list of numbers" in capsys.readouterr().err
    assert main(["bench", "--data", str(tiny_prepared), "--methods", "knn", "--seeds", ","]) == 2
    assert "--seeds ',': give at least one value" in capsys.readouterr().err


def test_a_logllm_run_folder_joins_the_table(tiny_prepared: Path, tmp_path: Path) -> None:
    """The extension point: a run folder (tiny random LogLLM saved in code) becomes the `logllm` row."""
    import json

    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    from logllm.model import LogLLM, ModelConfig

    words = ("below is a sequence of system log messages : . is this normal or anomalous ? the open file "
             "< * > read bytes close disk failure on retry").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    enc_dir = tmp_path / "encoder"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(str(enc_dir))
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(str(enc_dir))
    model = LogLLM.build(ModelConfig(encoder=str(enc_dir), decoder="tiny-llama", decoder_layers=1,
                                     decoder_width=32, decoder_heads=2, device="cpu"), seed=0)
    run = tmp_path / "run"
    model.save_pretrained(run / "model")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.0}))  # everything anomalous
    (run / "train_log.jsonl").write_text(json.dumps({"stage": "1", "step": 1, "elapsed": 12.5}) + "\n")

    table = run_bench(tiny_prepared, "knn", seeds=[0, 1], logllm_runs=[run], vector_fn=fake_vectors)
    row = table.filter(pl.col("method") == "logllm").row(0, named=True)
    assert row["seeds"] == 1  # one run folder is one result, not repeated per seed
    assert table.filter(pl.col("method") == "knn").row(0, named=True)["seeds"] == 2
    assert row["train_s"] == pytest.approx(12.5)  # taken from the run, not re-trained
    assert row["recall_mean"] == pytest.approx(1.0)
    assert row["precision_mean"] == pytest.approx(0.25)  # a quarter of tiny_prepared's test set is anomalous
