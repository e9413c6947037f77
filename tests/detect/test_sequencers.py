"""Detection cuts the sequences `prepare` cuts: the windowing rules are one code (`logllm.data.windows`),
and the detect package keeps one job per module."""

from __future__ import annotations

import ast
from pathlib import Path

import polars as pl

import logllm.detect
from logllm.data.windows import (
    time_bucket,
    time_bucket_expr,
    time_windows,
    window_count,
    window_starts,
    windows_holding,
)
from logllm.detect.sequencers import StreamLine, TimeWindowSequencer, WindowSequencer


def reference_window_starts(lo: int, hi: int, window: int, step: int) -> list[tuple[int, int]]:
    """The windowing rule spelled out: a window every ``step`` lines while it starts inside, the last
    one cut at ``hi``; stop after the first window that reaches ``hi``."""
    out, start = [], lo
    while start < hi:
        end = min(start + window, hi)
        out.append((start, end))
        if end >= hi:
            break
        start += step
    return out


def test_window_rules_match_the_reference():
    for window in range(1, 9):
        for step in range(1, 11):
            for n in range(0, 40):
                expected = reference_window_starts(5, 5 + n, window, step)
                assert window_starts(5, 5 + n, window, step) == expected, (n, window, step)
                assert window_count(n, window, step) == len(expected)
            for i in range(40):
                assert list(windows_holding(i, window, step)) == [
                    k for k in range(40) if k * step <= i < k * step + window], (i, window, step)


def test_streamed_windows_are_prepares_windows():
    for window in range(1, 7):
        for step in range(1, 9):
            for n in range(1, 30):
                seq = WindowSequencer(window, step)
                got = [s for i in range(1, n + 1) for s in seq.add(StreamLine("f", i, str(i), "m"))]
                got += seq.flush()
                expected = [(a + 1, b, "full" if b - a == window else "end")
                            for a, b in window_starts(0, n, window, step)]
                assert [(s.first_line, s.last_line, s.reason) for s in got] == expected, (n, window, step)
                assert all([ln.line_number for ln in s.lines] == list(range(s.first_line, s.last_line + 1))
                           for s in got)
                assert seq.open_lines == 0


def test_streamed_time_windows_are_prepares_time_windows():
    stamps = [-61.5, -60.0, -0.5, 0.0, 59.999, 60.0, 60.5, 119.0, 185.25, 185.5, 400.0]
    for seconds in (0.5, 1.0, 60.0, 90.0):
        assert [time_bucket(t, seconds) for t in stamps] == (
            pl.DataFrame({"t": stamps}).select(time_bucket_expr("t", seconds)).to_series().to_list())
        table = pl.DataFrame({"message_id": list(range(len(stamps))), "label": [0] * len(stamps),
                              "file_index": [0] * len(stamps), "line_number": list(range(1, len(stamps) + 1)),
                              "timestamp": stamps},
                             schema={"message_id": pl.UInt32, "label": pl.Int8, "file_index": pl.UInt16,
                                     "line_number": pl.UInt64, "timestamp": pl.Float64})
        prepared, _ = time_windows(table, [(0, len(stamps))], seconds)
        seq = TimeWindowSequencer(seconds)
        streamed = [s for i, t in enumerate(stamps, 1) for s in seq.add(StreamLine("f", i, "", "m", t), wall=0.0)]
        streamed += seq.flush()
        assert [[ln.line_number for ln in s.lines] for s in streamed] == prepared["line_numbers"].to_list()


def test_detect_is_a_package_of_small_modules_without_private_imports():
    package = Path(logllm.detect.__file__).parent
    modules = sorted(p.name for p in package.glob("*.py"))
    assert modules == ["__init__.py", "detector.py", "preprocess.py", "sequencers.py"]
    for path in package.glob("*.py"):
        assert len(path.read_text().splitlines()) < 500, path
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
    for name in ("Detector", "ParsedBatch", "SequencePolicy", "SessionSequencer", "StreamLine",
                 "WindowSequencer", "preprocessor_from_manifest"):
        assert name in logllm.detect.__all__ and hasattr(logllm.detect, name)


def test_key_sessions_join_across_files_unless_per_file():
    """A key's lines in two files are one session (its source: the first file; spans: each file's range),
    or with ``across_sources=False`` one session per file; a failed file's lines can be taken out."""
    from logllm.detect.sequencers import SessionSequencer

    def run(across: bool, drop: str | None = None) -> list:
        seq = SessionSequencer(r"blk_\d+", across_sources=across)
        for source, n, key in [("a.log", 3, "blk_1"), ("a.log", 5, "blk_2"), ("a.log", 9, "blk_1"),
                               ("b.log", 1, "blk_1"), ("b.log", 2, "blk_3")]:
            seq.add(StreamLine(source, n, f"{key} x", "m", keys=seq.keys(f"{key} x")))
        if drop:
            assert seq.drop_source(drop) == 2
        return seq.flush()

    joined = {s.sequence_id: s for s in run(True)}
    assert sorted(joined) == ["blk_1", "blk_2", "blk_3"]
    blk = joined["blk_1"]
    assert (blk.source, blk.key, blk.first_line, len(blk.lines)) == ("a.log", "blk_1", 3, 3)
    assert logllm.detect.line_spans((ln.source, ln.line_number) for ln in blk.lines) == [{"source": "a.log", "first_line": 3, "last_line": 9},
                         {"source": "b.log", "first_line": 1, "last_line": 1}]
    per_file = run(False)
    assert sorted((s.sequence_id, s.source, len(s.lines)) for s in per_file) == [
        ("blk_1", "a.log", 2), ("blk_1", "b.log", 1), ("blk_2", "a.log", 1), ("blk_3", "b.log", 1)]
    without_b = {s.sequence_id: s for s in run(True, drop="b.log")}
    assert sorted(without_b) == ["blk_1", "blk_2"] and {ln.source for ln in without_b["blk_1"].lines} == {"a.log"}
