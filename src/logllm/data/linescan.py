"""The C line scanner of `logllm prepare` (``logllm.data._linescan``, from ``_linescan.c``).

Two passes over a chunk's raw bytes that numpy cannot do in one go, in C, without the GIL:

* :func:`scan_lines` splits the lines and groups them by digit-normalised text (every ASCII digit
  read as "0"), hashing each line in place: no digit-normalised copy of the chunk is written, and the
  line count, the ASCII check and the line starts come out of the same pass;
* :func:`block_keys` reads the HDFS block ids of every line as 64-bit integers, at the offsets that
  the regex found in the line's distinct text.

The extension is built at install time where a C compiler is present (``setup.py``; optional). Where
it is missing, or ``LOGLLM_NO_C=1`` is set, :func:`available` is false and `prepare` uses numpy and
polars instead (:func:`logllm.data.readers.distinct_lines`, ``prepare._block_id_keys``), with the same
output; the tests run both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import polars as pl

try:
    from logllm.data import _linescan as _c
except ImportError:  # pragma: no cover - a build without a C compiler
    _c = None
if os.environ.get("LOGLLM_NO_C", "") not in ("", "0"):
    _c = None


def available() -> bool:
    """Whether the C scanner is built and enabled."""
    return _c is not None


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


def scan_lines(data: bytes | np.ndarray, hash_bits: int = 64) -> tuple[int, bool, DistinctLines | None]:
    """``(number of lines, whether all bytes are ASCII, DistinctLines)`` of ``data`` (whole lines, each
    ending in "\\n"), in one pass; None for the DistinctLines where the text is not valid UTF-8 (the
    reader repairs such a chunk, then groups its lines again). ``hash_bits`` < 64 truncates the line
    hashes, so that tests reach the byte comparison that settles every hash collision."""
    n, is_ascii, codes, starts, first, text = _c.scan_lines(data, hash_bits)
    try:
        lines = pl.Series("line", text.decode("utf-8").split("\n")[:-1], dtype=pl.String)
    except UnicodeDecodeError:
        return n, is_ascii, None
    return n, is_ascii, DistinctLines(np.frombuffer(codes, dtype=np.int32), lines,
                                      np.frombuffer(first, dtype=np.int32).astype(np.int64),
                                      np.frombuffer(starts, dtype=np.int64))


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
