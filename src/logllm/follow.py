"""Reading raw log lines from files, stdin, or growing files (`tail -F` semantics).

`LineReader` yields `RawLine(source, line_number, data)` with ``data`` the line's bytes without
the newline. In follow mode it keeps polling the files, and:

- survives **rotation by rename** (the path now names another inode): the old file is read to its
  end first, then the new file is opened at its start, so no line is lost or read twice;
- survives **truncation**, noticed by the size (the file got shorter than what was read) and by
  its first bytes (they changed: the file was truncated and written again, maybe past its old size,
  between two polls): reading restarts at 0;
- waits for a file that does not exist yet, or that disappeared during a rotation;
- keeps memory bounded however long it runs: reads happen in chunks, and a partial last line is
  buffered only up to ``max_line_bytes`` (longer lines are cut, counted and logged);
- stops cleanly when ``stop`` is set (see `stop_on_signals` for Ctrl-C / SIGTERM).

Standard input is read as it arrives: lines are handed on in batches of up to ``batch_lines``, at
the latest ``flush_interval`` seconds after the first of them arrived; waiting for input wakes every ``flush_interval`` seconds to see ``stop`` (POSIX: ``select``), so a
signal ends reading even while the writer at the other end of a pipe stays silent.

Line numbers are 1-based and restart at 1 in a new file after a rotation or a truncation, as they
would if the file were read from scratch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

from logllm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

STDIN = "-"
#: bytes at the start of a followed file kept to recognise it: when they change, it was rewritten
HEAD_BYTES = 1024

# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides that reorder what is shown.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped (``\\x1b``, ``\\r``, ``\\u202e``), for a terminal or a log.

    A log line may hold terminal escapes (``ESC ] 0 ; title BEL``, ``ESC [ 2 J``) that would retitle
    or clear the reader's terminal; the escaped text shows them instead. Tabs are kept, and newlines
    when ``keep_newlines``.
    """
    def escape(m: re.Match[str]) -> str:
        c = m.group(0)
        if c == "\r":
            return "\\r"
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    out = _UNPRINTABLE.sub(escape, text)
    return out if keep_newlines else out.replace("\n", "\\n")


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
        self.head = bytearray()  # the first HEAD_BYTES bytes read from the open file
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
        self.head.clear()
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
                self._note_head(chunk)
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

    def _note_head(self, chunk: bytes) -> None:
        """Keep the file's first bytes (``chunk`` was read at ``self.pos``)."""
        if self.pos < HEAD_BYTES and len(self.head) == self.pos:
            self.head += chunk[: HEAD_BYTES - self.pos]

    def _head_changed(self) -> bool:
        """True when the file no longer starts with the bytes read from it (rewritten in place)."""
        if not self.head or self.fh is None:
            return False
        if hasattr(os, "pread"):  # reads without moving the file's offset
            now = os.pread(self.fh.fileno(), len(self.head), 0)
        else:  # pragma: no cover - Windows
            self.fh.seek(0)
            now = self.fh.read(len(self.head))
            self.fh.seek(self.pos)
        return now != bytes(self.head)

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
            self._note_head(chunk)
            self.pos += len(chunk)
            total += len(chunk)
            self._feed(chunk, out)
        self.stats.bytes += total
        return total

    def poll(self, out: list[RawLine], max_chunks: int = 16) -> int:
        """Read what is available now (follow mode); handle truncation and rotation. Returns bytes read."""
        if self.fh is None and not self._open():
            return 0
        # Rewritten in place since the last poll? Then the bytes after our offset belong to another
        # text (truncated and refilled, maybe past the old size): start again before reading them.
        size_now = os.fstat(self.fh.fileno()).st_size  # type: ignore[union-attr]
        if size_now < self.pos or self._head_changed():
            return self._restart(out, size_now)
        n = self._read_chunk(out, max_chunks)
        if n:
            return n
        # Nothing new: has the path been given to another file?
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return 0  # renamed away and not yet recreated: keep the old file, look again later
        if (st.st_dev, st.st_ino) != self.ident:
            # Rotation: finish the old file (a writer may have appended after our last read).
            n = self._read_chunk(out, 1 << 30)
            self._flush_partial(out)
            self.close()
            self.stats.rotations += 1
            log.info("%s: rotated (new file); read %d lines from the old one", self.path, self.line_number)
            self._open()
            return n + 1  # report progress so the caller polls again at once
        return 0

    def _restart(self, out: list[RawLine], size_now: int) -> int:
        """The file was truncated (same inode, shorter or with other first bytes): read it from 0."""
        self.stats.truncations += 1
        how = "shorter" if size_now < self.pos else "its first bytes changed"
        log.info("%s: truncated (%s; %d bytes read, %d now); reading again from the start",
                 self.path, how, self.pos, size_now)
        self._flush_partial(out)
        self.fh.seek(0)  # type: ignore[union-attr]
        self.pos = 0
        self.head.clear()
        self.line_number = 0
        return 1

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

    ``batches()`` yields lists of lines; in follow mode (and while standard input is silent) it also
    yields an empty list after each idle poll so that a caller can run timers (session time-outs)
    and see ``stop`` while no input arrives.
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
        flush_interval: float = 0.1,
        batch_lines: int = 1024,
    ):
        self.paths = [str(p) for p in paths] or [STDIN]
        if follow and STDIN in self.paths:
            raise ConfigError("--follow needs file paths; standard input ('-') cannot be followed "
                              "(it is read to its end anyway)")
        if poll_interval <= 0:
            raise ConfigError(f"--poll-interval must be > 0 seconds, got {poll_interval}")
        if flush_interval <= 0 or batch_lines < 1:
            raise ConfigError(f"flush_interval ({flush_interval}) and batch_lines ({batch_lines}) must be positive")
        if max_line_bytes < 1:
            raise ConfigError(f"--max-line-bytes must be a positive number of bytes, got {max_line_bytes}")
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
        self.flush_interval = flush_interval
        self.batch_lines = batch_lines
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
                if batch:  # hand on what the files before gave, then wait for stdin
                    yield batch
                    batch = []
                yield from self._stdin_batches()
                continue
            for line in _Tail(path, self.chunk_size, self.max_line_bytes, self.stats).read_all():
                batch.append(line)
                if len(batch) >= self.batch_lines:
                    yield batch
                    batch = []
                    if self.stop.is_set():
                        return
        if batch:
            yield batch

    def _stdin_batches(self) -> Iterator[list[RawLine]]:
        """Standard input as it arrives: a batch at ``batch_lines`` lines or ``flush_interval`` seconds
        after its first line, whichever comes first; an empty batch while no input comes."""
        tail = _Tail("<stdin>", self.chunk_size, self.max_line_bytes, self.stats)
        stream = sys.stdin.buffer
        fd = _selectable_fd(stream)
        pending: list[RawLine] = []
        due = 0.0  # when the pending lines are handed on at the latest
        while not self.stop.is_set():
            if fd is None:  # not a file descriptor (or not POSIX): a blocking read of what is there
                chunk = stream.read1(self.chunk_size) if hasattr(stream, "read1") else stream.read(self.chunk_size)
            else:
                wait = max(0.0, due - time.monotonic()) if pending else self.flush_interval
                if not _readable(fd, wait):
                    yield pending  # the lines so far, or an idle tick
                    pending = []
                    continue
                chunk = os.read(fd, self.chunk_size)
            if not chunk:
                break
            self.stats.bytes += len(chunk)
            had = len(pending)
            tail._feed(chunk, pending)
            if pending and not had:
                due = time.monotonic() + self.flush_interval
            if pending and (fd is None or len(pending) >= self.batch_lines or time.monotonic() >= due):
                yield pending
                pending = []
        if self.stop.is_set() and fd is not None:
            # Stopping: take what was written before the stop and waits in the pipe (without
            # waiting for more, and bounded: a fast writer is not read to its end).
            for _ in range(16):
                chunk = os.read(fd, self.chunk_size) if _readable(fd, 0.0) else b""
                if not chunk:
                    break
                self.stats.bytes += len(chunk)
                tail._feed(chunk, pending)
        tail._flush_partial(pending)
        if pending:
            yield pending

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


def _selectable_fd(stream: object) -> int | None:
    """The file descriptor to wait on with ``select`` (POSIX), or None (then reads block)."""
    if os.name != "posix":
        return None
    try:
        return int(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        return None


def _readable(fd: int, timeout: float) -> bool:
    """True when ``fd`` has data (or end of input) within ``timeout`` seconds."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


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
