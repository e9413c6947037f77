"""Key sessions joined across files: HDFS blocks whose lines lie in two or three files are one session
in `logllm score` (in-process) and `logllm detect`, with the same score as the session read from one
file; `spans` name every file's range; a file that fails to read is named and left out."""

from __future__ import annotations

import json
from dataclasses import fields

import polars as pl
import pytest

from logllm.cli import main
from logllm.detect import InputCounts
from logllm.score import FileReport, PreprocessPlan, assemble, joined_rows

pytestmark = pytest.mark.integration


def detect(run, files, out, *extra) -> dict:
    assert main(["-q", "detect", str(run), *map(str, files), "--out", str(out), "--explain", "none", *extra]) == 0
    return {r["sequence_id"]: r for r in map(json.loads, out.read_text().splitlines())}


def score(run, files, out, *extra) -> tuple[dict, dict]:
    assert main(["-q", "score", str(run), *map(str, files), "--out", str(out), *extra]) in (0, 1)
    rows = pl.read_parquet(out / "detections" / "*.parquet").to_dicts()
    return {r["sequence_id"]: r for r in rows}, json.loads((out / "summary.json").read_text())


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for sid, w in want.items():
        g = got[sid]
        for col in ("source", "first_line", "last_line", "lines", "reason", "label", "spans"):
            assert g[col] == w[col], (sid, col)
        assert g["score"] == pytest.approx(w["score"], abs=1e-6), sid


def score_equals_detect_across_files(run, parts, tmp_path) -> tuple[dict, dict, set]:
    """`score` on ``parts`` gives `detect`'s sequences; more than 20 of them join lines of several files,
    and the summary counts them. Returns detect's sequences, score's summary and the joined ids."""
    want = detect(run, parts, tmp_path / "parts.jsonl")
    got, summary = score(run, parts, tmp_path / "scored")
    assert_same(got, want)
    joined = {sid for sid, d in want.items() if len({s["source"] for s in d["spans"]}) > 1}
    assert len(joined) > 20 and summary["sessions_across_files"] == len(joined)
    assert summary["session_scope"] == "across-files" and summary["totals"]["sequences"] == len(want)
    return want, summary, joined


def test_sessions_across_files_equal_detect_and_one_file(hdfs_run, tmp_path):
    run, parts, whole = hdfs_run["run"], hdfs_run["parts"], hdfs_run["whole"]
    want, summary, joined = score_equals_detect_across_files(run, parts, tmp_path)
    assert [f["sequences"] for f in summary["per_file"]] == [
        sum(d["source"] == str(p) for d in want.values()) for p in parts]
    # The same lines in one file: the same sessions (same content, same score); the spans map onto its lines.
    one = detect(run, [whole], tmp_path / "whole.jsonl")
    assert one.keys() == want.keys()
    offset = {str(p): 1000 * k for k, p in enumerate(parts)}
    for sid, d in want.items():
        o = one[sid]
        assert (o["lines"], o["reason"]) == (d["lines"], d["reason"])
        assert o["score"] == pytest.approx(d["score"], abs=1e-6), sid
        first, last = d["spans"][0], d["spans"][-1]
        assert (o["first_line"], o["last_line"]) == (offset[first["source"]] + first["first_line"],
                                                     offset[last["source"]] + last["last_line"])
        assert sum(s["last_line"] - s["first_line"] + 1 for s in d["spans"]) >= d["lines"]
        assert (d["source"], d["first_line"]) == (first["source"], first["first_line"])
    # Per file (the former behaviour, an option): a joined block is one session in each of its files.
    per_file, s2 = score(run, parts, tmp_path / "per_file", "--per-file-sessions")
    assert s2["session_scope"] == "per-file" and s2["sessions_across_files"] == 0
    assert s2["totals"]["sequences"] == len(want) + sum(len(want[sid]["spans"]) - 1 for sid in joined)
    assert len(per_file) < s2["totals"]["sequences"]  # ids repeat, one session per file
    out = tmp_path / "per_file.jsonl"
    assert main(["-q", "detect", str(run), *map(str, parts), "--out", str(out), "--explain", "none",
                 "--per-file-sessions"]) == 0
    by_file = {(r["source"], r["sequence_id"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert len(by_file) == s2["totals"]["sequences"]
    assert all(len(r["spans"]) == 1 for r in by_file.values())


def test_flagged_sessions_explain_lines_of_every_file(hdfs_run, tmp_path):
    run, parts = hdfs_run["run"], hdfs_run["parts"]
    out = tmp_path / "d.jsonl"
    assert main(["-q", "detect", str(run), *map(str, parts), "--out", str(out), "--explain", "all",
                 "--top-k", "50", "--explain-repeats"]) == 0
    dets = [json.loads(line) for line in out.read_text().splitlines()]
    joined = [d for d in dets if len(d["spans"]) > 1]
    assert joined
    for d in joined:
        assert {t["source"] for t in d["top"]} == {s["source"] for s in d["spans"]}
        for t in d["top"]:
            assert any(s["source"] == t["source"] and s["first_line"] <= t["line"] <= s["last_line"]
                       for s in d["spans"])


def test_a_file_that_fails_is_named_and_the_others_are_joined(hdfs_run, tmp_path, capsys):
    run, parts, bad = hdfs_run["run"], hdfs_run["parts"], hdfs_run["bad"]
    want = detect(run, [parts[0], parts[2]], tmp_path / "good.jsonl")
    got, summary = score(run, [parts[0], bad, parts[2]], tmp_path / "scored")
    assert_same(got, want)
    [failed] = summary["files_failed"]
    assert failed["path"] == str(bad) and "EOFError" in failed["error"]
    assert summary["files_scored"] == 2 and "lines_dropped" in summary["per_file"][1]
    assert f"failed: {bad}" in capsys.readouterr().err
    # In smaller batches the bad file's first lines join open sessions before it fails: taken out again.
    manifest = json.loads((run / "data_manifest.json").read_text())
    rows = list(joined_rows([str(parts[0]), str(bad), str(parts[2])], PreprocessPlan(manifest, {}, batch_lines=100)))
    report = FileReport.from_json(next(r["report"] for r in rows if r["kind"] == "file" and r["file_index"] == 1))
    assert report.error and report.lines_used >= 100
    sessions = {r["sequence_id"]: (r["lines"], json.loads(r["spans"])) for r in rows if r["kind"] == "sequence"}
    assert sessions == {sid: (d["lines"], d["spans"]) for sid, d in want.items()}


def test_assemble_orders_parts_by_file_then_line_and_cuts_as_detect():
    def part(file_index, first, lines):
        return {"file_index": file_index, "key": "blk_1", "source": f"f{file_index}", "first_line": first,
                "payload": json.dumps([[n, f"m{file_index}.{n}"] for n in lines])}

    rows = assemble([part(1, 2, [2, 3]), part(0, 7, [7, 9]), part(0, 1, [1, 4])], max_session_lines=4)
    assert [(r["sequence_id"], r["lines"], r["reason"], r["source"], r["file_index"]) for r in rows] == [
        ("blk_1", 4, "max_lines", "f0", 0), ("blk_1#2", 2, "end", "f1", 1)]
    assert rows[0]["messages"] == ["m0.1", "m0.4", "m0.7", "m0.9"]
    assert json.loads(rows[0]["spans"]) == [{"source": "f0", "first_line": 1, "last_line": 9}]
    assert (rows[1]["first_line"], rows[1]["last_line"]) == (2, 3)


def test_file_report_counts_are_detects_counts():
    """One definition of the counts: a file report holds every count of detect's `InputCounts`, and
    its JSON keeps the keys (and the leading file_index, path) of the summary's ``per_file`` entries."""
    assert {f.name for f in fields(InputCounts)} < {f.name for f in fields(FileReport)}
    keys = list(FileReport(file_index=3, path="x").to_dict())
    assert keys[:2] == ["file_index", "path"]
    assert set(keys) == {"file_index", "path", "lines_read", "lines_used", "sequences", "empty", "binary",
                         "invalid_utf8", "unparsed", "unparsed_skipped", "no_session_key", "evicted_sessions",
                         "cut_lines", "unterminated", "seconds", "error"}


def test_session_field_run_scores_as_detect_across_files(hdfs_json_run, hdfs_run, tmp_path):
    """A run prepared with ``--format json --session-field block``: `score` (in-process) gives detect's
    sessions, spans and scores on the JSON lines cut into two files; they are the sessions of the same
    lines as text sessioned by the ``blk_`` regex (same model: same scores), joined across the files."""
    run, parts, whole = hdfs_json_run["run"], hdfs_json_run["parts"], hdfs_json_run["whole"]
    want, summary, joined = score_equals_detect_across_files(run, parts, tmp_path)
    assert [(f["no_session_key"], f["unparsed"]) for f in summary["per_file"]] == [(3, 1), (0, 0)]
    assert summary["totals"]["lines_read"] == 3003
    # One file of JSON lines: detect's sessions again, and those of the text run (regex) on the same lines.
    one, _ = score(run, [whole], tmp_path / "whole")
    assert_same(one, detect(run, [whole], tmp_path / "whole.jsonl"))
    text = detect(hdfs_run["run"], [hdfs_run["whole"]], tmp_path / "text.jsonl")
    assert one.keys() == text.keys() == want.keys()
    offset = {str(parts[0]): 0, str(parts[1]): 1500}
    for sid, t in text.items():
        o, d = one[sid], want[sid]
        assert (o["first_line"], o["last_line"], o["lines"], o["reason"]) == (
            t["first_line"], t["last_line"], t["lines"], t["reason"]), sid
        assert o["score"] == pytest.approx(t["score"], abs=1e-6) and d["score"] == pytest.approx(t["score"], abs=1e-6)
        first, last = d["spans"][0], d["spans"][-1]
        assert (offset[first["source"]] + first["first_line"], offset[last["source"]] + last["last_line"]) == (
            t["first_line"], t["last_line"]), sid
    # Per file (an option): a joined block is one session in each of its files, as detect makes them.
    per_file, s2 = score(run, parts, tmp_path / "per_file", "--per-file-sessions")
    assert s2["totals"]["sequences"] == len(want) + len(joined)
    out = tmp_path / "per_file.jsonl"
    assert main(["-q", "detect", str(run), *map(str, parts), "--out", str(out), "--explain", "none",
                 "--per-file-sessions"]) == 0
    by_file = {(r["source"], r["sequence_id"]): r for r in map(json.loads, out.read_text().splitlines())}
    frame = pl.read_parquet(tmp_path / "per_file" / "detections" / "*.parquet").to_dicts()
    assert {(r["source"], r["sequence_id"]) for r in frame} == set(by_file) and len(by_file) == len(frame)
    for r in frame:
        w = by_file[(r["source"], r["sequence_id"])]
        assert (r["first_line"], r["last_line"], r["lines"]) == (w["first_line"], w["last_line"], w["lines"])
        assert r["score"] == pytest.approx(w["score"], abs=1e-6)
    # A joined session's spans are its per-file sessions' line ranges, in file order.
    for sid, d in want.items():
        assert d["spans"] == [{"source": str(p), "first_line": by_file[(str(p), sid)]["first_line"],
                               "last_line": by_file[(str(p), sid)]["last_line"]}
                              for p in parts if (str(p), sid) in by_file], sid
        assert d["lines"] == sum(by_file[(str(p), sid)]["lines"] for p in parts if (str(p), sid) in by_file)

