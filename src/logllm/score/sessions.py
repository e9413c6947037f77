"""Key sessions joined across files (the default for runs sequenced by a session regex, e.g. HDFS's
``blk_`` ids): a session whose lines lie in several files is one session, as `logllm detect` builds it.

A session's lines are in input file order (the order `expand_inputs` gives: as named, folders and
globs sorted by path), then line number. It is cut at ``max_session_lines`` lines (the later lines
make ``KEY#2``...), as `detect` cuts it; its ``source`` and ``file_index`` are those of the file of its
first line, and its ``spans`` (JSON) name every file and line range it covers.

Two ways to the same sessions:

- in-process (`joined_rows`): one `SessionSequencer` over the files read one after the other, as
  `detect` reads them (memory bounded by ``max_open_sessions``, the least recently active session
  scored early and counted, as in `detect`);
- on Ray (`fragment_rows` per file in CPU tasks, then a group-by on the key and `assemble` per key):
  each file task emits the parts of its sessions (``kind="fragment"`` rows: key, file, first line and
  the ``[line, message]`` pairs as JSON; an open part is emitted early past ``max_open_sessions``, which
  changes nothing since parts are joined again), and each key's parts are joined, ordered and cut.
  No session is scored early there: a group holds one key's lines, never the whole archive.

A file that fails to read: its lines are left out of the sessions (in-process, of the sessions still
open when it failed; a session already scored early while it was read keeps them), the others are scored.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from logllm.detect import SessionSequencer, StreamSequence, line_spans
from logllm.score.sequences import FileReport, PreprocessPlan, file_lines, file_row, sequence_row

log = logging.getLogger(__name__)

FRAGMENT_KEYS = ("kind", "file_index", "key", "source", "first_line", "payload", "report")


def _sequencer(plan: PreprocessPlan, across: bool) -> tuple[Any, SessionSequencer]:
    preprocessor, policy = plan.build()
    sequencer = policy.build(plan.max_open_sessions, plan.max_session_lines)
    assert isinstance(sequencer, SessionSequencer), "joined sessions need a session policy"
    sequencer.across_sources = across
    return preprocessor, sequencer


def joined_rows(files: list[str], plan: PreprocessPlan) -> Iterator[dict[str, Any]]:
    """In-process: sequence rows of the sessions of all ``files`` joined by key (as `detect` on the same
    files), each file's ``kind="file"`` row after it is read, the sessions still open at the end last."""
    preprocessor, sequencer = _sequencer(plan, across=True)
    index = {path: i for i, path in enumerate(files)}
    no_key = evicted = 0
    for i, path in enumerate(files):
        started = time.monotonic()
        report = FileReport(file_index=i, path=path)
        for lines in file_lines(path, plan, preprocessor, report, sequencer.keys):
            done: list[StreamSequence] = []
            now = time.monotonic()
            for line in lines:
                done += sequencer.add(line, now)
            yield from (sequence_row(index[seq.source], seq) for seq in done)
        if report.error is not None:
            dropped = sequencer.drop_source(path)
            log.warning("%s: %d of its lines left out of the open sessions", path, dropped)
        report.no_session_key, no_key = sequencer.no_key - no_key, sequencer.no_key
        report.evicted_sessions, evicted = sequencer.evicted - evicted, sequencer.evicted
        report.seconds = round(time.monotonic() - started, 3)
        yield file_row(report)
    yield from (sequence_row(index[seq.source], seq) for seq in sequencer.flush())


def fragment_rows(file_index: int, path: str, plan: PreprocessPlan) -> Iterator[dict[str, Any]]:
    """A CPU task: the parts of the sessions of one file (``kind="fragment"`` rows), then its file row."""
    started = time.monotonic()
    preprocessor, sequencer = _sequencer(plan, across=False)
    report = FileReport(file_index=file_index, path=path)

    def rows(done: list[StreamSequence]) -> Iterator[dict[str, Any]]:
        for seq in done:
            yield {"kind": "fragment", "file_index": file_index, "key": seq.key, "source": path,
                   "first_line": seq.first_line, "report": "",
                   "payload": json.dumps([[line.line_number, line.message] for line in seq.lines])}

    for lines in file_lines(path, plan, preprocessor, report, sequencer.keys):
        done: list[StreamSequence] = []
        now = time.monotonic()
        for line in lines:
            done += sequencer.add(line, now)
        yield from rows(done)
    yield from rows(sequencer.flush())  # a failed file's parts are filtered out by the driver
    report.no_session_key = sequencer.no_key
    report.seconds = round(time.monotonic() - started, 3)
    row = file_row(report)
    yield {k: row.get(k, "") for k in FRAGMENT_KEYS} | {"first_line": 0}


def assemble(fragments: Iterable[dict[str, Any]], max_session_lines: int) -> list[dict[str, Any]]:
    """One key's parts (from any files, in any order) -> its sequence rows: lines in file order, then
    line number; cut at ``max_session_lines`` (``KEY``, ``KEY#2``, ... as `detect` names them)."""
    parts = sorted(fragments, key=lambda f: (int(f["file_index"]), int(f["first_line"])))
    if not parts:
        return []
    key = str(parts[0]["key"])
    lines = [(int(p["file_index"]), str(p["source"]), int(n), str(m))
             for p in parts for n, m in json.loads(p["payload"])]
    out = []
    for k, start in enumerate(range(0, len(lines), max_session_lines)):
        chunk = lines[start:start + max_session_lines]
        reason = "max_lines" if len(chunk) == max_session_lines else "end"
        spans = line_spans((source, n) for _, source, n, _ in chunk)
        first = chunk[0]
        out.append({"kind": "sequence", "file_index": first[0], "source": first[1],
                    "sequence_id": key if k == 0 else f"{key}#{k + 1}", "first_line": first[2],
                    "last_line": chunk[-1][2], "lines": len(chunk), "reason": reason,
                    "messages": [m for *_, m in chunk], "spans": json.dumps(spans), "report": ""})
    return out
