"""Inputs of `logllm score`: globs, folders and files expand in order; gzip files read as detect reads plain ones."""

from __future__ import annotations

import gzip

import pytest

from logllm.errors import ConfigError
from logllm.follow import LineReader
from logllm.score import expand_inputs, read_lines
from logllm.score.inputs import LineCounts


def test_gzip_lines_equal_plain_lines(tmp_path):
    """CRLF, empty lines, a line cut at max_line_bytes and a last line without newline: as LineReader."""
    data = b"a 1\r\n\n" + b"x" * 200_000 + b"\nb 2\n" * 3 + b"\xff\xfe junk\nlast"
    plain, gz = tmp_path / "p.log", tmp_path / "g.log"  # gzip is told by its magic bytes, not its name
    plain.write_bytes(data)
    gz.write_bytes(gzip.compress(data))
    want = [(r.line_number, r.data) for r in LineReader([plain], max_line_bytes=70_000)]
    counts = LineCounts()
    got = [(r.line_number, r.data) for batch in read_lines(str(gz), 70_000, counts, batch_lines=2) for r in batch]
    assert got == want
    assert len(want) == 10 and want[2] == (3, b"x" * 70_000) and want[-1] == (10, b"last")
    assert (counts.lines, counts.cut_lines, counts.unterminated) == (10, 1, 1)


def test_expand_inputs_order_folders_globs_duplicates(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / ".git").mkdir()
    for name in ("d/b.log", "d/a.log.gz", "d/sub/c.log", "d/.git/x", "z.log"):
        (tmp_path / name).write_text("x\n")
    got = expand_inputs([str(tmp_path / "z.log"), str(tmp_path / "d"), str(tmp_path / "d" / "*.log")])
    assert got.files == [str(tmp_path / p) for p in ("z.log", "d/a.log.gz", "d/b.log", "d/sub/c.log")]
    assert (got.hidden_skipped, got.duplicates) == (1, 1)


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "missing.log"), "missing.log: no such file or folder"),
    (lambda p: str(p / "*.gz"), "*.gz: glob matches no file"),
    (lambda p: (p / "empty").mkdir() or str(p / "empty"), "empty: folder holds no files"),
])
def test_inputs_naming_nothing_are_errors(tmp_path, make, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        expand_inputs([make(tmp_path)])
