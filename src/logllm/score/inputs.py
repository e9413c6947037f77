"""The inputs of `logllm score`: files, globs and folders of raw logs -> a list of files; their lines.

`expand_inputs` turns the command line's inputs into an ordered, de-duplicated list of files (a
folder: every file under it, recursively, by path; a glob: its matches, sorted; hidden files and
folders are left out of folders and counted). An input that names nothing is a user error
(`ConfigError`); a file that exists but cannot be read is not: it fails when read, and the run goes
on with the other files (`logllm.score.runner`).

`read_lines` reads one file, plain or gzip (told by its first two bytes, as `prepare` does), as
`follow.RawLine` objects numbered from 1, exactly as `logllm detect` reads a plain file (its own
`LineReader`); a gzip file is read the same way from its decompressed bytes.
"""

from __future__ import annotations

import glob
import gzip
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from logllm.errors import ConfigError
from logllm.follow import LineReader, RawLine

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
CHUNK_BYTES = 1 << 16  # LineReader's chunk size: lines are cut at the same places


@dataclass
class ExpandedInputs:
    """The files to score, in order, and what the expansion left out (counted, never silently)."""

    files: list[str]
    hidden_skipped: int = 0
    duplicates: int = 0


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def expand_inputs(inputs: Sequence[str]) -> ExpandedInputs:
    """Files, globs (``*``, ``?``, ``[``, ``**``) and folders -> the files they name, in the order given.

    Raises `ConfigError` naming the input when one names no file (a missing path, an empty folder,
    a glob without matches), so that a typo never scores nothing silently.
    """
    if not inputs:
        raise ConfigError("no inputs: give log files, globs ('logs/*.gz') or folders to score")
    out: list[str] = []
    seen: set[str] = set()
    hidden = duplicates = 0
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for p in sorted(path.rglob("*")):
                if not p.is_file():
                    continue
                if _is_hidden(p, path):
                    hidden += 1
                    continue
                found.append(str(p))
            what = "folder holds no files"
        elif path.exists():
            found = [item]
            what = ""
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            what = "glob matches no file"
        else:
            raise ConfigError(f"{item}: no such file or folder; give log files, globs or folders to score")
        if not found:
            raise ConfigError(f"{item}: {what}; give log files, globs or folders to score")
        for f in found:
            key = os.path.realpath(f)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            out.append(f)
    if hidden:
        log.info("%d hidden files (a name starting with '.') under the input folders left out", hidden)
    if duplicates:
        log.info("%d files named twice by the inputs scored once", duplicates)
    return ExpandedInputs(out, hidden, duplicates)


def is_gzip(path: str) -> bool:
    """True when the file starts with gzip's magic bytes (whatever its name)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


@dataclass
class LineCounts:
    """What reading one file counted: lines, lines cut at ``max_line_bytes``, a last line without newline."""

    lines: int = 0
    cut_lines: int = 0
    unterminated: int = 0


def read_lines(path: str, max_line_bytes: int, counts: LineCounts, batch_lines: int = 4096) -> Iterator[list[RawLine]]:
    """Batches of a file's lines as `RawLine(path, n, bytes)`; plain files through detect's `LineReader`,
    gzip files split by the same rules. Read errors (OSError, a truncated or corrupt gzip stream)
    propagate to the caller, which names the file."""
    if not is_gzip(path):
        reader = LineReader([path], max_line_bytes=max_line_bytes, batch_lines=batch_lines)
        for batch in reader.batches():
            counts.lines += len(batch)
            yield batch
        counts.cut_lines += reader.stats.cut_lines
        counts.unterminated += reader.stats.unterminated
        return
    batch: list[RawLine] = []
    for line in _gzip_lines(path, max_line_bytes, counts):
        counts.lines += 1  # counted as read: a file that fails midway says how far it got
        batch.append(line)
        if len(batch) >= batch_lines:
            yield batch
            batch = []
    if batch:
        yield batch


def _gzip_lines(path: str, max_line_bytes: int, counts: LineCounts) -> Iterator[RawLine]:
    """`follow.LineReader`'s splitting rules on decompressed chunks of the same size: a trailing CR is
    dropped, a partial line longer than ``max_line_bytes`` is cut (its rest up to the newline is
    discarded; counted), a last line without newline is a line of its own."""
    number = 0
    partial = bytearray()
    skipping = False
    with gzip.open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            start = 0
            while (nl := chunk.find(b"\n", start)) >= 0:
                if skipping:
                    skipping = False
                else:
                    partial += chunk[start:nl]
                    line = bytes(partial)
                    partial.clear()
                    number += 1
                    yield RawLine(path, number, line[:-1] if line.endswith(b"\r") else line)
                start = nl + 1
            rest = chunk[start:]
            if skipping or not rest:
                continue
            partial += rest
            if len(partial) > max_line_bytes:
                counts.cut_lines += 1
                log.warning("%s line %d: longer than %d bytes; cut to that length", path, number + 1, max_line_bytes)
                number += 1
                yield RawLine(path, number, bytes(partial[:max_line_bytes]))
                partial.clear()
                skipping = True
    if partial and not skipping:
        counts.unterminated += 1
        yield RawLine(path, number + 1, bytes(partial))
