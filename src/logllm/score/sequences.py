"""The CPU stage of `logllm score`: one file -> its sequences, with the run's own preprocessing.

Each file is a unit of work (a CPU task on Ray, a loop step in-process). Its lines go through the
same steps as in `logllm detect`, built from the detect package's public parts: `decode_line` (odd
lines counted), the run's `RunPreprocessor` (`preprocessor_from_manifest`: format, masking) and the
run's `SequencePolicy` sequencer (windows, time windows or sessions), so that the sequences, their
ids, line numbers and messages are those `detect` builds for the same file.

Sequences never cross files, in `detect` as here: a session is grouped by its key within its file
(`detect` keys sessions by file and key too). What differs: `detect` keeps the sessions of every
file open until its input ends, so ``max_open_sessions`` bounds them all together, while here the
bound applies to each file.

Rows are plain dicts (a Ray Data row, a local list item) of `ROW_KEYS`: one ``kind="sequence"`` row
per sequence, then one ``kind="file"`` row with the file's `FileReport` as JSON. A file that fails
to read yields its file row with the error; sequences already yielded for it are dropped by the
writer, which names the file in the summary.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from logllm.detect import DetectStats, SessionSequencer, StreamLine, decode_line, preprocessor_from_manifest
from logllm.errors import LogLLMError
from logllm.score.inputs import LineCounts, read_lines

log = logging.getLogger(__name__)

ROW_KEYS = ("kind", "file_index", "source", "sequence_id", "first_line", "last_line", "lines", "reason",
            "messages", "report")

# Errors that make one file fail (named in the summary) while the others are scored.
READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error, LogLLMError)


@dataclass
class PreprocessPlan:
    """What every CPU task needs to rebuild the run's preprocessing: the data manifest (a dict, read
    once by the driver), `prepare`-style overrides, and the reading and memory bounds."""

    manifest: dict[str, Any]
    overrides: dict[str, Any]
    where: str = "data_manifest.json"
    max_line_bytes: int = 1 << 20
    max_open_sessions: int = 100_000
    max_session_lines: int = 10_000
    batch_lines: int = 4096


@dataclass
class FileReport:
    """One file's counts (the same names as `logllm detect`'s summary), or why it failed."""

    file_index: int
    path: str
    lines_read: int = 0
    lines_used: int = 0
    sequences: int = 0
    empty: int = 0
    binary: int = 0
    invalid_utf8: int = 0
    unparsed: int = 0
    unparsed_skipped: int = 0
    no_session_key: int = 0
    evicted_sessions: int = 0
    cut_lines: int = 0
    unterminated: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FileReport:
        return cls(**json.loads(text))


def _row(file_index: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": "sequence", "file_index": file_index, "source": "", "sequence_id": "",
                           "first_line": 0, "last_line": 0, "lines": 0, "reason": "", "messages": [],
                           "report": ""}
    row.update(values)
    return row


def file_sequences(file_index: int, path: str, plan: PreprocessPlan) -> Iterator[dict[str, Any]]:
    """Sequence rows of one file, in the order its sequences complete, then its ``kind="file"`` row."""
    started = time.monotonic()
    report = FileReport(file_index, path)
    stats = DetectStats()
    counts = LineCounts()
    preprocessor, policy = preprocessor_from_manifest(plan.manifest, plan.overrides, None, where=plan.where)
    sequencer = policy.build(plan.max_open_sessions, plan.max_session_lines)
    sessions = isinstance(sequencer, SessionSequencer)

    def rows(done: list) -> Iterator[dict[str, Any]]:
        for seq in done:
            report.sequences += 1
            yield _row(file_index, source=seq.source, sequence_id=seq.sequence_id, first_line=seq.first_line,
                       last_line=seq.last_line, lines=len(seq.lines), reason=seq.reason, messages=seq.messages)

    try:
        for batch in read_lines(path, plan.max_line_bytes, counts, plan.batch_lines):
            texts = [decode_line(raw.data, stats) for raw in batch]
            parsed = preprocessor.parse(texts)
            stats.unparsed += parsed.unparsed
            keep = [i for i, c in enumerate(parsed.content) if c is not None]
            stats.unparsed_skipped += len(texts) - len(keep)
            contents = [parsed.content[i] for i in keep]
            messages = preprocessor.mask(contents)  # type: ignore[arg-type]
            done = []
            now = time.monotonic()
            for i, message, content in zip(keep, messages, contents):
                raw = batch[i]
                line = StreamLine(raw.source, raw.line_number, texts[i], message, parsed.timestamp[i])
                if sessions:
                    line.keys = (parsed.sessions[i] if parsed.sessions is not None
                                 else sequencer.keys(content))  # type: ignore[union-attr,arg-type]
                    done += sequencer.add(line, now)  # type: ignore[call-arg]
                else:
                    done += sequencer.add(line)  # type: ignore[call-arg]
                stats.lines_used += 1
            yield from rows(done)
        yield from rows(sequencer.flush())
    except READ_ERRORS as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
        report.error = f"{type(err).__name__}: {reason} (after {counts.lines:,} lines)"
        log.warning("%s: cannot be read: %s; the file is left out, the others are scored", path, report.error)
    if sessions:
        report.no_session_key = sequencer.no_key  # type: ignore[union-attr]
        report.evicted_sessions = sequencer.evicted  # type: ignore[union-attr]
    for name in ("empty", "binary", "invalid_utf8", "unparsed", "unparsed_skipped", "lines_used"):
        setattr(report, name, getattr(stats, name))
    report.lines_read = counts.lines
    report.cut_lines = counts.cut_lines
    report.unterminated = counts.unterminated
    report.seconds = round(time.monotonic() - started, 3)
    yield _row(file_index, kind="file", source=path, report=report.to_json())
