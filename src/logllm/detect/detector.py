"""Scoring raw log lines with a trained run: files, stdin or followed files -> one detection per sequence.

The pipeline for a stream, one batch of lines at a time::

    raw bytes -> decode (count invalid UTF-8, binary junk, empty lines)          `decode_line`
              -> parse with the run's log format (count unparsed lines; keep     `preprocess`
                 them as content or skip) -> mask (the run's masking)
              -> sequences: fixed windows (window/step), time windows or         `sequencers`
                 sessions (a regex on the content), per source
              -> score every completed sequence (one model call per batch, scores cached by content)
              -> explain flagged sequences (leave-one-out, `logllm.explain`, or the
                 method's own per-line scores, see `explained_by`) -> `Detection`

The run may be of any method (`logllm.methods.load_run`): LogLLM, or a bench method trained with
``logllm train --method NAME``, which maps new masked messages to its features itself.

When sequences complete, and how memory stays bounded, is told in `logllm.detect.sequencers`; the
score and message caches are bounded too.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from logllm.detect.preprocess import Preprocessor, preprocessor_from_manifest
from logllm.detect.sequencers import (
    SequencePolicy,
    SessionSequencer,
    StreamLine,
    StreamSequence,
    TimeWindowSequencer,
)
from logllm.errors import ConfigError
from logllm.explain import LeaveOut, ScoreCache, leave_one_out, log_odds_fn, top_k
from logllm.follow import RawLine
from logllm.scoring import WindowPlan

log = logging.getLogger("logllm.detect")  # the package's logger, for all its modules

ExplainWhich = Literal["flagged", "all", "none"]


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
    #: what the ``top`` lines' ``contribution`` means (the method's kind of explanation)
    explained_by: str = "leave-one-out"
    #: every file and line range the sequence covers, in order (`line_spans`)
    spans: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "anomalous" if self.anomalous else "normal"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def line_spans(lines: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    """``(source, line_number)`` pairs, in order -> ``{source, first_line, last_line}`` per run of one
    source: every file and line range a sequence covers (one per file for a session joined across files)."""
    spans: list[dict[str, Any]] = []
    for source, number in lines:
        if spans and spans[-1]["source"] == source and number >= spans[-1]["last_line"]:
            spans[-1]["last_line"] = number
        else:
            spans.append({"source": source, "first_line": number, "last_line": number})
    return spans


# -- decoding --------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffd]")


@dataclass
class InputCounts:
    """What reading, decoding, parsing and sequencing lines counted; the one definition of these counts,
    shared by `detect`'s summary (`DetectStats`) and `score`'s per-file reports."""

    lines_read: int = 0
    lines_used: int = 0
    empty: int = 0
    binary: int = 0
    invalid_utf8: int = 0
    unparsed: int = 0
    unparsed_skipped: int = 0
    no_session_key: int = 0
    evicted_sessions: int = 0


@dataclass
class DetectStats(InputCounts):
    """Counts over a whole run of `Detector`: what was read, skipped, scored and flagged."""

    sequences_scored: int = 0
    flagged: int = 0
    sessions_across_files: int = 0  # key sessions whose lines lie in more than one file
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> dict[str, Any]:
        seconds = max(time.monotonic() - self.started, 1e-9)
        d = {k: v for k, v in asdict(self).items() if k != "started"}
        d["seconds"] = round(seconds, 3)
        d["lines_per_second"] = round(self.lines_read / seconds, 1)
        return d


def decode_line(data: bytes, stats: InputCounts) -> str:
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

def _check_threshold(threshold: float, probability: bool = True) -> None:
    if math.isnan(threshold) or math.isinf(threshold):
        raise ConfigError(f"--threshold must be a finite number, got {threshold}")
    if probability and not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1] (a probability), got {threshold}")


def _probability_run(run_dir: Path) -> bool:
    """Whether a run's scores are probabilities (LogLLM, and bench methods explained by leave-one-out),
    read from its ``config.json`` without loading the model; True when that cannot be told."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    if not isinstance(config, dict) or config.get("method", "logllm") == "logllm":
        return True
    return (config.get("explanation") or {}).get("kind") == "leave-one-out"


def _explanation(model: Any) -> tuple[str, str]:
    """How ``model`` explains scores (``leave-one-out``, ``line-scores`` or ``none``) and its words for it."""
    kind = str(getattr(model, "explanation", "leave-one-out"))
    if kind == "leave-one-out":
        return kind, "leave-one-out"
    return kind, f"{kind}: {getattr(model, 'explanation_note', '')}"


class Detector:
    """A trained run applied to raw lines. See the module docstring for the pipeline.

    ``model`` is anything with ``score(texts, sequences, batch_size) -> np.ndarray`` (a `LogLLM`,
    or a `logllm.methods.BaselineModel`). Use `from_run` to build one from a run folder with the
    run's own preprocessing and threshold. Flagged sequences are explained by leave-one-out, unless
    the model says otherwise (``explanation``): ``line-scores`` lists the lines the method's own
    per-line values point at (e.g. DeepLog's missed next keys: the lines at or above the threshold),
    ``none`` lists no line; each detection's ``explained_by`` says which.

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
        _check_threshold(threshold, bool(getattr(model, "scores_are_probabilities", True)))
        self.model = model
        self.explanation, self.explained_by = _explanation(model)
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
        # A long sequence is read as windows by the model; explanations leave lines out window by window.
        self.cache = ScoreCache(model, batch_size=batch_size)
        self.explain_cache = ScoreCache(log_odds_fn(model), batch_size=batch_size, windows=WindowPlan.of(model))
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
                 model: Any | None = None, per_file_sessions: bool = False, **kwargs: Any) -> Detector:
        """A detector for a run folder: its model, its data manifest's preprocessing (``overrides``
        change options as `prepare`'s flags would), its threshold (unless ``threshold`` is given).
        Key sessions are joined across the input files by their key; ``per_file_sessions``: one
        session per file and key instead."""
        run_dir = Path(run_dir)
        if threshold is not None:
            _check_threshold(threshold, _probability_run(run_dir))  # before anything slow (the model loads last)
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
        policy = replace(policy, across_files=not per_file_sessions)
        if threshold is None:
            from logllm.report import run_threshold

            threshold = run_threshold(run_dir)
            if threshold is None:
                raise ConfigError(f"{run_dir}/threshold.json: missing; pass --threshold or finish training")
        if model is None:
            from logllm.methods import load_run

            model = load_run(run_dir)
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
                line.keys = (parsed.sessions[i] if parsed.sessions is not None
                             else self.sequencer.keys(content))  # type: ignore[union-attr,arg-type]
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
        if chosen and self.top_k > 0 and self.explanation == "leave-one-out":
            loo = leave_one_out(self.explain_cache, [seqs[i].messages for i in chosen], by=self.explain_by)
            contributions = dict(zip(chosen, loo))
        lines = dict(zip(chosen, self._line_scores([seqs[i] for i in chosen]))) if chosen and self.top_k > 0 else {}
        out = []
        for i, seq in enumerate(seqs):
            top = []
            if i in lines:
                top = self._top_lines(seq, lines[i])
            elif i in contributions:
                c = contributions[i]
                keys = None if self.explain_repeats else seq.messages
                for idx, value in top_k(c, self.top_k, keys):
                    line = seq.lines[idx]
                    top.append({"index": idx, "source": line.source, "line": line.line_number, "contribution": value,
                                "log_odds": float(c.log_odds[idx]), "text": line.raw, "message": line.message,
                                "occurrences": seq.messages.count(line.message)})
            out.append(Detection(seq.source, seq.sequence_id, seq.first_line, seq.last_line, len(seq.lines),
                                 float(scores[i]), self.threshold, bool(flagged[i]), seq.reason, top,
                                 self.explained_by, line_spans((ln.source, ln.line_number) for ln in seq.lines)))
        self.stats.sequences_scored += len(seqs)
        self.stats.flagged += int(flagged.sum())
        self.stats.sessions_across_files += sum(1 for seq in seqs if seq.key and len({ln.source for ln in seq.lines}) > 1)
        return out

    def _line_scores(self, seqs: list[StreamSequence]) -> list[Any]:
        """The method's own value per line of each sequence (``line-scores`` models), else []."""
        if self.explanation != "line-scores" or not seqs:
            return []
        table: dict[str, int] = {}
        ids = [[table.setdefault(m, len(table)) for m in s.messages] for s in seqs]
        return self.model.line_scores(list(table), ids)

    def _top_lines(self, seq: StreamSequence, values: Any) -> list[dict[str, Any]]:
        """The top-k lines by the method's per-line value, among those at or above the threshold (by
        the method's rule, the lines that make the sequence anomalous); one line per masked message
        unless ``explain_repeats``."""
        order = sorted((i for i in range(len(values)) if values[i] >= self.threshold), key=lambda i: (-values[i], i))
        top: list[dict[str, Any]] = []
        seen: set[str] = set()
        for idx in order:
            line = seq.lines[idx]
            if not self.explain_repeats and line.message in seen:
                continue
            seen.add(line.message)
            top.append({"index": idx, "source": line.source, "line": line.line_number, "contribution": float(values[idx]),
                        "text": line.raw, "message": line.message, "occurrences": seq.messages.count(line.message)})
            if len(top) == self.top_k:
                break
        return top

    def score(self, sequence: StreamSequence | Sequence[str]) -> float:
        """The anomaly score of one sequence (a StreamSequence or a list of masked messages)."""
        messages = sequence.messages if isinstance(sequence, StreamSequence) else list(sequence)
        return float(self.cache.score_texts([messages])[0])

    def explain(self, sequence: StreamSequence | Sequence[str], k: int | None = None) -> list[tuple[int, float]]:
        """Leave-one-out contributions of a sequence's messages as ``(index, probability drop)``,
        largest first (ranked by the drop in log-odds); all of them, or the top ``k``. For a model
        explained by ``line-scores``, its own value per line instead, largest first; for ``none``, []."""
        messages = sequence.messages if isinstance(sequence, StreamSequence) else list(sequence)
        n = len(messages) if k is None else k
        if self.explanation == "none":
            return []
        if self.explanation == "line-scores":
            table: dict[str, int] = {}
            ids = [table.setdefault(m, len(table)) for m in messages]
            values = self.model.line_scores(list(table), [ids])[0]
            return [(i, float(values[i])) for i in sorted(range(len(values)), key=lambda i: (-values[i], i))][:n]
        contrib = leave_one_out(self.explain_cache, [messages], by=self.explain_by)[0]
        return top_k(contrib, n, None if self.explain_repeats else messages)
