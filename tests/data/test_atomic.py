"""A prepared folder is written whole or not at all: atomic rename, --overwrite, a lock against a
second writer, a manifest that covers every table, and a reader that refuses a torn or mixed folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from logllm.cli import main
from logllm.data import dataset
from logllm.data.dataset import PreparedData, PreparedWriter
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.errors import ConfigError, DataError

SRC = Path(__file__).resolve().parents[2] / "src"


def bgl(shared_data: Path) -> str:
    return str(shared_data / "BGL_2k" / "BGL_2k.log")


def tables(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.parquet"))}


def test_reprepare_refuses_without_overwrite_and_replaces_the_whole_folder_with_it(
        shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "x"
    base = ["-q", "prepare", "bgl", "--log", bgl(shared_data), "--window", "20", "--out", str(out), "--no-progress"]
    assert main([*base, "--val-ratio", "0.2"]) == 0
    assert PreparedData(out).has_split("val")
    before = tables(out)
    capsys.readouterr()
    assert main(base) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err and err.count("\n") == 1
    assert tables(out) == before  # refused: untouched
    assert main([*base, "--overwrite"]) == 0
    data = PreparedData(out)
    assert not data.has_split("val") and not (out / "val.parquet").exists()  # no stale val left behind
    assert data.split("train").height == data.manifest["splits"]["train"]["sequences"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # no temporary folder or lock file left


def test_a_folder_that_is_not_a_prepared_one_is_never_replaced(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    o = PrepareOptions(family="bgl", inputs=(bgl(shared_data),))
    with pytest.raises(DataError, match="not a prepared folder"):
        prepare(o, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me"
    (out / "notes.txt").unlink()
    prepare(o, out)  # an empty folder is fine
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="existing file"):
        prepare(o, tmp_path / "file")


def test_a_second_writer_fails_at_once_with_a_clear_message(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "x"
    o = PrepareOptions(family="bgl", inputs=(bgl(shared_data),))
    with PreparedWriter(out):  # another prepare holds the folder
        with pytest.raises(DataError, match="another `logllm prepare` is writing"):
            prepare(o, out)
    assert not out.exists()
    prepare(o, out)  # once the lock is released
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_an_interrupt_during_the_writes_leaves_the_old_folder_intact(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "x"
    prepare(PrepareOptions(family="bgl", inputs=(bgl(shared_data),), window=20, val_ratio=0.2), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = dataset._write_parquets

    def interrupted(root, tables):
        name = next(iter(tables))
        tables[name].write_parquet(root / name)  # one table written, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "_write_parquets", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(PrepareOptions(family="bgl", inputs=(bgl(shared_data),), window=50), out, overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    PreparedData(out).verify()
    monkeypatch.setattr(dataset, "_write_parquets", real)
    prepare(PrepareOptions(family="bgl", inputs=(bgl(shared_data),), window=50), out, overwrite=True)
    assert PreparedData(out).manifest["options"]["window"] == 50


def test_the_reader_refuses_a_mixed_or_torn_folder(shared_data: Path, tmp_path: Path) -> None:
    with_val, without = tmp_path / "a", tmp_path / "b"
    prepare(PrepareOptions(family="bgl", inputs=(bgl(shared_data),), window=20, val_ratio=0.2), with_val)
    prepare(PrepareOptions(family="bgl", inputs=(bgl(shared_data),), window=20), without)
    # a val.parquet left by an earlier prepare (what writing in place used to leave)
    shutil.copy(with_val / "val.parquet", without / "val.parquet")
    with pytest.raises(DataError, match=r"val.parquet is not in the manifest.*--overwrite"):
        PreparedData(without)
    (without / "val.parquet").unlink()
    # a table of another prepare: the size differs
    shutil.copy(with_val / "train.parquet", without / "train.parquet")
    with pytest.raises(DataError, match="train.parquet has .* bytes, the manifest says"):
        PreparedData(without)
    # a torn table of the same size: verify() compares sha256
    shutil.copy(with_val / "train.parquet", without / "train.parquet")
    prepare(PrepareOptions(family="bgl", inputs=(bgl(shared_data),), window=20), without, overwrite=True)
    raw = bytearray((without / "test.parquet").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (without / "test.parquet").write_bytes(bytes(raw))
    data = PreparedData(without)
    with pytest.raises(DataError, match="test.parquet does not match its sha256"):
        data.verify()
    # a missing table
    (without / "test.parquet").unlink()
    with pytest.raises(DataError, match="test.parquet is missing"):
        PreparedData(without)


def test_a_folder_without_file_records_loads_with_a_warning(shared_data: Path, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "old"
    prepare(PrepareOptions(family="bgl", inputs=(bgl(shared_data),)), out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"messages.parquet", "train.parquet", "test.parquet"}
    assert all(len(r["sha256"]) == 64 and r["bytes"] == (out / n).stat().st_size for n, r in manifest["files"].items())
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        PreparedData(out).verify()
    assert "--overwrite" in caplog.text


def test_a_random_split_of_overlapping_windows_is_refused(shared_data: Path, tmp_path: Path) -> None:
    o = PrepareOptions(family="bgl", inputs=(bgl(shared_data),), window=20, step=5, split="random")
    with pytest.raises(ConfigError, match=r"--step 5 < --window 20.*--split chronological"):
        o.resolved()
    from dataclasses import replace

    replace(o, split="chronological").resolved()  # windows built inside each part: fine
    replace(o, step=20).resolved()  # windows that do not overlap: fine


def _prepare_cmd(log: str, out: Path, seed: int, copies: int) -> list[str]:
    return [sys.executable, "-m", "logllm", "-q", "prepare", "bgl", "--log", *([log] * copies), "--window", "20",
            "--split", "random", "--seed", str(seed), "--val-ratio", "0.2", "--out", str(out), "--overwrite",
            "--no-progress"]


def test_concurrent_prepares_never_leave_a_torn_or_mixed_folder(shared_data: Path, tmp_path: Path) -> None:
    log, copies = bgl(shared_data), 8  # the log 8 times over: long enough for the writers to overlap
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    reference = {}
    for seed in (1, 2):
        ref = tmp_path / f"ref{seed}"
        subprocess.run(_prepare_cmd(log, ref, seed, copies), env=env, check=True, timeout=120)
        reference[seed] = tables(ref)
    assert reference[1]["test.parquet"] != reference[2]["test.parquet"]
    out = tmp_path / "shared"
    for _ in range(3):
        procs = [subprocess.Popen(_prepare_cmd(log, out, seed, copies), env=env, stderr=subprocess.PIPE, text=True)
                 for seed in (1, 2)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        for p in procs:
            p.stderr.close()
        assert any(rc == 0 for rc, _ in results), results
        for rc, err in results:
            assert rc in (0, 2), err
            if rc == 2:  # the loser fails cleanly, in one line, naming the lock
                assert "another `logllm prepare` is writing" in err and err.count("\n") == 1, err
        data = PreparedData(out)
        data.verify()
        assert tables(out) == reference[data.manifest["seed"]]  # complete, and all of one prepare
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ref1", "ref2", "shared"]
