"""Scoring raw log lines with a trained run: files, stdin or followed files -> one detection per sequence.

The pipeline for a stream, one batch of lines at a time::

    raw bytes -> decode (count invalid UTF-8, binary junk, empty lines)
              -> parse with the run's log format (count unparsed lines; keep them as content or skip)
              -> mask (the run's masking)
              -> sequences: fixed windows (window/step) or sessions (a regex on the content), per source
              -> score every completed sequence (one model call per batch, scores cached by content)
              -> explain flagged sequences (leave-one-out, `logllm.explain`) -> `Detection`

A window is complete when it holds ``window`` lines; a session when no line has joined it for
``session_timeout`` seconds (log time from the lines' timestamps; wall-clock time as well when
following files), when it reaches ``max_session_lines``, or when input ends. The last, shorter
window of a source is scored when input ends. Sequences never cross sources; after a rotation or a
truncation the followed file is a new source generation and line numbers restart at 1.

Memory stays bounded: at most ``ceil(window / step)`` open windows per source, at most
``max_open_sessions`` open sessions (the least recently active one is scored early when the limit is
reached; counted), and bounded score and message caches.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from logllm.errors import ConfigError
from logllm.explain import LeaveOut, ScoreCache, leave_one_out, log_odds_fn, top_k
from logllm.follow import RawLine

log = logging.getLogger(__name__)

ExplainWhich = Literal["flagged", "all", "none"]
Reason = Literal["full", "idle", "end", "max_lines", "evicted", "rotated"]


# -- lines and sequences ---------------------------------------------------------------------------

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

    @property
    def first_line(self) -> int:
        return self.lines[0].line_number

    @property
    def last_line(self) -> int:
        return self.lines[-1].line_number

    @property
    def messages(self) -> list[str]:
        return [line.message for line in self.lines]


@dataclass
class Detection:
    """One scored sequence, as written to the output (one JSON object per line)."""

    source: str
    sequence_id: str
    first_line: int
    last_line: int
    lines: int
    score: float
    threshold: float
    anomalous: bool
    reason: str
    top: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "anomalous" if self.anomalous else "normal"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


# -- sequencers ------------------------------------------------------------------------------------

class WindowSequencer:
    """Fixed windows of ``window`` lines starting every ``step`` lines, per source.

    Window k of a source holds its lines k*step .. k*step+window-1 (counting the lines that entered
    sequences). Lines between windows (step > window) belong to none. At the end of a source, the
    windows stop at the first one that reaches the end, as in `prepare`.
    """

    def __init__(self, window: int, step: int | None = None, keep_partial: bool = True):
        step = step or window
        if window < 1 or step < 1:
            raise ConfigError(f"window ({window}) and step ({step}) must be positive integers")
        self.window, self.step, self.keep_partial = window, step, keep_partial
        self._state: dict[str, dict[str, Any]] = {}
        self.partial_dropped = 0

    def _name(self, source: str, gen: int, first: int, last: int) -> str:
        return f"{source}{'@' + str(gen) if gen else ''}:{first}-{last}"

    def add(self, line: StreamLine) -> list[StreamSequence]:
        out: list[StreamSequence] = []
        st = self._state.get(line.source)
        if st is not None and line.line_number <= st["last_line"]:
            # Line numbers went back: the file was rotated or truncated. It is a new file.
            out += self._flush_source(line.source, "rotated")
            gen = st["gen"] + 1
            st = None
        else:
            gen = st["gen"] if st else 0
        if st is None:
            st = self._state[line.source] = {"n": 0, "open": {}, "gen": gen, "last_line": 0, "last_full": False}
        i = st["n"]
        st["n"] += 1
        st["last_line"] = line.line_number
        if i % self.step == 0:
            st["open"][i // self.step] = []
        done = []
        for k, lines in st["open"].items():
            if k * self.step <= i < k * self.step + self.window:
                lines.append(line)
                if len(lines) == self.window:
                    done.append(k)
        st["last_full"] = bool(done)
        for k in done:
            lines = st["open"].pop(k)
            out.append(StreamSequence(self._name(line.source, st["gen"], lines[0].line_number, lines[-1].line_number),
                                      line.source, lines, "full"))
        return out

    def _flush_source(self, source: str, reason: Reason) -> list[StreamSequence]:
        st = self._state.pop(source, None)
        if st is None:
            return []
        # As `prepare` does (data.windows.window_starts): windows stop at the first one that reaches
        # the end. If the last line completed a window, that was it; otherwise the oldest open window
        # is the last one, and the younger open ones (its subsets) are not windows of their own.
        if st["last_full"] or not st["open"]:
            return []
        lines = st["open"][min(st["open"])]
        if not self.keep_partial:
            self.partial_dropped += 1
            log.info("%d partial windows not scored (keep_partial is off)", self.partial_dropped)
            return []
        return [StreamSequence(self._name(source, st["gen"], lines[0].line_number, lines[-1].line_number),
                               source, lines, reason)]

    def expire(self, log_time: float | None, wall_time: float | None) -> list[StreamSequence]:  # noqa: ARG002
        return []  # windows complete by count only

    def flush(self) -> list[StreamSequence]:
        out = []
        for source in list(self._state):
            out += self._flush_source(source, "end")
        return out

    @property
    def open_lines(self) -> int:
        return sum(len(v) for st in self._state.values() for v in st["open"].values())


class TimeWindowSequencer:
    """Consecutive lines of a source with the same ``floor(timestamp / seconds)``; a window completes
    when a line of a later period arrives, after ``idle`` seconds of wall-clock silence (follow mode)
    or at end of input. Lines without a timestamp join the current window."""

    def __init__(self, seconds: float, idle: float | None = None):
        if seconds <= 0:
            raise ConfigError(f"--time-window must be positive, got {seconds}")
        self.seconds = seconds
        self.idle = idle if idle is not None else seconds
        self._open: dict[str, dict[str, Any]] = {}

    def add(self, line: StreamLine, wall: float | None = None) -> list[StreamSequence]:
        out = []
        bucket = None if line.timestamp is None else math.floor(line.timestamp / self.seconds)
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


@dataclass
class _Session:
    key: str
    source: str
    lines: list[StreamLine]
    last_log: float | None
    last_wall: float


class SessionSequencer:
    """Sessions keyed by a regex match in the message content (every match; a line naming several
    keys joins each session), per source, closed after ``timeout`` idle seconds, at ``max_lines``
    lines, or at end of input; at most ``max_open`` open at once (least recently active closed first).
    """

    def __init__(self, pattern: str, timeout: float | None = None, max_open: int = 100_000,
                 max_lines: int = 10_000):
        try:
            self.regex = re.compile(pattern)
        except re.error as err:
            raise ConfigError(f"session pattern {pattern!r} is not a valid regular expression: {err}") from err
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"--session-timeout must be > 0 seconds, got {timeout}")
        self.timeout = timeout
        self.max_open = max_open
        self.max_lines = max_lines
        self._open: OrderedDict[tuple[str, str], _Session] = OrderedDict()
        self._count: dict[tuple[str, str], int] = {}  # sessions closed per key (for unique ids)
        self._max_log: float | None = None
        self.no_key = 0
        self.evicted = 0

    def keys(self, content: str) -> tuple[str, ...]:
        # Whole matches, distinct, in order: what `prepare` uses as session ids.
        return tuple(dict.fromkeys(m.group(0) for m in self.regex.finditer(content)))

    def _close(self, ident: tuple[str, str], reason: Reason) -> StreamSequence:
        s = self._open.pop(ident)
        n = self._count.get(ident, 0)
        self._count[ident] = n + 1
        # The first session of a key is named by the key, as `prepare` names it; later ones get #n.
        name = s.key if n == 0 else f"{s.key}#{n + 1}"
        if len(self._count) > 4 * self.max_open:  # keep the id counters bounded too
            self._count.clear()
        return StreamSequence(name, s.source, s.lines, reason)

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
            ident = (line.source, key)
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


# -- preprocessing ---------------------------------------------------------------------------------

@dataclass
class ParsedBatch:
    """A batch of lines after parsing: content (None = unparsed and skipped) and timestamp per line."""

    content: list[str | None]
    timestamp: list[float | None]
    unparsed: int = 0  # lines that did not match the format (kept as content or skipped)


class Preprocessor(Protocol):
    """The run's preprocessing for new lines (built from the data manifest; see `preprocessor_from_run`)."""

    def parse(self, lines: list[str]) -> ParsedBatch: ...

    def mask(self, contents: list[str]) -> list[str]: ...


@dataclass
class SequencePolicy:
    """How lines become sequences: fixed windows, sessions or time windows (from the run's data manifest).

    ``session_timeout``: idle seconds after which a session (or a time window, while following) is
    scored; None = sessions end at end of input only (as `prepare` builds them).
    """

    kind: Literal["window", "session", "time"] = "window"
    window: int = 100
    step: int | None = None  # None: equal to window (no overlap)
    session_pattern: str | None = None
    session_timeout: float | None = None
    time_window: float | None = None

    def build(self, max_open_sessions: int = 100_000,
              max_session_lines: int = 10_000) -> WindowSequencer | SessionSequencer | TimeWindowSequencer:
        if self.kind == "window":
            return WindowSequencer(self.window, self.step)
        if self.kind == "time":
            return TimeWindowSequencer(self.time_window or 60.0, self.session_timeout)
        if not self.session_pattern:
            raise ConfigError("session windows need a session pattern (--session-pattern REGEX)")
        return SessionSequencer(self.session_pattern, self.session_timeout, max_open_sessions, max_session_lines)


# -- decoding --------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


@dataclass
class DetectStats:
    """Counts over a whole run of `Detector`: what was read, skipped, scored and flagged."""

    lines_read: int = 0
    lines_used: int = 0
    empty: int = 0
    binary: int = 0
    invalid_utf8: int = 0
    unparsed: int = 0
    unparsed_skipped: int = 0
    no_session_key: int = 0
    sequences_scored: int = 0
    flagged: int = 0
    evicted_sessions: int = 0
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        seconds = max(time.monotonic() - self.started, 1e-9)
        d = {k: v for k, v in asdict(self).items() if k != "started"}
        d["seconds"] = round(seconds, 3)
        d["lines_per_second"] = round(self.lines_read / seconds, 1)
        return d


def decode_line(data: bytes, stats: DetectStats) -> str:
    """Bytes -> text, counting odd lines. Invalid UTF-8 is replaced (as `prepare` reads it); empty
    lines and binary junk are counted here and then go through the run's parser like any line, so
    that detection sees the same lines, and the same windows, as `prepare` did (with the format's
    unparsed policy: kept as content, or skipped; both counted)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        stats.invalid_utf8 += 1
        text = data.decode("utf-8", errors="replace")
    if not text.strip():
        stats.empty += 1
    elif "\x00" in text or len(_CONTROL.findall(text)) > max(2, len(text) // 4):
        stats.binary += 1
    return text


# -- the detector ----------------------------------------------------------------------------------

def _check_threshold(threshold: float) -> None:
    if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1] (a probability), got {threshold}")


class Detector:
    """A trained run applied to raw lines. See the module docstring for the pipeline.

    ``model`` is anything with ``score(texts, sequences, batch_size) -> np.ndarray`` (a `LogLLM`).
    Use `from_run` to build one from a run folder with the run's own preprocessing and threshold.

    top_k: explanation lines per explained sequence; explain: which sequences get them
    (``flagged``, ``all``, ``none``); explain_by: leave out single lines (``position``) or every
    line of a masked text at once (``text``), see `logllm.explain`; explain_repeats: let the top-k
    list the same masked message more than once (by default each listed line is the best-ranked line
    of a different message, with its number of ``occurrences`` in the sequence); batch_size:
    sequences per model call (speed only);
    max_open_sessions / max_session_lines: memory bounds of session sequencing;
    wall_clock_timeout: also close idle sessions by wall-clock time (follow mode);
    max_cached_texts: distinct messages kept in the model's vector cache (and tokenizer cache) before
    it restarts.
    """

    def __init__(
        self,
        model: Any,
        preprocessor: Preprocessor,
        policy: SequencePolicy,
        threshold: float,
        *,
        top_k: int = 5,
        explain: ExplainWhich = "flagged",
        explain_by: LeaveOut = "position",
        explain_repeats: bool = False,
        batch_size: int = 64,
        max_open_sessions: int = 100_000,
        max_session_lines: int = 10_000,
        wall_clock_timeout: bool = False,
        max_cached_texts: int = 200_000,
    ):
        _check_threshold(threshold)
        self.model = model
        self.preprocessor = preprocessor
        self.policy = policy
        self.threshold = float(threshold)
        self.top_k = top_k
        self.explain_which = explain
        self.explain_by = explain_by
        self.explain_repeats = explain_repeats
        self.batch_size = batch_size
        self.wall_clock_timeout = wall_clock_timeout
        self.sequencer = policy.build(max_open_sessions, max_session_lines)
        max_messages = getattr(getattr(model, "config", None), "max_messages", None)
        self.cache = ScoreCache(model, batch_size=batch_size, max_messages=max_messages)
        self.explain_cache = ScoreCache(log_odds_fn(model), batch_size=batch_size, max_messages=max_messages)
        self.stats = DetectStats()
        # The encoder is frozen while detecting: each distinct message is encoded once, then reused
        # (the model's own vector cache). Its size is bounded by restarting it past max_cached_texts.
        self.max_cached_texts = max_cached_texts
        self._texts_seen: set[str] = set()
        self._encoder_cache = hasattr(model, "freeze_encoder_cache")
        if self._encoder_cache:
            model.freeze_encoder_cache([])
        if hasattr(model, "max_cached_tokens"):  # its tokenizer cache is bounded alike
            model.max_cached_tokens = max_cached_texts

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, *, threshold: float | None = None,
                 overrides: dict[str, Any] | None = None, session_timeout: float | None = None,
                 model: Any | None = None, **kwargs: Any) -> Detector:
        """A detector for a run folder: its model, its data manifest's preprocessing (``overrides``
        change options as `prepare`'s flags would), its threshold (unless ``threshold`` is given)."""
        run_dir = Path(run_dir)
        if threshold is not None:
            _check_threshold(threshold)  # before anything slow (the model loads last)
        manifest_path = run_dir / "data_manifest.json"
        if not manifest_path.is_file():
            raise ConfigError(f"{manifest_path}: missing; `logllm detect` needs the run folder written by "
                              "`logllm train` (it records the data preprocessing there)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{manifest_path}: cannot be read ({err}); it is written by `logllm train`: "
                              "train the run again or restore the file") from err
        preprocessor, policy = preprocessor_from_manifest(manifest, overrides, session_timeout,
                                                          where=str(manifest_path))
        if threshold is None:
            from logllm.report import run_threshold

            threshold = run_threshold(run_dir)
            if threshold is None:
                raise ConfigError(f"{run_dir}/threshold.json: missing; pass --threshold or finish training")
        if model is None:
            from logllm.model.logllm import LogLLM

            model = LogLLM.from_pretrained(run_dir)
        return cls(model, preprocessor, policy, threshold, **kwargs)

    # -- streaming ---------------------------------------------------------------------------------
    def feed(self, batch: Sequence[RawLine]) -> list[Detection]:
        """Take a batch of raw lines; return the detections of the sequences it completed."""
        where = list(batch)
        texts = [decode_line(raw.data, self.stats) for raw in where]
        self.stats.lines_read += len(texts)
        if not texts:
            return self.tick() if self.wall_clock_timeout else []
        parsed = self.preprocessor.parse(texts)
        self.stats.unparsed += parsed.unparsed
        keep = [i for i, c in enumerate(parsed.content) if c is not None]
        self.stats.unparsed_skipped += len(texts) - len(keep)
        contents = [parsed.content[i] for i in keep]
        messages = self.preprocessor.mask(contents)  # type: ignore[arg-type]
        sessions = isinstance(self.sequencer, SessionSequencer)
        timed = isinstance(self.sequencer, TimeWindowSequencer)
        done: list[StreamSequence] = []
        now = time.monotonic()
        for i, message, content in zip(keep, messages, contents):
            raw = where[i]
            line = StreamLine(raw.source, raw.line_number, texts[i], message, parsed.timestamp[i])
            if sessions:
                line.keys = self.sequencer.keys(content)  # type: ignore[union-attr,arg-type]
                done += self.sequencer.add(line, now)  # type: ignore[call-arg]
            elif timed:
                done += self.sequencer.add(line, now)  # type: ignore[call-arg]
            else:
                done += self.sequencer.add(line)
            self.stats.lines_used += 1
        if self.wall_clock_timeout:
            done += self.sequencer.expire(None, now)
        return self._score(done)

    def tick(self) -> list[Detection]:
        """Close sessions idle in wall-clock time (follow mode calls this while no input arrives)."""
        if not self.wall_clock_timeout:
            return []
        return self._score(self.sequencer.expire(None, time.monotonic()))

    def finish(self) -> list[Detection]:
        """End of input: score every open window and session."""
        out = self._score(self.sequencer.flush())
        if isinstance(self.sequencer, SessionSequencer):
            self.stats.no_session_key = self.sequencer.no_key
            self.stats.evicted_sessions = self.sequencer.evicted
        return out

    def process(self, lines: Iterable[RawLine | bytes | str], batch_lines: int = 4096) -> Iterator[Detection]:
        """Detections for an iterable of lines (RawLine, or bytes/str numbered from 1 as ``<input>``),
        scored in batches, ending with the sequences still open when the input ends."""
        batch: list[RawLine] = []
        n = 0
        for item in lines:
            if not isinstance(item, RawLine):
                n += 1
                data = item.encode("utf-8") if isinstance(item, str) else item
                item = RawLine("<input>", n, data.rstrip(b"\r\n"))
            batch.append(item)
            if len(batch) >= batch_lines:
                yield from self.feed(batch)
                batch = []
        if batch:
            yield from self.feed(batch)
        yield from self.finish()

    def run(self, reader: Any) -> Iterator[Detection]:
        """Detections from a `logllm.follow.LineReader` (read once or followed), in order; in follow
        mode idle polls close timed-out sessions, and stopping the reader ends input."""
        for batch in reader.batches():
            yield from (self.feed(batch) if batch else self.tick())
        yield from self.finish()

    # -- scoring and explanations ------------------------------------------------------------------
    def _score(self, seqs: list[StreamSequence]) -> list[Detection]:
        if not seqs:
            return []
        if self._encoder_cache:
            for seq in seqs:
                self._texts_seen.update(seq.messages)
            if len(self._texts_seen) > self.max_cached_texts:
                log.info("more than %d distinct messages cached: encoder cache restarted", self.max_cached_texts)
                self.model.clear_cache()
                self.model.freeze_encoder_cache([])
                self._texts_seen = set()
        scores = self.cache.score_texts([s.messages for s in seqs])
        flagged = scores >= self.threshold
        if self.explain_which == "all":
            chosen = list(range(len(seqs)))
        elif self.explain_which == "flagged":
            chosen = [i for i in range(len(seqs)) if flagged[i]]
        else:
            chosen = []
        contributions = {}
        if chosen and self.top_k > 0:
            loo = leave_one_out(self.explain_cache, [seqs[i].messages for i in chosen], by=self.explain_by)
            contributions = dict(zip(chosen, loo))
        out = []
        for i, seq in enumerate(seqs):
            top = []
            if i in contributions:
                c = contributions[i]
                keys = None if self.explain_repeats else seq.messages
                for idx, value in top_k(c, self.top_k, keys):
                    line = seq.lines[idx]
                    top.append({"index": idx, "line": line.line_number, "contribution": value,
                                "log_odds": float(c.log_odds[idx]), "text": line.raw, "message": line.message,
                                "occurrences": seq.messages.count(line.message)})
            out.append(Detection(seq.source, seq.sequence_id, seq.first_line, seq.last_line, len(seq.lines),
                                 float(scores[i]), self.threshold, bool(flagged[i]), seq.reason, top))
        self.stats.sequences_scored += len(seqs)
        self.stats.flagged += int(flagged.sum())
        return out

    def score(self, sequence: StreamSequence | Sequence[str]) -> float:
        """The anomaly score of one sequence (a StreamSequence or a list of masked messages)."""
        messages = sequence.messages if isinstance(sequence, StreamSequence) else list(sequence)
        return float(self.cache.score_texts([messages])[0])

    def explain(self, sequence: StreamSequence | Sequence[str], k: int | None = None) -> list[tuple[int, float]]:
        """Leave-one-out contributions of a sequence's messages as ``(index, probability drop)``,
        largest first (ranked by the drop in log-odds); all of them, or the top ``k``."""
        messages = sequence.messages if isinstance(sequence, StreamSequence) else list(sequence)
        contrib = leave_one_out(self.explain_cache, [messages], by=self.explain_by)[0]
        return top_k(contrib, len(messages) if k is None else k, None if self.explain_repeats else messages)


# -- the run's preprocessing -------------------------------------------------------------------------

# `prepare` options a user may change for detection (the same flags as `prepare`).
OVERRIDABLE = ("format", "mask", "on_unparsed", "window", "step", "session_regex", "time_window",
               "timestamp_field", "timestamp_format", "max_line_chars", "label_rule", "label_field")

# `prepare` options that describe the training data rather than how a line is read: detection sets
# them to these values (a labels file labels the training sessions; the line range and the split
# chose the training lines), so that they never stop an override such as `--window`.
TRAINING_ONLY: dict[str, Any] = {"labels": None, "missing_labels": "fail", "start_line": None,
                                 "end_line": None, "split": None}


class RunPreprocessor:
    """The data package's own parsing and masking (`logllm.data.parsing.LineParser`, `mask_series`),
    so new lines become messages exactly as the training data did.

    ``on_unparsed="fail"`` would stop a stream at its first odd line; here such lines are skipped
    and counted instead. Timestamps are read when ``timestamp_field`` and ``timestamp_format`` are
    set (session time-outs in log time, time windows).
    """

    def __init__(self, options: Any):
        from dataclasses import replace

        from logllm.data.parsing import LineParser

        if options.on_unparsed == "fail":
            log.info("on_unparsed=fail in the run's options: in a stream such lines are skipped and counted")
            options = replace(options, on_unparsed="skip")
        self.options = options
        self.parser = LineParser(options)
        o = options
        self.ts_fields = o.timestamp_field.split(",") if (o.timestamp_field and o.timestamp_format) else []

    def parse(self, lines: list[str]) -> ParsedBatch:
        import polars as pl

        series = pl.Series("line", lines, dtype=pl.String)
        batch = self.parser.parse(series)
        content = batch.content.to_list()
        if batch.skipped:
            content = [c if k else None for c, k in zip(content, batch.keep.to_list())]
        if batch.timestamp is not None:
            stamps = batch.timestamp.to_list()
        elif self.ts_fields:
            stamps = self._timestamps(series)
        else:
            stamps = [None] * len(lines)
        return ParsedBatch(content, stamps, batch.unparsed)

    def _timestamps(self, series: Any) -> list[float | None]:
        import polars as pl

        fields = self.parser.format.extract(series, self.ts_fields)
        text = fields.select(pl.concat_str([pl.col(f) for f in self.ts_fields], separator=" ")).to_series()
        if self.options.timestamp_format == "epoch":
            ts = text.str.strip_chars().cast(pl.Float64, strict=False)
        else:
            dt = text.str.strptime(pl.Datetime("us"), self.options.timestamp_format, strict=False)
            ts = dt.dt.epoch("us").cast(pl.Float64) / 1e6
        return ts.to_list()

    def mask(self, contents: list[str]) -> list[str]:
        from logllm.data.masking import mask_series

        return mask_series(contents, self.options.mask).to_list()


def preprocessor_from_manifest(manifest: dict[str, Any], overrides: dict[str, Any] | None = None,
                               session_timeout: float | None = None,
                               where: str = "data_manifest.json") -> tuple[RunPreprocessor, SequencePolicy]:
    """Rebuild the run's preprocessing and sequencing from its data manifest's ``options``.

    ``overrides`` change `prepare` options (keys of ``OVERRIDABLE``; None values are ignored).
    """
    from dataclasses import replace

    from logllm.data.options import PrepareOptions

    raw = manifest.get("options")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: has no 'options' (it was not written by `logllm prepare`); "
                          "rebuild the prepared folder with this logllm version and retrain, or copy "
                          "the options into the manifest")
    options = PrepareOptions.from_dict(raw)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    bad = sorted(set(changes) - set(OVERRIDABLE))
    if bad:
        raise ConfigError(f"cannot override {bad} for detection; overridable: {', '.join(OVERRIDABLE)}")
    unused = {k: getattr(options, k) for k in ("labels", "start_line", "end_line") if getattr(options, k) is not None}
    if unused:
        log.info("%s: %s not used for detection (they chose and labelled the training data); "
                 "use detect's own --start-line/--end-line for a line range", where,
                 ", ".join(f"{k}={v!r}" for k, v in unused.items()))
    options = replace(options, **TRAINING_ONLY)
    if changes.get("session_regex"):
        changes.update(window=None, step=None, time_window=None)
    elif changes.get("window") or changes.get("time_window"):
        changes.setdefault("session_regex", None)
        if options.family == "hdfs":
            options = replace(options, family="custom", label_rule=options.label_rule)
    if changes.get("window") and "step" not in changes:
        changes["step"] = None  # a new window size without a step: step = window, as in prepare
    options = replace(options, **changes).resolved()
    kind = options.sequence_kind
    if kind == "sessions":
        policy = SequencePolicy("session", session_pattern=options.session_regex, session_timeout=session_timeout)
    elif kind == "windows":
        policy = SequencePolicy("window", window=int(options.window), step=int(options.step))
    elif kind == "time_windows":
        from logllm.data.options import parse_duration

        policy = SequencePolicy("time", time_window=parse_duration(options.time_window),
                                session_timeout=session_timeout)
    else:
        raise ConfigError(f"{where}: family {options.family!r} reads pre-built sequences from CSV; there are no "
                          "raw lines to detect on. Pass --format and --window or --session-regex")
    return RunPreprocessor(options), policy
