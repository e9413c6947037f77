"""`logllm score --engine ray` (2 scoring actors on a local Ray cluster) writes what the in-process engine
writes, which is what `logllm detect` finds (tests/score/test_score_local.py); a bad file is named."""

from __future__ import annotations

import json

import polars as pl
import pytest

from logllm.cli import main

ray = pytest.importorskip("ray", reason="Ray is the optional extra logllm[scale]")
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_ray_engine_equals_local_and_names_a_bad_file(tb_run, bad_gz, tmp_path):
    run = str(tb_run["run"])
    files = [str(tb_run["logs"][0]), str(bad_gz), str(tb_run["gz"])]
    assert main(["-q", "score", run, *files, "--out", str(tmp_path / "local")]) == 1
    assert main(["-q", "score", run, *files, "--out", str(tmp_path / "ray"), "--engine", "ray",
                 "--workers", "2"]) == 1
    assert not ray.is_initialized()  # the local cluster it started is shut down
    parts = sorted(p.name for p in (tmp_path / "ray" / "detections").iterdir())
    assert parts == ["part-00000.parquet", "part-00002.parquet"]
    for name in parts:
        local = pl.read_parquet(tmp_path / "local" / "detections" / name)
        remote = pl.read_parquet(tmp_path / "ray" / "detections" / name)
        assert local.height == 15
        assert local.drop("score").equals(remote.drop("score"))  # same windows, line numbers, labels, order
        assert (local["score"] - remote["score"]).abs().max() < 1e-6
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("local", "ray")]
    assert [s["engine"] for s in summaries] == ["local", "ray"] and summaries[1]["workers"] == 2
    for s in summaries:
        assert [f["path"] for f in s["files_failed"]] == [str(bad_gz)]
        assert s["files_scored"] == 2 and s["totals"]["lines_read"] == 3000


def local_equals_ray(run: str, files: list[str], tmp_path, exit_codes: tuple[int, ...]) -> tuple[dict, dict]:
    """Score ``files`` in-process and on Ray (2 workers): the same rows, scores within 1e-6, and more than
    20 sessions joined across files by both. Returns the two summaries (local, Ray)."""
    got = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        rc = main(["-q", "score", run, *files, "--out", str(out), "--engine", engine, "--workers", "2"])
        assert rc in exit_codes
        frame = pl.read_parquet(out / "detections" / "*.parquet").sort("sequence_id")
        got[engine] = (frame, json.loads((out / "summary.json").read_text()))
    (local, ls), (remote, rs) = got["local"], got["ray"]
    assert local.height > 100 and local.drop("score").equals(remote.drop("score"))
    assert (local["score"] - remote["score"]).abs().max() < 1e-6
    assert ls["sessions_across_files"] == rs["sessions_across_files"] > 20
    return ls, rs


def test_ray_joins_sessions_across_files_as_local(hdfs_run, tmp_path):
    """Session parts per file in CPU tasks, grouped by key before scoring: the sessions, spans and scores
    (within 1e-6) of the in-process engine, which are detect's (test_joined_sessions.py); a bad file named."""
    run = str(hdfs_run["run"])
    files = [*map(str, hdfs_run["parts"]), str(hdfs_run["bad"])]
    ls, rs = local_equals_ray(run, files, tmp_path, exit_codes=(1,))
    assert [f["path"] for f in rs["files_failed"]] == [files[-1]] and rs["files_scored"] == 3
    assert [f["sequences"] for f in ls["per_file"]] == [f["sequences"] for f in rs["per_file"]]


def test_ray_session_field_run_equals_local(hdfs_json_run, tmp_path):
    """A run prepared with ``--format json --session-field block``: the record keys are read in the CPU
    tasks, the parts joined by key give the in-process engine's sessions, spans, counts and scores."""
    run, files = str(hdfs_json_run["run"]), [*map(str, hdfs_json_run["parts"])]
    ls, rs = local_equals_ray(run, files, tmp_path, exit_codes=(0, 1))
    for key in ("sequences", "no_session_key", "unparsed", "lines_read"):
        assert [f[key] for f in ls["per_file"]] == [f[key] for f in rs["per_file"]], key
    assert rs["per_file"][0]["no_session_key"] == 3
