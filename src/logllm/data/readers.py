"""Reading log files: plain or gzip, several in order, a line range, in chunks of bounded size.

Lines come out in chunks of whole lines (``LineChunk``) so that memory stays bounded by the chunk
size however large the file is. Invalid UTF-8 is decoded with replacement characters and each such
line is counted and reported (Loghub's files contain latin-1 bytes). Every input is hashed (sha256
of the bytes on disk) while it is read, for the manifest: the blocks read for parsing are hashed in a
helper thread (hashlib releases the GIL) once the reader's own pass over them is done, so plain files
are read once.

Plain files are memory-mapped one chunk-sized window at a time: a chunk is then a numpy view of the
page cache (no copy, and far fewer page faults than a freshly allocated buffer) and only the windows
of the chunks in use are mapped, so memory stays bounded. ``LineChunk.data`` copies such a chunk into
``bytes`` on first use; the fast path of `logllm prepare` never needs to. (As with any memory map, a
file truncated by another process while it is read ends the process with SIGBUS.) Gzip files are
decompressed into ``bytes`` chunks.

For `logllm prepare`'s fast path the reader can also group each chunk's lines by their
digit-normalised text while it counts them (``LineReader(group_lines=True)``): with the C extension
``logllm.data._linescan`` (built at install time where a C compiler is present) in one pass over the
bytes (:func:`logllm.data.linescan.scan_lines`); without it, numpy writes a digit-normalised copy in
its counting pass and polars groups that copy later (:func:`distinct_lines`). Both give the same
:class:`~logllm.data.linescan.DistinctLines`. A UTF-8 byte order mark that starts a file is dropped.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import mmap
import os
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from logllm.data import linescan
from logllm.data.linescan import DistinctLines
from logllm.data.masking import digits_to_zero_and_count, digits_to_zero_array, newlines_and_top
from logllm.data.threads import in_blocks
from logllm.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_BYTES = 64 << 20
_BOM = b"\xef\xbb\xbf"  # the UTF-8 byte order mark
_SEPARATORS = [bytes([b]) for b in (1, 2, 3, 4, 5, 6, 7, 8, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24)]


@dataclass
class InputFile:
    """An input as recorded in the manifest (``file_index`` indexes this list)."""

    path: str
    bytes: int
    sha256: str = ""
    lines: int = 0

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256, "lines": self.lines}


@dataclass
class LineChunk:
    """Consecutive whole lines of one file: ``raw`` holds ``n_lines`` lines, each ending in ``\\n``,
    as valid UTF-8: ``bytes``, or a uint8 numpy view of a memory-mapped window of the file (then
    ``data`` copies it on first use; ``array`` never copies). ``first_line`` is the 1-based number of
    the first one in its file."""

    file_index: int
    first_line: int
    raw: bytes | np.ndarray
    n_lines: int
    invalid_utf8_lines: list[int] = field(default_factory=list)
    #: Byte offsets of the ``n_lines`` line ends (None when not computed: the reader lists them only
    #: where it cuts a line range); ``line_starts`` finds them when asked.
    newlines: np.ndarray | None = None
    #: The lines grouped by digit-normalised text, when the reader's C scanner did that in its
    #: counting pass (``LineReader(group_lines=True)``); else None.
    distinct: DistinctLines | None = None
    #: Without the C scanner: the lines with every ASCII digit replaced by "0"
    #: (``digits_to_zero_array``), when the reader made that copy in its counting pass; else None.
    digits_zeroed: bytes | None = None

    @property
    def data(self) -> bytes:
        """The lines as ``bytes`` (a mapped chunk is copied once, on first use)."""
        if not isinstance(self.raw, bytes):
            self.raw = self.raw.tobytes()
        return self.raw

    @property
    def array(self) -> np.ndarray:
        """The lines as a uint8 array (a view, no copy)."""
        return self.raw if isinstance(self.raw, np.ndarray) else np.frombuffer(self.raw, dtype=np.uint8)

    @property
    def size(self) -> int:
        """Length in bytes."""
        return len(self.raw)

    def line_starts(self) -> np.ndarray:
        """Byte offset of the first byte of each line (int64, ``n_lines`` values)."""
        nl = self.newlines if self.newlines is not None else newline_offsets(self.array)
        starts = np.empty(len(nl), dtype=np.int64)
        starts[:1] = 0
        starts[1:] = nl[:-1] + 1
        return starts


def group_lines(chunk: LineChunk, pool: Executor | None = None) -> DistinctLines:
    """The chunk's :class:`DistinctLines`: the reader's, or computed now (C scanner, else numpy and
    polars on the digit-normalised copy; byte passes split with ``pool``, see :mod:`logllm.data.threads`)."""
    if chunk.distinct is not None:
        return chunk.distinct
    if linescan.available():
        distinct = linescan.scan_lines(chunk.array, pool=pool)[2]
        if distinct is not None:  # (None only for invalid UTF-8, which the reader has repaired)
            return distinct
    normalised = (chunk.digits_zeroed if chunk.digits_zeroed is not None
                  else digits_to_zero_array(chunk.array, pool=pool))
    chunk.digits_zeroed = None
    return DistinctLines(*distinct_lines(normalised, chunk.n_lines))


def newline_offsets(data: bytes | np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """Offsets of every ``\\n`` in ``data`` (numpy, as fast as ``bytes.count``), block by block so the
    temporary mask stays small (no chunk-sized allocation to fault in)."""
    arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    parts = [np.flatnonzero(arr[i: i + block] == 10) + i for i in range(0, len(arr), block)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def count_lines(arr: np.ndarray, block: int = 1 << 20, pool: Executor | None = None) -> tuple[int, bool]:
    """``(number of "\\n" bytes, whether all bytes are ASCII)`` of a uint8 array, in one blockwise pass
    (counting is several times cheaper than listing the offsets), two threads taking the blocks of a
    large array in turn; 1 MB blocks keep the temporary mask small and reused (see ``digits_to_zero_array``)."""

    def count(blocks: Iterator[tuple[int, int]]) -> tuple[int, int]:
        scratch = np.empty(min(block, len(arr)), dtype=bool)
        n, top = 0, 0
        for lo, hi in blocks:
            k, t = newlines_and_top(arr[lo:hi], scratch)
            n, top = n + k, max(top, t)
        return n, top

    found = in_blocks(count, len(arr), block, pool=pool)
    return sum(n for n, _ in found), max(top for _, top in found) < 128


def count_lines_and_zero_digits(arr: np.ndarray, block: int = 1 << 20,
                                pool: Executor | None = None) -> tuple[int, bool, bytes]:
    """``count_lines(arr) + (digits_to_zero_array(arr),)`` in one blockwise pass: each block is
    counted while it is in cache for the digit pass (two threads taking the blocks of a large array)."""
    lines, top, zeroed = digits_to_zero_and_count(arr, block, pool=pool)
    return lines, top < 128, zeroed


def check_inputs(paths: list[str] | tuple[str, ...], what: str = "--log") -> list[InputFile]:
    """Each path must be an existing, non-empty regular file."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise DataError(f"{what} {p}: file not found; check the path")
        if not path.is_file():
            raise DataError(f"{what} {p}: not a regular file")
        size = path.stat().st_size
        if size == 0:
            raise DataError(f"{what} {p}: file is empty (0 bytes); remove it from {what}")
        out.append(InputFile(path=str(p), bytes=size))
    return out


def _hash_file(digest: hashlib._Hash, path: str) -> None:
    with open(path, "rb") as raw:
        for block in iter(lambda: raw.read(1 << 24), b""):
            digest.update(block)


def _is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def fix_utf8(data: bytes, first_line: int) -> tuple[bytes, list[int]]:
    """Replace invalid UTF-8 sequences (U+FFFD) and return the 1-based numbers of the lines touched."""
    if data.isascii():
        return data, []
    try:
        data.decode("utf-8")
        return data, []
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    bad = []
    for i, line in enumerate(lines):
        if line.isascii():
            continue
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(first_line + i)
            lines[i] = line.decode("utf-8", errors="replace").encode("utf-8")
    return b"\n".join(lines), bad


class LineReader:
    """Iterate over the lines of several files as ``LineChunk`` s.

    ``start_line``/``end_line`` (1-based, inclusive) count lines over the concatenation of the files.
    After iteration ``inputs`` holds size, sha256 and line count of every file. ``pool`` (the
    caller's, see :mod:`logllm.data.threads`) runs the second half of the byte passes.
    """

    def __init__(self, paths: list[str] | tuple[str, ...], start_line: int | None = None,
                 end_line: int | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES, what: str = "--log",
                 group_lines: bool = False, pool: Executor | None = None):
        self.pool = pool
        self.inputs = check_inputs(paths, what)
        self.group_lines = group_lines
        self.start_line = start_line or 1
        self.end_line = end_line
        self.chunk_bytes = chunk_bytes
        self.lines_read = 0  # lines seen in all files (in range or not)
        self.lines_in_range = 0
        self.invalid_utf8 = 0

    def __iter__(self) -> Iterator[LineChunk]:
        # Hashing runs in a helper thread (hashlib releases the GIL) while chunks are processed.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
            yield from self._iter(pool)

    def _iter(self, pool: ThreadPoolExecutor) -> Iterator[LineChunk]:
        global_line = 0  # lines seen before the current chunk, over all files
        for index, info in enumerate(self.inputs):
            digest = hashlib.sha256()
            hashing: list[Future] = []
            file_line = 0
            try:
                if _is_gzip(info.path):
                    hashing.append(pool.submit(_hash_file, digest, info.path))
                    blocks: Iterator[tuple[np.ndarray | bytes, np.ndarray | None]] = (
                        (block, None) for block in self._gzip_blocks(info.path))
                else:
                    blocks = self._mapped_blocks(info.path)
                for block, file_bytes in blocks:
                    if file_line == 0 and bytes(block[:3]) == _BOM:
                        block = block[3:]  # a byte order mark starts the file, not its first line
                    arr = block if isinstance(block, np.ndarray) else np.frombuffer(block, dtype=np.uint8)
                    zeroed = distinct = None
                    if self.group_lines and global_line + 1 >= self.start_line and (
                            self.end_line is None or global_line < self.end_line):  # starts in range
                        if linescan.available():
                            n, ascii_only, distinct = linescan.scan_lines(arr, pool=self.pool)
                        else:
                            n, ascii_only, zeroed = count_lines_and_zero_digits(arr, pool=self.pool)
                    else:
                        n, ascii_only = count_lines(arr, pool=self.pool)
                    if file_bytes is not None:  # hashed now, beside what follows: the pass above had both cores
                        hashing.append(pool.submit(digest.update, file_bytes))
                    lo, hi = global_line + 1, global_line + n  # global numbers of this chunk's lines
                    first_in_file = file_line + 1
                    file_line += n
                    global_line += n
                    keep_lo = max(lo, self.start_line)
                    keep_hi = hi if self.end_line is None else min(hi, self.end_line)
                    if keep_lo > keep_hi:
                        continue
                    nl = None
                    if keep_lo > lo or keep_hi < hi:
                        nl = newline_offsets(arr)
                        a = keep_lo - lo  # index of first kept line within the chunk
                        b = keep_hi - lo  # index of last kept line
                        start = 0 if a == 0 else int(nl[a - 1]) + 1
                        block = block[start: int(nl[b]) + 1]
                        nl = nl[a: b + 1] - start
                        zeroed = distinct = None
                    first = first_in_file + (keep_lo - lo)
                    bad: list[int] = []
                    if not ascii_only:
                        block, bad = fix_utf8(bytes(block), first)
                    if bad:
                        nl = zeroed = distinct = None  # replacement characters moved the line ends
                        self.invalid_utf8 += len(bad)
                        log.warning("%s: %d line(s) with invalid UTF-8 decoded with replacement "
                                    "(first: line %d)", info.path, len(bad), bad[0])
                    self.lines_in_range += keep_hi - keep_lo + 1
                    yield LineChunk(index, first, block, keep_hi - keep_lo + 1, bad, nl, distinct, zeroed)
            except (OSError, EOFError, gzip.BadGzipFile) as err:
                raise DataError(f"{info.path}: cannot read ({err}); is the file complete?") from err
            if file_line == 0:
                raise DataError(f"{info.path}: file has no lines (empty after decompression)")
            for job in hashing:
                job.result()
            info.sha256 = digest.hexdigest()
            info.lines = file_line
            self.lines_read += file_line

    def _mapped_blocks(self, path: str) -> Iterator[tuple[np.ndarray | bytes, np.ndarray]]:
        """Whole-line blocks of a plain file as views of memory-mapped windows of about ``chunk_bytes``
        (larger where one line is longer), each with the view of its bytes in the file, for the hash
        (a last line without a line end comes as ``bytes`` with ``\\n`` appended). A window is unmapped
        once its views are gone."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            pos = 0
            while pos < size:
                want = self.chunk_bytes
                while True:
                    end = min(pos + want, size)
                    base = pos - pos % mmap.ALLOCATIONGRANULARITY  # a mapping starts at a page boundary
                    window = mmap.mmap(f.fileno(), end - base, offset=base, access=mmap.ACCESS_READ)
                    cut = window.rfind(b"\n", pos - base)
                    if cut >= 0 or end == size:
                        break
                    window.close()  # one line longer than the window: map a larger one
                    want *= 2
                view = np.frombuffer(window, dtype=np.uint8)[pos - base: (cut + 1) if cut >= 0 else None]
                del window  # the views keep the mapping alive while they are in use
                pos += len(view)
                yield (view if cut >= 0 else view.tobytes() + b"\n"), view

    def _gzip_blocks(self, path: str) -> Iterator[bytes]:
        """Whole-line blocks of a gzip file (decompressed, about ``chunk_bytes`` each); a last line
        without a line end gets ``\\n``."""
        carry = b""
        with gzip.open(path, "rb") as f:
            while True:
                block = f.read(self.chunk_bytes)
                if not block:
                    if carry:
                        yield carry + b"\n"
                    return
                buf = carry + block
                cut = buf.rfind(b"\n")
                if cut < 0:  # one line longer than a chunk: keep reading
                    carry = buf
                    continue
                if cut == len(buf) - 1:
                    data, carry = buf, b""  # no copy when the block ends a line
                else:
                    data, carry = buf[: cut + 1], buf[cut + 1:]
                yield data


def distinct_lines(data: bytes, n_lines: int) -> tuple[np.ndarray, pl.Series, np.ndarray]:
    """``(codes, distinct, first)`` for the lines of a chunk: ``distinct`` holds each distinct line
    once, in order of first appearance; ``codes[i]`` is line i's index in it and ``first[k]`` the
    index of the first line equal to ``distinct[k]``.

    polars' CSV reader builds the categorical (hash + dedupe) while it splits lines, in parallel,
    without materialising one string per line.
    """
    if n_lines == 0:
        return np.zeros(0, dtype=np.int64), pl.Series("line", [], dtype=pl.String), np.zeros(0, dtype=np.int64)
    sep = next((s for s in _SEPARATORS if s not in data), None)
    raw_codes = None
    if sep is not None:
        cats = pl.Categories.random()
        s = pl.read_csv(data, has_header=False, separator=sep.decode(), quote_char=None,
                        new_columns=["line"], schema={"line": pl.Categorical(cats)})["line"]
        if len(s) == n_lines:
            table = cats.to_series().cast(pl.String)
            # Empty lines come back null: give them their own code after the categories.
            raw_codes = s.to_physical().fill_null(len(table)).to_numpy()
            table = table.append(pl.Series([""], dtype=pl.String))
    if raw_codes is None:
        lines = lines_series(data, n_lines)
        table = lines.unique(maintain_order=True)
        raw_codes = lines.replace_strict(table, pl.int_range(len(table), eager=True), return_dtype=pl.Int64).to_numpy()
    # First line of each code, in O(n) (ufunc.at is defined for repeated indices). Line numbers and
    # codes in 32 bits where they fit: the per-line arrays are fresh memory, paid in page faults.
    ix = np.int32 if n_lines < 2**31 - 1 else np.int64
    first_of = np.full(len(table), n_lines, dtype=ix)
    np.minimum.at(first_of, raw_codes, np.arange(n_lines, dtype=ix))
    present = np.flatnonzero(first_of < n_lines)
    order = present[np.argsort(first_of[present], kind="stable")]  # categories come in thread order
    remap = np.zeros(len(table), dtype=ix)
    remap[order] = np.arange(len(order))
    distinct = table.gather(order).rename("line")
    return remap[raw_codes], distinct, first_of[order].astype(np.int64)


def lines_series(data: bytes, n_lines: int) -> pl.Series:
    """The lines of a chunk (each ending in ``\\n``, valid UTF-8) as a string Series.

    polars' CSV reader splits lines in parallel in Rust; a separator byte absent from the chunk
    makes each line one field, and no quote character means quotes are plain text.
    """
    if n_lines == 0:
        return pl.Series("line", [], dtype=pl.String)
    sep = next((s for s in _SEPARATORS if s not in data), None)
    if sep is not None:
        s = pl.read_csv(data, has_header=False, separator=sep.decode(), quote_char=None,
                        new_columns=["line"], schema={"line": pl.String})["line"].fill_null("")
        if len(s) == n_lines:
            return s.rechunk()
    # Fallback (a chunk that contains every separator candidate): split in Python.
    text = data.decode("utf-8")
    return pl.Series("line", [ln.removesuffix("\r") for ln in text.split("\n")[:-1]], dtype=pl.String)
