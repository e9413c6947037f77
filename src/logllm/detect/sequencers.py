"""Lines -> sequences as they arrive: fixed windows, time windows and sessions, per source.

Fixed and time windows follow the rules `prepare` builds them with (`logllm.data.windows`:
`windows_holding`, `window_count`, `time_bucket`), so that detection sees the windows the model was
trained on. A window is complete when it holds ``window`` lines; at the end of a source, the windows
stop at the first one that reaches the end (possibly shorter). A time window is complete when a line
of a later period arrives. A session is complete when no line has joined it for ``timeout`` seconds
(log time from the lines' timestamps; wall-clock time as well when following files), when it reaches
``max_lines``, or when input ends. A file or folder session (`FileSessionSequencer`, runs prepared
with ``--session-by file|dir``) is complete when its input ends: when the lines move on to another
file or folder (files read one after the other), after ``timeout`` idle seconds when set (following
files that grow together), or at the end of input.

Windows never cross sources (a rotated or truncated file is a new source generation); key sessions
are joined across sources by key, in arrival order (file, then line), or kept per source. Memory
stays bounded: at most ``ceil(window / step)`` open windows per source, at most ``max_open`` open
sessions (the least recently active one is closed early; counted).
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from logllm.data.windows import time_bucket, window_count, window_span, windows_holding
from logllm.errors import ConfigError

log = logging.getLogger("logllm.detect")  # the package's logger, for all its modules

Reason = Literal["full", "idle", "end", "max_lines", "evicted", "rotated"]


@dataclass
class StreamLine:
    """A line that made it into a sequence: where it is, its raw text, its masked message."""

    source: str
    line_number: int
    raw: str
    message: str
    timestamp: float | None = None
    keys: tuple[str, ...] = ()  # session keys found in the content (sessions only)


@dataclass
class StreamSequence:
    """A completed window or session, with the lines it holds, in order."""

    sequence_id: str
    source: str
    lines: list[StreamLine]
    reason: Reason
    key: str = ""  # the session key (key sessions only)

    @property
    def first_line(self) -> int:
        return self.lines[0].line_number

    @property
    def last_line(self) -> int:
        return self.lines[-1].line_number

    @property
    def messages(self) -> list[str]:
        return [line.message for line in self.lines]


# -- fixed windows ---------------------------------------------------------------------------------

@dataclass
class _SourceWindows:
    """The windows of one source generation: lines counted so far and the open windows by index."""

    gen: int
    n: int = 0
    last_line: int = 0
    open: dict[int, list[StreamLine]] = field(default_factory=dict)


class WindowSequencer:
    """Fixed windows of ``window`` lines starting every ``step`` lines, per source.

    Window k of a source holds its lines k*step .. k*step+window-1 (counting the lines that entered
    sequences). Lines between windows (step > window) belong to none. At the end of a source, the
    windows stop at the first one that reaches the end, as in `prepare` (`data.windows.window_count`).
    """

    def __init__(self, window: int, step: int | None = None, keep_partial: bool = True):
        step = step or window
        if window < 1 or step < 1:
            raise ConfigError(f"window ({window}) and step ({step}) must be positive integers")
        self.window, self.step, self.keep_partial = window, step, keep_partial
        self._state: dict[str, _SourceWindows] = {}
        self.partial_dropped = 0

    def _name(self, source: str, gen: int, lines: list[StreamLine]) -> str:
        return f"{source}{'@' + str(gen) if gen else ''}:{lines[0].line_number}-{lines[-1].line_number}"

    def add(self, line: StreamLine) -> list[StreamSequence]:
        out: list[StreamSequence] = []
        st = self._state.get(line.source)
        if st is not None and line.line_number <= st.last_line:
            # Line numbers went back: the file was rotated or truncated. It is a new file.
            out += self._flush_source(line.source, "rotated")
            st = self._state[line.source] = _SourceWindows(st.gen + 1)
        elif st is None:
            st = self._state[line.source] = _SourceWindows(0)
        i = st.n
        st.n += 1
        st.last_line = line.line_number
        for k in windows_holding(i, self.window, self.step):
            lines = st.open.setdefault(k, [])
            lines.append(line)
            if i == window_span(k, self.window, self.step)[1] - 1:  # its last position: complete
                del st.open[k]
                out.append(StreamSequence(self._name(line.source, st.gen, lines), line.source, lines, "full"))
        return out

    def _flush_source(self, source: str, reason: Reason) -> list[StreamSequence]:
        st = self._state.pop(source, None)
        if st is None:
            return []
        # The source's windows end at window_count(n) - 1; the windows before it are complete already.
        # If that last one is open it is scored shorter; younger open windows are not windows of their own.
        last = window_count(st.n, self.window, self.step) - 1
        lines = st.open.get(last)
        if lines is None:
            return []
        if not self.keep_partial:
            self.partial_dropped += 1
            log.info("%d partial windows not scored (keep_partial is off)", self.partial_dropped)
            return []
        return [StreamSequence(self._name(source, st.gen, lines), source, lines, reason)]

    def expire(self, log_time: float | None, wall_time: float | None) -> list[StreamSequence]:  # noqa: ARG002
        return []  # windows complete by count only

    def flush(self) -> list[StreamSequence]:
        out = []
        for source in list(self._state):
            out += self._flush_source(source, "end")
        return out

    @property
    def open_lines(self) -> int:
        return sum(len(v) for st in self._state.values() for v in st.open.values())


# -- time windows ----------------------------------------------------------------------------------

class TimeWindowSequencer:
    """Consecutive lines of a source in the same time window (`data.windows.time_bucket`); a window
    completes when a line of a later period arrives, after ``idle`` seconds of wall-clock silence
    (follow mode) or at end of input. Lines without a timestamp join the current window."""

    def __init__(self, seconds: float, idle: float | None = None):
        if seconds <= 0:
            raise ConfigError(f"--time-window must be positive, got {seconds}")
        self.seconds = seconds
        self.idle = idle if idle is not None else seconds
        self._open: dict[str, dict[str, Any]] = {}

    def add(self, line: StreamLine, wall: float | None = None) -> list[StreamSequence]:
        out = []
        bucket = None if line.timestamp is None else time_bucket(line.timestamp, self.seconds)
        st = self._open.get(line.source)
        if st is not None and bucket is not None and st["bucket"] is not None and bucket != st["bucket"]:
            out.append(self._close(line.source, "full"))
            st = None
        if st is None:
            st = self._open[line.source] = {"bucket": bucket, "lines": []}
        if st["bucket"] is None:
            st["bucket"] = bucket
        st["lines"].append(line)
        st["wall"] = time.monotonic() if wall is None else wall
        return out

    def _close(self, source: str, reason: Reason) -> StreamSequence:
        st = self._open.pop(source)
        lines = st["lines"]
        return StreamSequence(f"{source}:{lines[0].line_number}-{lines[-1].line_number}", source, lines, reason)

    def expire(self, log_time: float | None, wall_time: float | None) -> list[StreamSequence]:  # noqa: ARG002
        if wall_time is None:
            return []
        return [self._close(src, "idle") for src, st in list(self._open.items()) if wall_time - st["wall"] > self.idle]

    def flush(self) -> list[StreamSequence]:
        return [self._close(src, "end") for src in list(self._open)]

    @property
    def open_lines(self) -> int:
        return sum(len(st["lines"]) for st in self._open.values())


# -- sessions --------------------------------------------------------------------------------------

@dataclass
class _Session:
    key: str
    source: str
    lines: list[StreamLine]
    last_log: float | None
    last_wall: float


class SessionSequencer:
    """Sessions keyed by a regex match in the message content (every match; a line naming several
    keys joins each session), closed after ``timeout`` idle seconds, at ``max_lines`` lines, or at
    end of input; at most ``max_open`` open at once (least recently active closed first). One session
    per key over all sources (``source``: the file of its first line), or per source and key.
    ``pattern=None``: the caller sets each line's ``keys`` (a record's ``session_field``).
    """

    def __init__(self, pattern: str | None, timeout: float | None = None, max_open: int = 100_000,
                 max_lines: int = 10_000, across_sources: bool = True):
        try:
            self.regex = re.compile(pattern) if pattern is not None else None
        except re.error as err:
            raise ConfigError(f"session pattern {pattern!r} is not a valid regular expression: {err}") from err
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"--session-timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self.max_open = max_open
        self.max_lines = max_lines
        self.across_sources = across_sources
        self._open: OrderedDict[tuple[str, str], _Session] = OrderedDict()
        self._count: dict[tuple[str, str], int] = {}  # sessions closed per key (for unique ids)
        self._max_log: float | None = None
        self.no_key = 0
        self.evicted = 0
        self.cut = 0  # sessions scored in parts at max_lines

    def keys(self, content: str) -> tuple[str, ...]:
        """The session keys of a line's content: whole matches, distinct, in order (`prepare`'s session ids)."""
        if self.regex is None:
            raise ConfigError("sessions keyed by a record field: the keys come with each line (ParsedBatch.sessions)")
        return tuple(dict.fromkeys(m.group(0) for m in self.regex.finditer(content)))

    def _close(self, ident: tuple[str, str], reason: Reason) -> StreamSequence:
        s = self._open.pop(ident)
        n = self._count.get(ident, 0)
        self._count[ident] = n + 1
        # The first session of a key is named by the key, as `prepare` names it; later ones get #n.
        name = s.key if n == 0 else f"{s.key}#{n + 1}"
        if len(self._count) > 4 * self.max_open:  # keep the id counters bounded too
            self._count.clear()
        return StreamSequence(name, s.lines[0].source, s.lines, reason, s.key)

    def drop_source(self, source: str) -> int:
        """Take the lines of ``source`` (a file that failed midway) out of the open sessions; returns how many."""
        before = self.open_lines
        for ident, s in list(self._open.items()):
            s.lines = [line for line in s.lines if line.source != source]
            if not s.lines:
                del self._open[ident]
        return before - self.open_lines

    def add(self, line: StreamLine, wall: float | None = None) -> list[StreamSequence]:
        out: list[StreamSequence] = []
        if not line.keys:
            self.no_key += 1
            return out
        if line.timestamp is not None:
            self._max_log = line.timestamp if self._max_log is None else max(self._max_log, line.timestamp)
            out += self.expire(self._max_log, None)
        now = time.monotonic() if wall is None else wall
        for key in line.keys:
            ident = ("", key) if self.across_sources else (line.source, key)
            s = self._open.get(ident)
            if s is None:
                if len(self._open) >= self.max_open:
                    self.evicted += 1
                    if self.evicted == 1 or self.evicted % 1000 == 0:
                        log.warning("more than %d open sessions: the least recently active is scored early "
                                    "(%d so far)", self.max_open, self.evicted)
                    out.append(self._close(next(iter(self._open)), "evicted"))
                s = self._open[ident] = _Session(key, line.source, [], line.timestamp, now)
            else:
                self._open.move_to_end(ident)
            s.lines.append(line)
            s.last_wall = now
            if line.timestamp is not None:
                s.last_log = line.timestamp
            if len(s.lines) >= self.max_lines:
                self.cut += 1
                log.warning("session %s reached %d lines: scored now, its later lines start a new session "
                            "(%d so far)", key, self.max_lines, self.cut)
                out.append(self._close(ident, "max_lines"))
        return out

    def expire(self, log_time: float | None, wall_time: float | None) -> list[StreamSequence]:
        """Close sessions idle for more than the timeout, in log time and (when given) wall time."""
        if self.timeout is None:
            return []
        out = []
        # Sessions are ordered by last activity, so the idle ones are at the front.
        while self._open:
            ident, s = next(iter(self._open.items()))
            idle_log = log_time is not None and s.last_log is not None and log_time - s.last_log > self.timeout
            idle_wall = wall_time is not None and wall_time - s.last_wall > self.timeout
            if not (idle_log or idle_wall):
                break
            out.append(self._close(ident, "idle"))
        return out

    def flush(self) -> list[StreamSequence]:
        return [self._close(ident, "end") for ident in list(self._open)]

    @property
    def open_lines(self) -> int:
        return sum(len(s.lines) for s in self._open.values())


# -- files and folders as sessions ----------------------------------------------------------------

@dataclass
class _FileSession:
    key: str
    name: str
    source: str
    last_wall: float
    lines: list[StreamLine] = field(default_factory=list)
    n: int = 0  # lines that joined (with windows: positions counted, lines held only in open windows)
    open: dict[int, list[StreamLine]] = field(default_factory=dict)
    last_line: dict[str, int] = field(default_factory=dict)  # per file, to notice a rotation


class FileSessionSequencer:
    """Each input file (``mode="file"``) or each folder holding input files (``mode="dir"``: the parent
    folder of each file) is one session, as `prepare --session-by file|dir` makes them. The session id
    is the file's name, or the folder's name; a later session of the same name (the same file or
    folder read again, a rotated file) is ``NAME#2``, ``NAME#3``...

    A session is complete when its input ends: when a line of another session arrives (files are read
    one after another; give a folder's files together, in name order, as `prepare` reads them), at end
    of input, or with ``timeout`` (following files that grow together) only after that many idle
    seconds of wall-clock time. With ``window`` the session is cut into windows of ``window`` lines every
    ``step`` (`logllm.data.windows`, as `prepare` cuts them; ids ``NAME#w000000``...), each scored when
    complete. Without windows a session holds at most ``max_lines`` lines: it is then scored, and its
    later lines make a new session (warned and counted, ``cut``).
    """

    def __init__(self, mode: Literal["file", "dir"], window: int | None = None, step: int | None = None,
                 timeout: float | None = None, max_open: int = 100_000, max_lines: int = 10_000):
        if mode not in ("file", "dir"):
            raise ConfigError(f"session_by {mode!r}: choose file or dir")
        if window is not None and (window < 1 or (step or window) < 1):
            raise ConfigError(f"window ({window}) and step ({step}) must be positive integers")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"--session-timeout must be > 0 seconds, got {timeout}")
        self.mode, self.window, self.step = mode, window, (step or window)
        self.timeout, self.max_open, self.max_lines = timeout, max_open, max_lines
        self._open: OrderedDict[str, _FileSession] = OrderedDict()
        self._count: dict[str, int] = {}
        self._current: str | None = None
        self.cut = 0
        self.evicted = 0

    def session_of(self, source: str) -> tuple[str, str]:
        """(session name, session source) of a line's source: the file, or its folder."""
        path = Path(source)
        if self.mode == "file" or source.startswith("<"):
            return path.name or source, source
        return path.parent.name or str(path.parent), str(path.parent)

    def _start(self, key: str, source: str, wall: float) -> _FileSession:
        n = self._count.get(key, 0)
        self._count[key] = n + 1
        s = self._open[key] = _FileSession(key, key if n == 0 else f"{key}#{n + 1}", source, wall)
        return s

    def add(self, line: StreamLine, wall: float | None = None) -> list[StreamSequence]:
        out: list[StreamSequence] = []
        key, source = self.session_of(line.source)
        now = time.monotonic() if wall is None else wall
        if self.timeout is None and self._current is not None and self._current != key and self._current in self._open:
            out += self._close(self._current, "end")
        self._current = key
        s = self._open.get(key)
        if s is not None and line.line_number <= s.last_line.get(line.source, 0):
            out += self._close(key, "rotated")  # line numbers went back: the file was rotated or truncated
            s = None
        if s is None:
            if len(self._open) >= self.max_open:
                self.evicted += 1
                log.warning("more than %d open file sessions: the least recently active is scored early (%d so far)",
                            self.max_open, self.evicted)
                out += self._close(next(iter(self._open)), "evicted")
            s = self._start(key, source, now)
        self._open.move_to_end(key)
        s.last_wall = now
        s.last_line[line.source] = line.line_number
        if self.window is None:
            s.lines.append(line)
            if len(s.lines) >= self.max_lines:
                self.cut += 1
                log.warning("file session %s reached %d lines: scored now, its later lines start %s#%d (%d so far)",
                            s.name, self.max_lines, key, self._count[key] + 1, self.cut)
                out += self._close(key, "max_lines")
            return out
        i = s.n
        s.n += 1
        for k in windows_holding(i, self.window, self.step):
            held = s.open.setdefault(k, [])
            held.append(line)
            if i == window_span(k, self.window, self.step)[1] - 1:  # its last position: complete
                del s.open[k]
                out.append(StreamSequence(f"{s.name}#w{k:06d}", s.source, held, "full"))
        return out

    def _close(self, key: str, reason: Reason) -> list[StreamSequence]:
        s = self._open.pop(key)
        if self._current == key:
            self._current = None
        if self.window is None:
            return [StreamSequence(s.name, s.source, s.lines, reason)] if s.lines else []
        # As in `prepare`: the windows end at window_count(n) - 1; the ones before it are complete already.
        last = window_count(s.n, self.window, self.step) - 1
        held = s.open.get(last)
        return [StreamSequence(f"{s.name}#w{last:06d}", s.source, held, reason)] if held else []

    def expire(self, log_time: float | None, wall_time: float | None) -> list[StreamSequence]:  # noqa: ARG002
        """Close sessions idle for more than the timeout in wall-clock time (follow mode)."""
        if self.timeout is None or wall_time is None:
            return []
        out = []
        while self._open:
            key, s = next(iter(self._open.items()))
            if wall_time - s.last_wall <= self.timeout:
                break
            out += self._close(key, "idle")
        return out

    def flush(self) -> list[StreamSequence]:
        out = []
        for key in list(self._open):
            out += self._close(key, "end")
        return out

    @property
    def open_lines(self) -> int:
        return sum(len(s.lines) + sum(len(v) for v in s.open.values()) for s in self._open.values())


# -- the policy ------------------------------------------------------------------------------------

Sequencer = WindowSequencer | SessionSequencer | TimeWindowSequencer | FileSessionSequencer


@dataclass
class SequencePolicy:
    """How lines become sequences: fixed windows, sessions, time windows, or files / folders as sessions
    (``kind="files"`` with ``session_by``; ``window`` / ``step`` then cut windows inside each one, or
    None for whole sessions). From the run's data manifest.

    ``session_timeout``: idle seconds after which a session (or a time window, while following) is
    scored; None = sessions end at end of input only (as `prepare` builds them); file and folder
    sessions also end when the lines move on to another file or folder.
    """

    kind: Literal["window", "session", "time", "files"] = "window"
    window: int | None = 100
    step: int | None = None  # None: equal to window (no overlap)
    session_pattern: str | None = None
    session_timeout: float | None = None
    time_window: float | None = None
    session_by: Literal["file", "dir"] | None = None
    across_files: bool = True  # key sessions joined across the input files (False: per file)
    #: sessions keyed by this record field (structured lines); the preprocessor reads the keys
    session_field: str | None = None

    def build(self, max_open_sessions: int = 100_000, max_session_lines: int = 10_000) -> Sequencer:
        """The sequencer for this policy (sessions bounded by ``max_open_sessions`` / ``max_session_lines``)."""
        if self.kind == "window":
            return WindowSequencer(self.window or 100, self.step)
        if self.kind == "time":
            return TimeWindowSequencer(self.time_window or 60.0, self.session_timeout)
        if self.kind == "files":
            if self.session_by not in ("file", "dir"):
                raise ConfigError(f"file sessions need session_by 'file' or 'dir', got {self.session_by!r}")
            return FileSessionSequencer(self.session_by, self.window, self.step, self.session_timeout,
                                        max_open_sessions, max_session_lines)
        if not self.session_pattern and not self.session_field:
            raise ConfigError("session windows need a session pattern (--session-pattern REGEX)")
        pattern = None if self.session_field else self.session_pattern
        return SessionSequencer(pattern, self.session_timeout, max_open_sessions, max_session_lines,
                                across_sources=self.across_files)
