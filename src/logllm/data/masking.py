"""Masking variable parts of log messages with ``<*>`` (METHOD.md section 2).

Two implementations of one rule set, with identical output:

* :func:`mask_series` / :func:`mask_expr` run polars' (Rust) regex over a whole column;
* :func:`mask_text` runs Python's :mod:`re` on one string (streaming use, tests, the reference
  benchmark).

The rules: every run of three or more dots becomes ``.. ``; then, scanning left to right, the first
class in :data:`MASK_CLASSES` that matches at a position is replaced by ``<*>``. Both engines use
leftmost-first alternation, so one alternation of the classes in order implements "first class that
matches". Word boundaries and character classes are ASCII-only on purpose: Python's and Rust's
Unicode definitions of ``\\b``/``\\w``/``\\s`` differ on rare characters, and ASCII keeps the two
implementations identical on any text.

Every character class here treats the ten ASCII digits alike and no digit survives masking (a digit
is either inside a match or starts a class-10 match), so ``mask(x) == mask(digits_to_zero(x))``.
:func:`digits_to_zero` lets callers mask each distinct digit-normalised text once (``logllm prepare``
does this on raw bytes); a test checks the property.
"""

from __future__ import annotations

import ctypes
import re
import sys
from collections.abc import Iterable
from functools import partial
from typing import Literal

import numpy as np
import polars as pl

from logllm.data.threads import in_blocks

MaskMode = Literal["paper", "none"]
MASK_MODES: tuple[str, ...] = ("paper", "none")
MASK_TOKEN = "<*>"

DOTS_PATTERN = r"\.{3,}"
DOTS_REPLACEMENT = ".. "

_WS = r"[ \t\n\r\f\v]"
_NUMBER_WORDS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred|thousand|million|billion"
)
_WEEKDAYS = "Monday|Mon|Tuesday|Tue|Wednesday|Wed|Thursday|Thu|Friday|Fri|Saturday|Sat|Sunday|Sun"
_MONTHS = (
    "January|Jan|February|Feb|March|Mar|April|Apr|May|June|Jun|July|Jul|August|Aug|September|Sep|"
    "October|Oct|November|Nov|December|Dec"
)
_HEX2 = "[0-9A-Fa-f]{2}"
_USER = "[A-Za-z0-9_.]+"
_TOKEN = r"[A-Za-z0-9.:_\-]"
# "{B}" stands for an ASCII word boundary; it is spelled per engine below.
MASK_CLASSES: tuple[tuple[str, str], ...] = (
    ("bool", "True|true|False|false"),
    ("number_word", "{B}(?:" + _NUMBER_WORDS + "){B}"),
    ("weekday", "{B}(?:" + _WEEKDAYS + "){B}"),
    ("month_day", "{B}(?:" + _MONTHS + ")" + _WS + "+[0-9]{1,2}" + _WS + "+"),
    ("ipv4", r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]+)?"),
    ("mac", f"(?:{_HEX2}:){{11}}{_HEX2}|(?:{_HEX2}:){{5}}{_HEX2}"),
    ("path", r"[A-Za-z0-9]*[:.]?(?:[/\\][^/\\ \t\n\r\f\v\[\]]+)+"),
    ("hex_word", "{B}(?:[0-9A-Fa-f]{10}|[0-9A-Fa-f]{8}){B}"),
    ("user_host", f"{_USER}@{_USER}-{_USER}|{_USER}@{_USER}"),
    ("digit_token", f"{_TOKEN}*[0-9]{_TOKEN}*"),
)


def _combined(boundary: str) -> str:
    return "|".join(f"(?:{p.replace('{B}', boundary)})" for _, p in MASK_CLASSES)


#: The combined pattern for polars / Rust regex (ASCII word boundary).
POLARS_PATTERN = _combined(r"(?-u:\b)")
#: The combined pattern for Python ``re`` (ASCII word boundary).
PYTHON_PATTERN = _combined(r"(?a:\b)")

_PY_MASK = re.compile(PYTHON_PATTERN)
_PY_DOTS = re.compile(DOTS_PATTERN)
_DIGITS_STR = str.maketrans("123456789", "000000000")
DIGITS_TO_ZERO_BYTES = bytes.maketrans(b"123456789", b"000000000")


def check_mode(mode: str) -> MaskMode:
    if mode not in MASK_MODES:
        from logllm.errors import ConfigError

        raise ConfigError(f"--mask {mode!r} is not a masking mode; choose one of {', '.join(MASK_MODES)}")
    return mode  # type: ignore[return-value]


def mask_text(text: str, mode: MaskMode = "paper") -> str:
    """Mask one message (Python ``re``); same output as :func:`mask_series` on that message."""
    if mode == "none":
        return text
    return _PY_MASK.sub(MASK_TOKEN, _PY_DOTS.sub(DOTS_REPLACEMENT, text))


def mask_expr(expr: pl.Expr, mode: MaskMode = "paper") -> pl.Expr:
    """The masking as a polars expression over a string column."""
    if mode == "none":
        return expr
    return expr.str.replace_all(DOTS_PATTERN, DOTS_REPLACEMENT).str.replace_all(POLARS_PATTERN, MASK_TOKEN)


def mask_series(contents: pl.Series | list[str], mode: MaskMode = "paper") -> pl.Series:
    """Mask a batch of messages with polars' regex engine (nulls stay null)."""
    s = contents if isinstance(contents, pl.Series) else pl.Series("content", contents, dtype=pl.String)
    if mode == "none":
        return s
    return s.to_frame("c").select(mask_expr(pl.col("c"), mode)).to_series().rename(s.name)


def digits_to_zero(text: str) -> str:
    """Replace each ASCII digit by ``0`` (masking is invariant under this; see module docstring)."""
    return text.translate(_DIGITS_STR)


def digits_to_zero_array(arr: np.ndarray, block: int = 1 << 20) -> bytes:
    """:func:`digits_to_zero` on raw bytes (a uint8 array; UTF-8 continuation bytes are never ASCII
    digits), as a new ``bytes``: ``bytes(arr).translate(DIGITS_TO_ZERO_BYTES)`` without the copy to
    ``bytes`` first, done by numpy (SIMD) in blocks of at most ``block`` bytes, two threads taking
    the blocks of a large array in turn (numpy releases the GIL). Small blocks keep the temporaries small: a
    fresh chunk-sized numpy array costs 20-80 ms of page faults in a new process (numpy asks for huge
    pages above 4 MB), more than the arithmetic.

    numpy writes straight into the new ``bytes`` object (see ``_unfilled_bytes``), so there is no
    ``tobytes`` copy and no zero fill before."""
    return digits_to_zero_and_count(arr, block, count=False)[2]


def digits_to_zero_and_count(arr: np.ndarray, block: int = 1 << 20, count: bool = True) -> tuple[int, int, bytes]:
    """``(number of "\\n" bytes, largest byte, digits_to_zero_array(arr))`` in one blockwise pass (each
    block is counted while it is in cache for the digit pass); with ``count=False`` the first two are 0."""
    n = len(arr)
    if n == 0:
        return 0, 0, b""
    result, buffer = _unfilled_bytes(n)
    found = in_blocks(partial(_digits_to_zero_part, arr, buffer, block, count=count), n, block)
    return sum(k for k, _ in found), max(top for _, top in found), result


def _unfilled_bytes(n: int) -> tuple[bytes, np.ndarray]:
    """A new ``bytes`` of length ``n`` and a writable numpy view of its bytes, for filling it once.

    This is ``PyBytes_FromStringAndSize(NULL, n)``, the C API's way to build a bytes object in place
    (CPython, which torch and this package need): its memory is not written before the caller fills
    it, so the page faults of a fresh 31 MB buffer happen in the two-threaded numpy pass instead of in
    a single-threaded zero fill first, as with a preallocated ``BytesIO`` (13-27 ms for HDFS_2pct).
    The object is new and unshared, and nothing reads or hashes it before it is filled."""
    result = _BYTES_FROM_SIZE(None, n)
    view = (ctypes.c_char * n).from_address(id(result) + _BYTES_DATA_OFFSET)
    return result, np.frombuffer(view, dtype=np.uint8)


_BYTES_FROM_SIZE = ctypes.pythonapi.PyBytes_FromStringAndSize
_BYTES_FROM_SIZE.restype = ctypes.py_object
_BYTES_FROM_SIZE.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
_BYTES_DATA_OFFSET = sys.getsizeof(b"") - 1  # where a bytes object's data starts: the size of b"" less its NUL


def _digits_to_zero_part(arr: np.ndarray, out: np.ndarray, block: int, blocks: Iterable[tuple[int, int]],
                         count: bool = False) -> tuple[int, int]:
    """The digit pass over the ``blocks`` (``(lo, hi)`` ranges of at most ``block`` bytes) of ``arr``;
    with ``count``, also ``(number of "\\n", largest byte)`` of those blocks."""
    d = np.empty(min(block, len(arr)), dtype=np.uint8)
    is_digit = np.empty(len(d), dtype=bool)
    lines, top = 0, 0
    for lo, hi in blocks:
        a = arr[lo:hi]
        k = hi - lo
        np.subtract(a, 48, out=d[:k])  # uint8 wraps around: only "0".."9" give 0..9
        np.less(d[:k], 10, out=is_digit[:k])
        np.multiply(d[:k], is_digit[:k], out=d[:k])  # a digit's distance from "0", else 0
        np.subtract(a, d[:k], out=out[lo:hi])
        if count:
            n, t = newlines_and_top(a, is_digit)
            lines, top = lines + n, max(top, t)
    return lines, top


def newlines_and_top(a: np.ndarray, scratch: np.ndarray) -> tuple[int, int]:
    """``(number of "\\n" bytes, largest byte)`` of a uint8 block; ``scratch`` is a bool array at least
    as long, reused between blocks (no fresh temporary per block)."""
    mask = scratch[: len(a)]
    np.equal(a, 10, out=mask)
    return int(np.count_nonzero(mask)), int(a.max())
