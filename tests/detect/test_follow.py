from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from logllm.errors import ConfigError, DataError
from logllm.follow import LineReader, RawLine

# A writer in another process: appends N lines (flushing each, with tiny pauses), renames the file
# away midway and goes on in a fresh file at the same path, as logrotate does without copytruncate.
WRITER = r"""
import os, sys, time
path, n, rotate_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fh = open(path, "a")
for i in range(n):
    if i == rotate_at:
        fh.close()
        os.rename(path, path + ".1")
        fh = open(path, "a")
    fh.write(f"line {i}\n")
    fh.flush()
    if i % 50 == 0:
        time.sleep(0.01)
fh.close()
"""


def _collect(reader: LineReader, want: int, deadline_s: float = 30.0) -> list[RawLine]:
    got: list[RawLine] = []
    end = time.monotonic() + deadline_s
    for batch in reader.batches():
        got.extend(batch)
        if len(got) >= want or time.monotonic() > end:
            reader.stop.set()
    return got


def test_follow_survives_rotation_every_line_once(tmp_path: Path):
    path = tmp_path / "app.log"
    path.write_text("")
    n, rotate_at = 2000, 1100
    reader = LineReader([path], follow=True, poll_interval=0.02)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(rotate_at)])
    try:
        got = _collect(reader, n)
    finally:
        writer.wait(timeout=30)
    texts = [line.data.decode() for line in got]
    assert texts == [f"line {i}" for i in range(n)]
    # Line numbers restart in the new file; the old file's lines keep theirs.
    assert [line.line_number for line in got[:rotate_at]] == list(range(1, rotate_at + 1))
    assert [line.line_number for line in got[rotate_at:]] == list(range(1, n - rotate_at + 1))
    assert reader.stats.rotations == 1
    assert reader.stats.lines == n


def test_follow_truncation_and_partial_lines(tmp_path: Path):
    path = tmp_path / "app.log"
    path.write_bytes(b"a1\na2\npart")
    stop = threading.Event()
    reader = LineReader([path], follow=True, poll_interval=0.01, stop=stop)
    batches = reader.batches()
    got: list[RawLine] = []

    def pull_until(k: int) -> None:
        end = time.monotonic() + 10
        while len(got) < k and time.monotonic() < end:
            got.extend(next(batches))

    pull_until(2)
    assert [g.data for g in got] == [b"a1", b"a2"]  # "part" has no newline yet: held back
    for _ in range(5):
        got.extend(next(batches))
    assert len(got) == 2
    with open(path, "ab") as fh:
        fh.write(b"ial\r\n")
    pull_until(3)
    assert got[2] == RawLine(str(path), 3, b"partial")  # joined across two reads, CR removed
    # copytruncate-style truncation: the file shrinks and is written again from the start.
    with open(path, "r+b") as fh:
        fh.truncate(0)
    for _ in range(3):
        got.extend(next(batches))
    with open(path, "ab") as fh:
        fh.write(b"b1\n")
    pull_until(4)
    assert got[3] == RawLine(str(path), 1, b"b1")
    assert reader.stats.truncations == 1
    stop.set()
    list(batches)


def test_long_line_is_cut_and_counted(tmp_path: Path):
    path = tmp_path / "big.log"
    path.write_bytes(b"x" * 5000 + b"\nshort\nlast-no-newline")
    reader = LineReader([path], max_line_bytes=100, chunk_size=64)
    lines = list(reader)
    assert [len(line.data) for line in lines] == [100, 5, 15]
    assert [line.line_number for line in lines] == [1, 2, 3]
    assert reader.stats.cut_lines == 1
    assert reader.stats.unterminated == 1


def test_follow_waits_for_missing_file_and_stops(tmp_path: Path):
    path = tmp_path / "later.log"
    reader = LineReader([path], follow=True, poll_interval=0.01)
    batches = reader.batches()
    assert next(batches) == []  # nothing yet, no error
    path.write_text("hello\n")
    got: list[RawLine] = []
    end = time.monotonic() + 10
    while not got and time.monotonic() < end:
        got.extend(next(batches))
    assert got == [RawLine(str(path), 1, b"hello")]
    reader.stop.set()
    assert list(batches) == []


def test_stop_reads_what_was_written(tmp_path: Path):
    path = tmp_path / "x.log"
    path.write_text("1\n2\n")
    reader = LineReader([path], follow=True, poll_interval=0.01)
    reader.stop.set()  # stopped before the first poll: the written lines are still delivered
    assert [line.data for line in reader] == [b"1", b"2"]


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(DataError, match="no such file"):
        LineReader([tmp_path / "nope.log"])
    with pytest.raises(ConfigError, match="cannot be followed"):
        LineReader(["-"], follow=True)


def test_sigterm_stops_follow_cleanly(tmp_path: Path):
    """A process following a file exits with its summary when sent SIGTERM."""
    path = tmp_path / "x.log"
    path.write_text("a\nb\n")
    script = (
        "import sys, threading\n"
        "from logllm.follow import LineReader, stop_on_signals\n"
        "stop = threading.Event()\n"
        "with stop_on_signals(stop):\n"
        "    r = LineReader([sys.argv[1]], follow=True, poll_interval=0.02, stop=stop)\n"
        "    for line in r:\n"
        "        print(line.data.decode(), flush=True)\n"
        "print('lines', r.stats.lines, flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "a"
    assert proc.stdout.readline().strip() == "b"
    os.kill(proc.pid, 15)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.strip().splitlines()[-1] == "lines 2"


def test_follow_from_end_skips_existing_lines(tmp_path: Path):
    path = tmp_path / "x.log"
    path.write_text("old 1\nold 2\nunfin")
    reader = LineReader([path], follow=True, poll_interval=0.01, from_end=True, chunk_size=4)
    batches = reader.batches()
    assert next(batches) == []
    with open(path, "a") as fh:
        fh.write("ished\nnew\n")
    got: list[RawLine] = []
    end = time.monotonic() + 10
    while len(got) < 2 and time.monotonic() < end:
        got.extend(next(batches))
    # Line numbers stay the file's; the line unfinished at the start is read whole.
    assert got == [RawLine(str(path), 3, b"unfinished"), RawLine(str(path), 4, b"new")]
    reader.stop.set()
    list(batches)
