"""`logllm score` in-process gives `logllm detect`'s detections; bad files are named, the rest scored."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest

from logllm.cli import main

pytestmark = pytest.mark.integration


def detect(run, files, tmp_path, *extra) -> dict:
    out = tmp_path / "detect.jsonl"
    assert main(["-q", "detect", str(run), *map(str, files), "--out", str(out), "--explain", "none", *extra]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {(r["source"], r["sequence_id"]): r for r in rows}


def scored(out) -> dict:
    frame = pl.read_parquet(out / "detections" / "*.parquet")
    return {(r["source"], r["sequence_id"]): r for r in frame.to_dicts()}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, w in want.items():
        g = got[key]
        for col in ("first_line", "last_line", "lines", "reason", "label", "anomalous", "threshold"):
            assert g[col] == w[col], (key, col)
        assert g["score"] == pytest.approx(w["score"], abs=1e-6), key


@pytest.fixture(scope="module")
def threshold(tb_run, tmp_path_factory) -> float:
    """The median score of detect on the pieces: both labels occur, so labels are compared too."""
    got = detect(tb_run["run"], tb_run["logs"], tmp_path_factory.mktemp("t"))
    scores = sorted(r["score"] for r in got.values())
    return scores[len(scores) // 2]


@pytest.mark.parametrize("extra", [[], ["--session-regex", r"\w+\[\d+\]"]], ids=["windows", "sessions"])
def test_local_score_equals_detect(tb_run, tmp_path, threshold, extra):
    want = detect(tb_run["run"], tb_run["logs"], tmp_path, "--threshold", str(threshold), *extra)
    out = tmp_path / "scored"
    assert main(["-q", "score", str(tb_run["run"]), *map(str, tb_run["logs"]), "--out", str(out),
                 "--threshold", str(threshold), *extra]) == 0
    got = scored(out)
    assert_same(got, want)
    assert {r["label"] for r in got.values()} == {"anomalous", "normal"}
    if not extra:  # 1,500 lines in 100-line windows per piece
        assert len(got) == 30
    summary = json.loads((out / "summary.json").read_text())
    assert summary["totals"]["lines_read"] == 3000
    assert summary["totals"]["sequences"] == len(want)
    assert summary["files_scored"] == 2 and summary["files_failed"] == []
    parts = ["detections/part-00000.parquet", "detections/part-00001.parquet"]
    if extra:  # key sessions are joined across the files: written by session, not by file
        parts = [None, None]
        assert summary["session_scope"] == "across-files"
        assert summary["partitions"] == ["detections/sessions-00000.parquet"]
    assert [f["partition"] for f in summary["per_file"]] == parts


def test_gzip_folder_and_glob_inputs(tb_run, tmp_path):
    """A .gz file scores as its plain twin; a folder and a glob name the same files as a list."""
    plain, gz = tb_run["logs"][1], tb_run["gz"]
    assert main(["-q", "score", str(tb_run["run"]), str(plain), str(gz), "--out", str(tmp_path / "a")]) == 0
    frame = pl.read_parquet(tmp_path / "a" / "detections" / "*.parquet")
    by_source = frame.partition_by("source", as_dict=True)
    a = by_source[(str(plain),)].drop("source", "sequence_id", "spans")
    b = by_source[(str(gz),)].drop("source", "sequence_id", "spans")
    assert a.height == 15 and a.equals(b)
    folder = tmp_path / "logs"
    folder.mkdir()
    for p in tb_run["logs"]:
        shutil.copy(p, folder / p.name)
    (folder / ".hidden.log").write_text("x\n")
    assert main(["-q", "score", str(tb_run["run"]), str(folder), "--out", str(tmp_path / "b")]) == 0
    assert main(["-q", "score", str(tb_run["run"]), str(folder / "tb_*.log"), "--out", str(tmp_path / "c")]) == 0
    sb = json.loads((tmp_path / "b" / "summary.json").read_text())
    sc = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert [f["path"] for f in sb["per_file"]] == [f["path"] for f in sc["per_file"]] == [
        str(folder / "tb_a.log"), str(folder / "tb_b.log")]
    assert sb["hidden_skipped"] == 1


def test_a_bad_file_is_named_and_the_others_are_scored(tb_run, bad_gz, tmp_path, capsys):
    out = tmp_path / "out"
    files = [tb_run["logs"][0], bad_gz, tb_run["logs"][1]]
    assert main(["-q", "score", str(tb_run["run"]), *map(str, files), "--out", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files_scored"] == 2
    [failed] = summary["files_failed"]
    assert failed["path"] == str(bad_gz) and "EOFError" in failed["error"] and failed["lines_read"] > 0
    assert sorted(p.name for p in (out / "detections").iterdir()) == ["part-00000.parquet", "part-00002.parquet"]
    assert set(pl.read_parquet(out / "detections" / "*.parquet")["source"]) == {str(f) for f in files[::2]}
    assert f"failed: {bad_gz}" in capsys.readouterr().err


def test_user_errors_are_one_line(tb_run, tmp_path, capsys):
    run = str(tb_run["run"])
    assert main(["score", run, str(tmp_path / "nope.log"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.log: no such file or folder" in capsys.readouterr().err
    assert main(["score", run, str(tmp_path / "*.gz"), "--out", str(tmp_path / "o")]) == 2
    assert "glob matches no file" in capsys.readouterr().err
    log = str(tb_run["logs"][0])
    assert main(["-q", "score", run, log, "--out", str(tmp_path / "o")]) == 0
    assert main(["score", run, log, "--out", str(tmp_path / "o")]) == 2
    assert "holds an earlier result" in capsys.readouterr().err
    assert main(["score", run, log, "--out", str(tmp_path / "o"), "--address", "localhost:6379"]) == 2
    assert "--address joins a Ray cluster; it needs --engine ray" in capsys.readouterr().err
    assert main(["score", run, log, "--out", str(tmp_path / "o2"), "--threshold", "1.5"]) == 2
    assert "--threshold must be in [0, 1]" in capsys.readouterr().err
