"""The CPU stage of `logllm score`: one file -> its sequences, with the run's own preprocessing.

Each file is a unit of work (a CPU task on Ray, a loop step in-process). Its lines go through the
same steps as in `logllm detect`, built from the detect package's public parts: `decode_line` (odd
lines counted), the run's `RunPreprocessor` (`preprocessor_from_manifest`: format, masking) and the
run's `SequencePolicy` sequencer (windows, time windows, file sessions, or key sessions with
``--per-file-sessions``), so that the sequences, their ids, line numbers and messages are those
`detect` builds for the same file. `file_lines` is that reading, shared with `logllm.score.sessions`,
which joins key sessions across files (the default).

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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from logllm.detect import (
    InputCounts,
    Preprocessor,
    SequencePolicy,
    SessionSequencer,
    StreamLine,
    StreamSequence,
    decode_line,
    line_spans,
    preprocessor_from_manifest,
)
from logllm.errors import LogLLMError
from logllm.score.inputs import LineCounts, read_lines

log = logging.getLogger(__name__)

ROW_KEYS = ("kind", "file_index", "source", "sequence_id", "first_line", "last_line", "lines", "reason",
            "messages", "spans", "report")

# Errors that make one file fail (named in the summary) while the others are scored.
READ_ERRORS = (OSError, EOFError, gzip.BadGzipFile, zlib.error, LogLLMError)


@dataclass
class PreprocessPlan:
    """What every CPU task needs to rebuild the run's preprocessing: the data manifest (a dict, read
    once by the driver), `prepare`-style overrides, the reading and memory bounds, and whether key
    sessions are joined across files."""

    manifest: dict[str, Any]
    overrides: dict[str, Any]
    where: str = "data_manifest.json"
    max_line_bytes: int = 1 << 20
    max_open_sessions: int = 100_000
    max_session_lines: int = 10_000
    batch_lines: int = 4096
    across_files: bool = True

    def build(self) -> tuple[Preprocessor, SequencePolicy]:
        """The run's preprocessing and sequence policy (key sessions across files or not)."""
        preprocessor, policy = preprocessor_from_manifest(self.manifest, self.overrides, None, where=self.where)
        return preprocessor, replace(policy, across_files=self.across_files)

    @property
    def joins_sessions(self) -> bool:
        """Whether the run's sequences are key sessions joined across files (`logllm.score.sessions`)."""
        return self.across_files and self.build()[1].kind == "session"


@dataclass
class FileReport(InputCounts):
    """One file's counts (`detect`'s `InputCounts`, and what `score` adds), or why it failed."""

    file_index: int = 0
    path: str = ""
    sequences: int = 0
    cut_lines: int = 0
    unterminated: int = 0
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {"file_index": d.pop("file_index"), "path": d.pop("path"), **d}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> FileReport:
        return cls(**json.loads(text))


def _row(file_index: int, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": "sequence", "file_index": file_index, "source": "", "sequence_id": "",
                           "first_line": 0, "last_line": 0, "lines": 0, "reason": "", "messages": [],
                           "spans": "", "report": ""}
    row.update(values)
    return row


def sequence_row(file_index: int, seq: StreamSequence) -> dict[str, Any]:
    """A completed sequence as a ``kind="sequence"`` row (its spans as JSON)."""
    return _row(file_index, source=seq.source, sequence_id=seq.sequence_id, first_line=seq.first_line,
                last_line=seq.last_line, lines=len(seq.lines), reason=seq.reason, messages=seq.messages,
                spans=json.dumps(line_spans((ln.source, ln.line_number) for ln in seq.lines)))


def file_row(report: FileReport) -> dict[str, Any]:
    """The ``kind="file"`` row that ends a file's rows: its `FileReport` as JSON."""
    return _row(report.file_index, kind="file", source=report.path, report=report.to_json())


def file_lines(path: str, plan: PreprocessPlan, preprocessor: Preprocessor, report: FileReport,
               session_keys: Callable[[str], tuple[str, ...]] | None = None) -> Iterator[list[StreamLine]]:
    """Batches of a file's lines after decoding, parsing and masking, as `detect` makes them (with their
    session keys when ``session_keys`` is given); counts go to ``report``. A read error ends the
    batches and is recorded in ``report.error`` (the caller decides what to do with the file's part)."""
    counts = LineCounts()
    try:
        for batch in read_lines(path, plan.max_line_bytes, counts, plan.batch_lines):
            texts = [decode_line(raw.data, report) for raw in batch]
            parsed = preprocessor.parse(texts)
            report.unparsed += parsed.unparsed
            keep = [i for i, c in enumerate(parsed.content) if c is not None]
            report.unparsed_skipped += len(texts) - len(keep)
            contents = [parsed.content[i] for i in keep]
            messages = preprocessor.mask(contents)  # type: ignore[arg-type]
            lines = []
            for i, message, content in zip(keep, messages, contents):
                raw = batch[i]
                line = StreamLine(raw.source, raw.line_number, texts[i], message, parsed.timestamp[i])
                if parsed.sessions is not None:  # a record's session field (structured formats)
                    line.keys = parsed.sessions[i]
                elif session_keys is not None:
                    line.keys = session_keys(content)  # type: ignore[arg-type]
                lines.append(line)
            report.lines_used += len(lines)
            yield lines
    except READ_ERRORS as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
        report.error = f"{type(err).__name__}: {reason} (after {counts.lines:,} lines)"
        log.warning("%s: cannot be read: %s; the file is left out, the others are scored", path, report.error)
    report.lines_read = counts.lines
    report.cut_lines = counts.cut_lines
    report.unterminated = counts.unterminated


def file_sequences(file_index: int, path: str, plan: PreprocessPlan) -> Iterator[dict[str, Any]]:
    """Sequence rows of one file, in the order its sequences complete, then its ``kind="file"`` row."""
    started = time.monotonic()
    report = FileReport(file_index=file_index, path=path)
    preprocessor, policy = plan.build()
    sequencer = policy.build(plan.max_open_sessions, plan.max_session_lines)
    sessions = isinstance(sequencer, SessionSequencer)

    def rows(done: list[StreamSequence]) -> Iterator[dict[str, Any]]:
        for seq in done:
            report.sequences += 1
            yield sequence_row(file_index, seq)

    keys = sequencer.keys if isinstance(sequencer, SessionSequencer) else None
    for lines in file_lines(path, plan, preprocessor, report, keys):
        done = []
        now = time.monotonic()
        for line in lines:
            done += sequencer.add(line, now) if sessions else sequencer.add(line)  # type: ignore[call-arg]
        yield from rows(done)
    if report.error is None:
        yield from rows(sequencer.flush())
    if isinstance(sequencer, SessionSequencer):
        report.no_session_key = sequencer.no_key
        report.evicted_sessions = sequencer.evicted
    report.seconds = round(time.monotonic() - started, 3)
    yield file_row(report)
