"""The C line scanner of `logllm prepare` (``logllm.data._linescan``, from ``_linescan.c``).

Two passes over a chunk's raw bytes that numpy cannot do in one go, in C, without the GIL:

* :func:`scan_lines` splits the lines and groups them by digit-normalised text (every ASCII digit
  read as "0"), hashing each line in place: no digit-normalised copy of the chunk is written, and the
  line count, the ASCII check and the line starts come out of the same pass;
* :func:`block_keys` reads the HDFS block ids of every line as 64-bit integers, at the offsets that
  the regex found in the line's distinct text.

The extension is built at install time where a C compiler is present (``setup.py``; optional). Where
it is missing, or ``LOGLLM_NO_C=1`` is set (read at each call), :func:`available` is false and
`prepare` uses numpy and polars instead (:func:`logllm.data.readers.distinct_lines` and the numpy
block-id reader of :mod:`logllm.data.grouping`), with the same output; the tests run both.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

import numpy as np
import polars as pl

from logllm.data import threads

try:
    from logllm.data import _linescan as _c
except ImportError:  # pragma: no cover - a build without a C compiler
    _c = None


def _disabled() -> bool:
    """Whether ``LOGLLM_NO_C`` asks for the numpy path (read now, so it can be set per run)."""
    return os.environ.get("LOGLLM_NO_C", "") not in ("", "0")


def available() -> bool:
    """Whether the C scanner is built and enabled (``LOGLLM_NO_C`` unset or 0)."""
    return _c is not None and not _disabled()


def unavailable_reason() -> str | None:
    """Why :func:`available` is false (for the log), or None."""
    if available():
        return None
    if _disabled():
        return "LOGLLM_NO_C is set"
    return "logllm.data._linescan is not built: reinstall logllm where a C compiler is present"


@dataclass
class DistinctLines:
    """The lines of a chunk grouped by their digit-normalised text (every ASCII digit read as "0",
    a trailing "\\r" left out): ``lines`` holds each distinct text once, in order of first
    appearance; ``codes[i]`` is line i's index in it, ``first[k]`` the index of the first line with
    text k, and ``starts`` (when known) the byte offset of each line in the chunk."""

    codes: np.ndarray
    lines: pl.Series
    first: np.ndarray
    starts: np.ndarray | None = None


def scan_lines(data: bytes | np.ndarray, hash_bits: int = 64, min_bytes: int | None = None,
               simd: bool = True, pool: Executor | None = None) -> tuple[int, bool, DistinctLines | None]:
    """``(number of lines, whether all bytes are ASCII, DistinctLines)`` of ``data`` (whole lines, each
    ending in "\\n"), in one pass; None for the DistinctLines where the text is not valid UTF-8 (the
    reader repairs such a chunk, then groups its lines again). ``hash_bits`` < 64 truncates the line
    hashes, so that tests reach the byte comparison that settles every hash collision; ``simd=False``
    takes the scanner's portable loop where it would use AVX2 (the result is the same).

    From ``min_bytes`` (default :data:`logllm.data.threads.MIN_PARALLEL_BYTES`) on, the two halves of
    ``data`` (cut at a line end) are scanned at once in two threads and their tables merged: the
    second half's distinct lines that the first has are renumbered to its codes, the others follow
    in their order, which is the order of first appearance over the whole (the second half in
    ``pool``, see :func:`logllm.data.threads.together`)."""
    arr = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    cut = None
    if threads.workers() > 1 and len(arr) >= (threads.MIN_PARALLEL_BYTES if min_bytes is None else min_bytes):
        cut = _middle_line_end(arr)
    halves = [arr] if cut is None else [arr[:cut], arr[cut:]]
    parts = threads.together([partial(_c.scan_lines, half, hash_bits, simd) for half in halves], pool)
    try:
        texts = [part[5].decode("utf-8").split("\n")[:-1] for part in parts]
    except UnicodeDecodeError:
        return sum(part[0] for part in parts), False, None
    n, is_ascii, codes, starts, first, _ = parts[0]
    codes, starts = np.frombuffer(codes, dtype=np.int32), np.frombuffer(starts, dtype=np.int64)
    first, lines = np.frombuffer(first, dtype=np.int32).astype(np.int64), texts[0]
    if cut is not None:  # the second half's table joins the first's
        n2, ascii2, codes2, starts2, first2, _ = parts[1]
        code_of = {text: code for code, text in enumerate(lines)}
        remap = np.empty(len(texts[1]), dtype=np.int32)
        new = []  # the second half's distinct lines that the first half lacks, in their order
        for i, text in enumerate(texts[1]):
            code = code_of.get(text)
            if code is None:
                code = len(lines) + len(new)
                new.append(i)
            remap[i] = code
        codes = np.concatenate([codes, remap[np.frombuffer(codes2, dtype=np.int32)]])
        starts = np.concatenate([starts, np.frombuffer(starts2, dtype=np.int64) + cut])
        first = np.concatenate([first, np.frombuffer(first2, dtype=np.int32)[new].astype(np.int64) + n])
        lines = lines + [texts[1][i] for i in new]
        n, is_ascii = n + n2, is_ascii and ascii2
    return n, is_ascii, DistinctLines(codes, pl.Series("line", lines, dtype=pl.String), first, starts)


def _middle_line_end(arr: np.ndarray) -> int | None:
    """The offset just past the first "\\n" at or after the middle of ``arr``, if it is not the end."""
    mid, step = len(arr) // 2, 1 << 16
    while mid < len(arr):
        found = np.flatnonzero(arr[mid: mid + step] == 10)
        if len(found):
            cut = mid + int(found[0]) + 1
            return cut if cut < len(arr) else None
        mid, step = mid + step, step * 2
    return None


def block_keys(data: bytes | np.ndarray, starts: np.ndarray, codes: np.ndarray, ptr: np.ndarray,
               digit_at: np.ndarray, digits: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lines, keys)``: for every line i (starting at ``starts[i]`` in ``data``) and every match
    ``ptr[codes[i]] <= j < ptr[codes[i] + 1]`` of its distinct line, the line (int32) and the block
    id's value (int64; negative after a "-"), whose ``digits[j]`` digits start ``digit_at[j]`` bytes
    into the line; an id named twice on a line is listed once. None when an id is not the decimal
    spelling of an int64 (leading zero, "-0", too large): then equal keys would not mean equal ids."""
    found = _c.block_keys(data, np.ascontiguousarray(starts, dtype=np.int64),
                          np.ascontiguousarray(codes, dtype=np.int32), np.ascontiguousarray(ptr, dtype=np.int64),
                          np.ascontiguousarray(digit_at, dtype=np.int32), np.ascontiguousarray(digits, dtype=np.int32),
                          np.ascontiguousarray(negative, dtype=np.uint8))
    if found is None:
        return None
    return np.frombuffer(found[0], dtype=np.int32), np.frombuffer(found[1], dtype=np.int64)
