"""Reading raw log lines from files, stdin, or growing files (`tail -F` semantics).

`LineReader` yields `RawLine(source, line_number, data)` with ``data`` the line's bytes without
the newline. In follow mode it keeps polling the files, and:

- survives **rotation by rename** (the path now names another inode): the old file is read to its
  end first, then the new file is opened at its start, so no line is lost or read twice;
- survives **truncation** (the file got shorter than what was read): reading restarts at 0;
- waits for a file that does not exist yet, or that disappeared during a rotation;
- keeps memory bounded however long it runs: reads happen in chunks, and a partial last line is
  buffered only up to ``max_line_bytes`` (longer lines are cut, counted and logged);
- stops cleanly when ``stop`` is set (see `stop_on_signals` for Ctrl-C / SIGTERM).

Line numbers are 1-based and restart at 1 in a new file after a rotation or a truncation, as they
would if the file were read from scratch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from logllm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

STDIN = "-"


class RawLine(NamedTuple):
    """One line as read: where it came from, its 1-based line number there, its bytes (no newline)."""

    source: str
    line_number: int
    data: bytes


@dataclass
class ReadStats:
    """Counts kept while reading; nothing is dropped without being counted here."""

    lines: int = 0
    bytes: int = 0
    cut_lines: int = 0  # lines longer than max_line_bytes, cut to that length
    unterminated: int = 0  # a last line without a newline, emitted at end of file / rotation
    rotations: int = 0
    truncations: int = 0
    per_source: dict[str, int] = field(default_factory=dict)


class _Tail:
    """The state of one followed path: open file, identity, offset, partial line, line counter."""

    def __init__(self, path: str, chunk_size: int, max_line_bytes: int, stats: ReadStats):
        self.path = path
        self.chunk_size = chunk_size
        self.max_line_bytes = max_line_bytes
        self.stats = stats
        self.fh: BinaryIO | None = None
        self.ident: tuple[int, int] | None = None
        self.pos = 0
        self.partial = bytearray()
        self.skipping = False  # inside an over-long line, discarding bytes until its newline
        self.line_number = 0
        self.waiting_logged = False

    # -- opening and identity ------------------------------------------------------------------
    def _open(self, from_end: bool = False) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open across polls on purpose
        except FileNotFoundError:
            if not self.waiting_logged:
                log.info("%s: does not exist (yet); waiting for it", self.path)
                self.waiting_logged = True
            return False
        st = os.fstat(fh.fileno())
        self.fh, self.ident = fh, (st.st_dev, st.st_ino)
        self.pos = 0
        self.partial.clear()
        self.skipping = False
        self.line_number = 0
        self.waiting_logged = False
        if from_end:
            # Skip the complete lines already there, counting them so that line numbers stay the
            # file's; an unfinished last line is read in full once it ends.
            after_newline = 0
            while True:
                chunk = fh.read(self.chunk_size)
                if not chunk:
                    break
                n = chunk.count(b"\n")
                if n:
                    self.line_number += n
                    after_newline = self.pos + chunk.rfind(b"\n") + 1
                self.pos += len(chunk)
            self.pos = after_newline
            fh.seek(self.pos)
            log.info("%s: starting after its %d existing lines", self.path, self.line_number)
        return True

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    # -- reading -------------------------------------------------------------------------------
    def _emit(self, data: bytes) -> RawLine:
        self.line_number += 1
        self.stats.lines += 1
        self.stats.per_source[self.path] = self.stats.per_source.get(self.path, 0) + 1
        return RawLine(self.path, self.line_number, data)

    def _feed(self, chunk: bytes, out: list[RawLine]) -> None:
        """Split a chunk into complete lines; keep the unfinished tail (bounded)."""
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                break
            piece = chunk[start:nl]
            if self.skipping:
                self.skipping = False  # the over-long line ends here; its rest was discarded
            else:
                self.partial += piece
                line = bytes(self.partial)
                self.partial.clear()
                out.append(self._emit(line[:-1] if line.endswith(b"\r") else line))
            start = nl + 1
        rest = chunk[start:]
        if self.skipping or not rest:
            return
        self.partial += rest
        if len(self.partial) > self.max_line_bytes:
            # A line longer than the cap would make memory grow without bound: emit its head,
            # discard the rest up to the next newline.
            self.stats.cut_lines += 1
            log.warning("%s line %d: longer than %d bytes; cut to that length",
                        self.path, self.line_number + 1, self.max_line_bytes)
            out.append(self._emit(bytes(self.partial[: self.max_line_bytes])))
            self.partial.clear()
            self.skipping = True

    def _flush_partial(self, out: list[RawLine]) -> None:
        """The file ended (or was replaced) without a final newline: the tail is a line of its own."""
        if self.partial and not self.skipping:
            self.stats.unterminated += 1
            out.append(self._emit(bytes(self.partial)))
        self.partial.clear()
        self.skipping = False

    def _read_chunk(self, out: list[RawLine], max_chunks: int) -> int:
        """Read up to ``max_chunks`` chunks from the open file; returns the bytes read."""
        assert self.fh is not None
        total = 0
        for _ in range(max_chunks):
            chunk = self.fh.read(self.chunk_size)
            if not chunk:
                break
            self.pos += len(chunk)
            total += len(chunk)
            self._feed(chunk, out)
        self.stats.bytes += total
        return total

    def poll(self, out: list[RawLine], max_chunks: int = 16) -> int:
        """Read what is available now (follow mode); handle truncation and rotation. Returns bytes read."""
        if self.fh is None and not self._open():
            return 0
        n = self._read_chunk(out, max_chunks)
        if n:
            return n
        # Nothing new: has the file been truncated, or has the path been given to another file?
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return 0  # renamed away and not yet recreated: keep the old file, look again later
        size_now = os.fstat(self.fh.fileno()).st_size  # type: ignore[union-attr]
        if (st.st_dev, st.st_ino) != self.ident:
            # Rotation: finish the old file (a writer may have appended after our last read).
            n = self._read_chunk(out, 1 << 30)
            self._flush_partial(out)
            self.close()
            self.stats.rotations += 1
            log.info("%s: rotated (new file); read %d lines from the old one", self.path, self.line_number)
            self._open()
            return n + 1  # report progress so the caller polls again at once
        if size_now < self.pos:
            self.stats.truncations += 1
            log.info("%s: truncated from %d to %d bytes; reading again from the start",
                     self.path, self.pos, size_now)
            self._flush_partial(out)
            self.fh.seek(0)  # type: ignore[union-attr]
            self.pos = 0
            self.line_number = 0
            return 1
        return 0

    def read_all(self) -> Iterator[RawLine]:
        """Read a file once, start to end (no follow)."""
        if self.fh is None:
            self.fh = open(self.path, "rb")  # noqa: SIM115
        out: list[RawLine] = []
        while self._read_chunk(out, 1):
            yield from out
            out.clear()
        self._flush_partial(out)
        yield from out
        self.close()


class LineReader:
    """Raw lines from files (``"-"`` is stdin), read once or followed as they grow.

    ``batches()`` yields lists of lines; in follow mode it also yields an empty list after each
    idle poll so that a caller can run timers (session time-outs) while no input arrives.
    Iterating the reader itself yields the lines one by one.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        follow: bool = False,
        poll_interval: float = 0.25,
        max_line_bytes: int = 1 << 20,
        chunk_size: int = 1 << 16,
        from_end: bool = False,
        stop: threading.Event | None = None,
    ):
        self.paths = [str(p) for p in paths] or [STDIN]
        if follow and STDIN in self.paths:
            raise ConfigError("--follow needs file paths; standard input ('-') cannot be followed "
                              "(it is read to its end anyway)")
        if poll_interval <= 0:
            raise ConfigError(f"poll interval must be > 0 seconds, got {poll_interval}")
        if not follow:
            missing = [p for p in self.paths if p != STDIN and not Path(p).is_file()]
            if missing:
                raise DataError(f"{missing[0]}: no such file; give existing log files, '-' for stdin, "
                                "or --follow to wait for it")
        self.follow = follow
        self.poll_interval = poll_interval
        self.max_line_bytes = max_line_bytes
        self.chunk_size = chunk_size
        self.from_end = from_end
        self.stop = stop or threading.Event()
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[RawLine]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[RawLine]]:
        if self.follow:
            yield from self._follow()
        else:
            yield from self._read_once()

    def _read_once(self) -> Iterator[list[RawLine]]:
        batch: list[RawLine] = []
        for path in self.paths:
            if self.stop.is_set():
                break
            if path == STDIN:
                lines = self._stdin_lines()
            else:
                lines = _Tail(path, self.chunk_size, self.max_line_bytes, self.stats).read_all()
            for line in lines:
                batch.append(line)
                if len(batch) >= 1024:
                    yield batch
                    batch = []
                    if self.stop.is_set():
                        return
        if batch:
            yield batch

    def _stdin_lines(self) -> Iterator[RawLine]:
        tail = _Tail("<stdin>", self.chunk_size, self.max_line_bytes, self.stats)
        stream = sys.stdin.buffer
        out: list[RawLine] = []
        while not self.stop.is_set():
            # read1 returns what is available (at most one raw read), so lines piped in slowly
            # are seen as they come rather than after a full chunk.
            chunk = stream.read1(self.chunk_size) if hasattr(stream, "read1") else stream.read(self.chunk_size)
            if not chunk:
                break
            self.stats.bytes += len(chunk)
            tail._feed(chunk, out)
            yield from out
            out.clear()
        tail._flush_partial(out)
        yield from out

    def _follow(self) -> Iterator[list[RawLine]]:
        tails = [_Tail(p, self.chunk_size, self.max_line_bytes, self.stats) for p in self.paths]
        for t in tails:
            t._open(from_end=self.from_end)
        try:
            while not self.stop.is_set():
                progress = 0
                for t in tails:
                    out: list[RawLine] = []
                    progress += t.poll(out)
                    if out:
                        yield out
                if not progress:
                    yield []  # idle tick: lets the caller flush timed-out sessions
                    self.stop.wait(self.poll_interval)
            # Stopping: take what is already written, so lines before the stop are not lost.
            for t in tails:
                if t.fh is not None:
                    out = []
                    t._read_chunk(out, 1 << 30)
                    t._flush_partial(out)
                    if out:
                        yield out
        finally:
            for t in tails:
                t.close()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """Set ``stop`` on SIGINT or SIGTERM while inside the block (main thread only; else a no-op).

    A second Ctrl-C while stopping raises KeyboardInterrupt as usual.
    """
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {}

    def handler(signum, frame):  # noqa: ARG001
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("received %s; stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
