"""`logllm mutate`: the unstable test split and the template holdout (logllm.data.mutate)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.cli import main
from logllm.data.dataset import PreparedData
from logllm.data.manifest import RUN_DATA_MANIFEST, check_run_data, sha256_file
from logllm.data.mutate import MutateOptions, mutate_events, mutate_prepared, mutate_text
from logllm.errors import DataError


def _bytes(root: Path, name: str) -> bytes:
    return (root / name).read_bytes()


def _changed(src: pl.DataFrame, out: pl.DataFrame) -> tuple[int, int, int]:
    """(rows whose message ids differ, rows whose length differs, rows with a new message id)."""
    a, b = src["message_ids"].to_list(), out["message_ids"].to_list()
    top = max(max(x) for x in a if x) if a else 0
    return (sum(x != y for x, y in zip(a, b, strict=True)), sum(len(x) != len(y) for x, y in zip(a, b, strict=True)),
            sum(any(i > top for i in y) for y in b))


def test_ratio_zero_is_a_copy(tiny_prepared: Path, tmp_path: Path) -> None:
    m = mutate_prepared(tiny_prepared, tmp_path / "m", MutateOptions(ratio=0.0, seed=3))
    for name in ("train.parquet", "val.parquet", "test.parquet", "messages.parquet"):
        assert _bytes(tmp_path / "m", name) == _bytes(tiny_prepared, name)
    assert m["mutation"]["counts"]["message"]["insert"] == 0 and m["mutation"]["new_messages"] == 0


def test_same_seed_same_bytes_other_seed_differs_train_untouched(tiny_prepared: Path, tmp_path: Path) -> None:
    hashes = {s: sha256_file(tiny_prepared / f"{s}.parquet") for s in ("train", "val")}
    for ratio in (0.05, 0.1, 0.2, 0.3):
        o = MutateOptions(ratio=ratio, seed=0)
        mutate_prepared(tiny_prepared, tmp_path / f"a{ratio}", o)
        m = mutate_prepared(tiny_prepared, tmp_path / f"b{ratio}", o)
        mutate_prepared(tiny_prepared, tmp_path / f"c{ratio}", MutateOptions(ratio=ratio, seed=1))
        for name in ("test.parquet", "messages.parquet"):
            assert _bytes(tmp_path / f"a{ratio}", name) == _bytes(tmp_path / f"b{ratio}", name)
        assert _bytes(tmp_path / f"a{ratio}", "test.parquet") != _bytes(tmp_path / f"c{ratio}", "test.parquet")
        assert _bytes(tmp_path / f"a{ratio}", "test.parquet") != _bytes(tiny_prepared, "test.parquet")
        for s, h in hashes.items():  # never mutated, and the manifest says so
            assert sha256_file(tmp_path / f"a{ratio}" / f"{s}.parquet") == h
            assert m["files"][f"{s}.parquet"]["sha256"] == h
        assert m["mutation"]["train_unchanged"] is True
        assert m["mutation"]["mutated_from"]["files"]["train.parquet"]["sha256"] == hashes["train"]
        assert m["mutation"]["options"] == {"ratio": ratio, "seed": 0, "kinds": ["message", "sequence"],
                                            "holdout_templates": 0, "holdout_max_share": 0.05}
    assert sha256_file(tiny_prepared / "train.parquet") == hashes["train"]


def test_counts_equal_what_changed(tiny_prepared: Path, tmp_path: Path) -> None:
    src = PreparedData(tiny_prepared)
    m = mutate_prepared(tiny_prepared, tmp_path / "msg", MutateOptions(ratio=0.25, seed=5, kinds=("message",)))
    out = PreparedData(tmp_path / "msg")
    counts = m["mutation"]["counts"]
    assert set(counts) == {"message"}
    changed, relen, new = _changed(src.split("test"), out.split("test"))
    done = sum(v for k, v in counts["message"].items() if k != "unchanged")
    assert sum(counts["message"].values()) == round(0.25 * 32) == 8
    assert changed == new == done and relen == 0
    assert out.messages[:len(src.messages)] == src.messages  # old texts kept, new ones appended
    assert len(out.messages) - len(src.messages) == m["mutation"]["new_messages"] > 0
    assert out.split("test")["line_numbers"].to_list() == src.split("test")["line_numbers"].to_list()

    m = mutate_prepared(tiny_prepared, tmp_path / "seq", MutateOptions(ratio=0.5, seed=5, kinds=("sequence",)))
    out = PreparedData(tmp_path / "seq")
    c = m["mutation"]["counts"]["sequence"]
    changed, relen, new = _changed(src.split("test"), out.split("test"))
    assert sum(c.values()) == 16 and new == 0 and out.messages == src.messages
    assert changed == c["duplicate"] + c["remove"] + c["swap"] and relen == c["duplicate"] + c["remove"]
    a = out.split("test")
    for ids, lines, files in zip(a["message_ids"].to_list(), a["line_numbers"].to_list(), a["file_index"].to_list(),
                                 strict=True):
        assert len(ids) == len(lines) == len(files)


def test_text_and_event_operations() -> None:
    rng = np.random.default_rng(0)
    assert mutate_text("connection failed for <*>", "synonym", rng) in ("conn failed for <*>",
                                                                        "connection failure for <*>")
    assert mutate_text("open file", "synonym", rng) is None
    assert mutate_text("open", "remove", rng) is None
    assert len(mutate_text("open file <*>", "insert", rng).split()) == 4
    moved = mutate_text("open file <*>", "move_variable", rng)
    assert moved != "open file <*>" and sorted(moved.split()) == sorted("open file <*>".split())
    assert mutate_events([7], "remove", rng) is None and mutate_events([7, 7], "swap", rng) is None
    assert mutate_events([1, 2], "swap", rng) == [1, 0]
    dup = mutate_events([1, 2, 3], "duplicate", rng)
    assert len(dup) == 4 and len(set(dup)) == 3


def test_bad_options() -> None:
    with pytest.raises(DataError, match="--ratio 1.5"):
        MutateOptions(ratio=1.5)
    with pytest.raises(DataError, match="--kinds"):
        MutateOptions(kinds=("words",))  # type: ignore[arg-type]


def test_holdout_templates(tiny_prepared: Path, tmp_path: Path) -> None:
    m = mutate_prepared(tiny_prepared, tmp_path / "h",
                        MutateOptions(seed=0, holdout_templates=2, holdout_max_share=1.0))
    h = m["mutation"]["holdout"]
    held = h["normal"] + h["anomalous"]
    assert len(h["normal"]) == 1 and h["anomalous"] == [3]  # message 3 is only in anomalous sequences
    assert h["normal"][0] in (0, 1, 2, 4)
    out = PreparedData(tmp_path / "h")
    for s in ("train", "val"):
        ids = set(out.split(s)["message_ids"].explode().to_list())
        assert not ids & set(held)
    assert len(out.split("test")) == 32 + sum(h["moved_to_test"].values())
    assert m["splits"]["train"]["sequences"] == len(out.split("train")) < 64
    assert m["mutation"]["train_unchanged"] is False


def test_evaluate_guard_accepts_mutated_only(tiny_prepared: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    base = tmp_path / "base"  # the fixture's manifest has no split sizes; a copy through mutate has them
    mutate_prepared(tiny_prepared, base, MutateOptions(ratio=0.0))
    run = tmp_path / "run"
    run.mkdir()
    (run / RUN_DATA_MANIFEST).write_text((base / "manifest.json").read_text())
    mutate_prepared(base, tmp_path / "m", MutateOptions(ratio=0.3, seed=0))
    with caplog.at_level(logging.INFO, logger="logllm.data.manifest"):
        assert check_run_data(run, PreparedData(tmp_path / "m")) is None  # accepted without --allow-other-data
    assert "`logllm mutate` folder made from the data" in caplog.text
    mutate_prepared(base, tmp_path / "h", MutateOptions(holdout_templates=2, holdout_max_share=1.0))
    with pytest.raises(DataError, match="not the data"):
        check_run_data(run, PreparedData(tmp_path / "h"))  # re-split train: needs a new run
    # a run whose train table differs is refused, even with the same identity (options, inputs, sizes)
    other = json.loads((base / "manifest.json").read_text())
    other["files"]["train.parquet"]["sha256"] = "0" * 64
    (run / RUN_DATA_MANIFEST).write_text(json.dumps(other))
    with pytest.raises(DataError, match="train/val tables are not the run's"):
        check_run_data(run, PreparedData(tmp_path / "m"))
    # a run trained on the holdout folder evaluates on that folder as on any other
    (run / RUN_DATA_MANIFEST).write_text((tmp_path / "h" / "manifest.json").read_text())
    assert check_run_data(run, PreparedData(tmp_path / "h")) is None


def test_cli(tiny_prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mutate", str(tiny_prepared), "--out", str(tmp_path / "m"), "--ratio", "0.1", "--seed", "2",
                 "--kinds", "sequence"]) == 0
    assert "sequence: duplicate" in capsys.readouterr().out
    assert main(["mutate", str(tiny_prepared), "--out", str(tmp_path / "m"), "--ratio", "0.1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["mutate", str(tiny_prepared), "--out", str(tmp_path / "x"), "--kinds", "word"]) == 2


@pytest.mark.integration
def test_hdfs_slice(shared_data: Path, tmp_path: Path) -> None:
    """A small HDFS_2pct slice: real templates, mutations at every ratio, train never changed."""
    lines = (shared_data / "HDFS_2pct" / "HDFS_2pct.log").read_text().splitlines(keepends=True)[:20_000]
    (tmp_path / "slice.log").write_text("".join(lines))
    shutil.copy(shared_data / "HDFS_2pct" / "anomaly_label.csv", tmp_path / "labels.csv")
    assert main(["prepare", "hdfs", "--log", str(tmp_path / "slice.log"), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(tmp_path / "p")]) == 0
    train = sha256_file(tmp_path / "p" / "train.parquet")
    src = PreparedData(tmp_path / "p")
    for ratio in (0.0, 0.05, 0.1, 0.2, 0.3):
        m = mutate_prepared(tmp_path / "p", tmp_path / f"m{ratio}", MutateOptions(ratio=ratio, seed=0))
        mutate_prepared(tmp_path / "p", tmp_path / f"n{ratio}", MutateOptions(ratio=ratio, seed=0))
        assert _bytes(tmp_path / f"m{ratio}", "test.parquet") == _bytes(tmp_path / f"n{ratio}", "test.parquet")
        assert sha256_file(tmp_path / f"m{ratio}" / "train.parquet") == train
        changed, _, new = _changed(src.split("test"), PreparedData(tmp_path / f"m{ratio}").split("test"))
        msg = m["mutation"]["counts"]["message"]
        assert (changed == 0) == (ratio == 0.0) and new <= sum(msg.values()) - msg["unchanged"]
    assert _bytes(tmp_path / "m0.0", "test.parquet") == _bytes(tmp_path / "p", "test.parquet")
    h = mutate_prepared(tmp_path / "p", tmp_path / "h", MutateOptions(holdout_templates=4))["mutation"]["holdout"]
    held = set(h["normal"] + h["anomalous"])
    assert len(held) == 4 and h["anomalous"]  # a short group's share goes to the other
    out = PreparedData(tmp_path / "h")
    assert not held & set(out.split("train")["message_ids"].explode().to_list())
    assert held <= set(out.split("test")["message_ids"].explode().to_list())
