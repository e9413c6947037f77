"""Which sessions each line of a chunk joins: the session ids that `logllm prepare` finds with the
session regex (HDFS: block ids), in one function, :func:`session_ids`.

Three ways, one result (tested): where the chunk's lines are grouped by their digit-normalised text
(the fast path, :class:`~logllm.data.linescan.DistinctLines`), the regex runs over the distinct lines
only and each id is copied out of the raw bytes at its match's offset (digit normalisation keeps
every byte offset): HDFS block ids are read as 64-bit integers by the C scanner
(:func:`logllm.data.linescan.block_keys`) or by numpy (SWAR, below), other ids as byte strings.
Where those offsets cannot be trusted (a header field names an id, non-ASCII digits, ``\r\n``
line ends that do not line up), or without grouped lines, the regex runs over each line's content
(polars).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Executor

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from logllm.data import linescan, threads
from logllm.data.linescan import DistinctLines
from logllm.data.options import HDFS_SESSION_REGEX
from logllm.data.readers import LineChunk

log = logging.getLogger(__name__)

__all__ = ["field_session_ids", "session_ids"]


def field_session_ids(session: pl.Series) -> pl.DataFrame:
    """The frame of :func:`session_ids` (``line``, ``sid``) from the session ids that each line's record
    names (``--session-field``: a List(String) per line, empty where it names none)."""
    return (pl.DataFrame({"line": np.arange(len(session), dtype=np.int64), "sid": session})
            .explode("sid").drop_nulls("sid"))


def session_ids(chunk: LineChunk, regex: str, line_content: Callable[[], pl.Series], *,
                grouped: DistinctLines | None = None, distinct_content: Callable[[], pl.Series] | None = None,
                pool: Executor | None = None) -> pl.DataFrame:
    """The sessions that the lines of ``chunk`` join: a frame of ``line`` (index in the chunk) and
    ``sid``, one row per line and distinct id it names (in order of lines, then of first match);
    ``sid`` is an Int64 for HDFS block ids read as integers (``blk_{sid}`` spells the id), else a
    String.

    ``regex`` is matched in the <Content> of each line: ``line_content()`` gives it per line. With
    ``grouped`` (the chunk's lines grouped by digit-normalised text) and ``distinct_content()`` (the
    content of ``grouped.lines``; asked for last, so it may be computed in another thread meanwhile),
    the ids are read at their offsets in the raw bytes instead, and ``line_content`` is called only
    where that way cannot be used. ``pool`` runs the second half of the byte passes (see
    :mod:`logllm.data.threads`).
    """
    if grouped is not None and distinct_content is not None:
        sess = _at_offsets(chunk, grouped, regex, distinct_content, pool)
        if sess is not None:
            return sess
        log.debug("line %d of file %d on: session ids by the per-line regex for this chunk (offsets not usable)",
                  chunk.first_line, chunk.file_index)
    ids = line_content().str.extract_all(regex).list.unique(maintain_order=True)
    return (pl.DataFrame({"line": np.arange(chunk.n_lines, dtype=np.int64), "sid": ids})
            .explode("sid").drop_nulls("sid"))


_MAX_SESSION_ID_BYTES = 256  # longer session ids take the per-line path
_MAX_NUMPY_REPEATS = 8  # integer session ids of lines with more matches are deduplicated in polars


def _fixed_rows(arr: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """``arr[start[i]:start[i] + width]`` as the rows of a matrix (numpy gathers whole rows through a
    strided view; zero-padded past the end of ``arr``, from a copy of its last bytes only)."""
    near_end = start > len(arr) - width
    if not near_end.any():
        return sliding_window_view(arr, width)[start]
    tail_from = max(len(arr) - width, 0)
    tail = np.zeros(2 * width, dtype=np.uint8)
    tail[: len(arr) - tail_from] = arr[tail_from:]
    rows = np.empty((len(start), width), dtype=np.uint8)
    if not near_end.all():
        rows[~near_end] = sliding_window_view(arr, width)[start[~near_end]]
    rows[near_end] = sliding_window_view(tail, width)[start[near_end] - tail_from]
    return rows


def _starts_from_lengths(arr: np.ndarray, length: np.ndarray) -> np.ndarray | None:
    """Line starts in ``arr`` (whole lines, ``len(length)`` of them, each ending in ``\\n``) if line i
    has ``length[i]`` bytes before its ``\\n``; None if not. No pass over the bytes: the lengths cut
    ``arr`` into as many pieces as it has line ends, and if every piece ends in ``\\n`` the pieces are
    the lines (n pieces each holding at least one of the n line ends hold exactly one)."""
    starts = np.empty(len(length) + 1, dtype=np.int64)
    starts[0] = 0
    np.add(length, 1, out=starts[1:])
    np.cumsum(starts, out=starts)  # starts[i + 1]: the end of line i, past its "\n"
    if not len(length) or int(starts[-1]) != len(arr):
        return None
    ends = starts[1:]
    ends -= 1
    ok = (arr[ends] == 10).all()
    ends += 1
    return starts[:-1] if ok else None


def _binary_rows(rows: np.ndarray, length: np.ndarray) -> pl.Series:
    """Row i of ``rows`` cut to ``length[i]`` bytes, as a Binary Series (in polars, no per-item Python)."""
    binary = pl.Series("b", rows).cast(pl.List(pl.UInt8)).cast(pl.Binary)
    return binary.to_frame().select(pl.col("b").bin.head(pl.lit(pl.Series(length)))).to_series()


def _low_bytes(k: int) -> int:
    """A uint64 with its ``k`` (clipped to 0..8) lowest bytes set."""
    return (1 << (8 * min(max(k, 0), 8))) - 1


#: ``_LEADING[k]``: per word of a 24-byte field, the mask of the bytes among its first ``k``.
_LEADING = np.array([[_low_bytes(k - 8 * j) for j in range(3)] for k in range(25)], dtype=np.uint64)
#: ``_DIGIT_BYTES[d]``: the mask of the last ``d`` bytes of a 24-byte field (d <= 24).
_DIGIT_BYTES = ~_LEADING[24 - np.arange(25)]
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)


def _block_id_keys(arr: np.ndarray, start: np.ndarray, length: np.ndarray, negative: np.ndarray,
                   pool: Executor | None, block: int = 1 << 14) -> np.ndarray | None:
    """HDFS block ids (``blk_-?[0-9]+`` at ``arr[start:start + length]``) as signed 64-bit integers
    (``blk_-12`` -> -12), in numpy; None unless each id is its integer's decimal form (no leading
    zero, no ``-0``, at most 19 digits and within int64), so that equal keys mean equal ids and
    ``blk_{key}`` spells the id.

    The digits are right-aligned in a 24-byte field read as three little-endian uint64 words (first
    byte lowest), the bytes before the digits are set to "0", and each word's 8 digits are converted
    at once (SWAR: pairs, then quads, then octets of digits). Blocks of ``block`` ids keep the
    temporaries small (no page faults for chunk-sized ones); two threads take the blocks of many
    ids in turn (``threads.in_blocks``, the second in ``pool``). Grouping lines into sessions then hashes integers instead
    of strings, and only the distinct ids are spelled out.
    """
    n = len(start)
    digits = length - 4 - negative
    end = start + length
    if not n or int(digits.min()) < 1 or int(digits.max()) > 19 or int(end.min()) < 24:
        return None
    keys = np.empty(n, dtype=np.int64)

    def fill(blocks: Iterator[tuple[int, int]]) -> bool:
        for i, j in blocks:
            part = _block_id_values(arr, end[i:j], digits[i:j], negative[i:j])
            if part is None:
                return False
            keys[i:j] = part
        return True

    # An id is about 32 bytes of numpy work: split as a byte pass of that size would be.
    return keys if all(threads.in_blocks(fill, n, block, min_bytes=threads.MIN_PARALLEL_BYTES // 32, pool=pool)) else None


def _block_id_values(arr: np.ndarray, end: np.ndarray, digits: np.ndarray,
                     negative: np.ndarray) -> np.ndarray | None:
    """The keys of :func:`_block_id_keys` for ids ending at ``end`` with ``digits`` digits."""
    x = sliding_window_view(arr, 24)[end - 24].view("<u8")  # (n, 3): a copy of each id's last 24 bytes
    x ^= np.uint64(0x3030303030303030)  # "0".."9" -> 0..9 (no borrows, unlike a subtraction)
    x &= _DIGIT_BYTES[digits]  # each byte holds its digit (0 before the first digit)
    # Pairs, quads, octets of digits: lane = high digits * 10^k + low digits, in place (the first
    # digit is the lowest byte; the products' spill into the next lane is masked off or shifted out).
    x *= np.uint64(10 * 2**8 + 1)
    x >>= np.uint64(8)
    for mul, shift, mask in ((100 * 2**16 + 1, 16, 0x00FF00FF00FF00FF), (10000 * 2**32 + 1, 32, 0x0000FFFF0000FFFF)):
        x &= np.uint64(mask)
        x *= np.uint64(mul)
        x >>= np.uint64(shift)
    value = x[:, 0] * np.uint64(10**16) + x[:, 1] * np.uint64(10**8) + x[:, 2]
    if ((value < _POW10[digits - 1]) & (digits > 1)).any():
        return None  # a leading zero
    if (value > np.uint64(2**63 - 1)).any() or (negative & (value == 0)).any():
        return None
    keys = value.astype(np.int64)
    np.negative(keys, out=keys, where=negative)
    return keys


def _at_offsets(chunk: LineChunk, grouped: DistinctLines, rx: str, content: Callable[[], pl.Series],
                pool: Executor | None) -> pl.DataFrame | None:
    """Session ids of a chunk without a regex pass over its raw text; None -> use the per-line way.

    Digit normalisation keeps every byte offset, so an id sits in a raw line exactly where its
    match sits in the line's distinct normalised line: the regex runs over the distinct lines only,
    and numpy copies the id bytes out of the raw chunk at line start + offset in the distinct line.
    ``content()`` gives the content of the distinct lines, asked for last (it may still be being
    parsed in another thread).
    """
    in_line = grouped.lines.str.count_matches(rx).to_numpy().astype(np.int64)
    sess = _ids_at_offsets(chunk, grouped, rx, in_line, pool)
    if not (in_line == content().str.count_matches(rx).to_numpy()).all():
        return None  # a header names a session id: only matches in the content count
    return sess

def _ids_at_offsets(chunk: LineChunk, grouped: DistinctLines, rx: str, in_line: np.ndarray,
                    pool: Executor | None) -> pl.DataFrame | None:
    """:func:`_at_offsets` given ``in_line``, the number of matches in each distinct line."""
    arr = chunk.array
    uniq, codes = grouped.lines, grouped.codes
    # Offsets and counts fit in 32 bits below 2 GiB: half the memory (each chunk-sized array is
    # fresh memory, whose page faults cost about as much as the arithmetic).
    ix = np.int32 if len(arr) < 2**31 - 1 else np.int64  # (lines and matches are fewer than bytes)
    counts = in_line.astype(ix)[codes]
    total = int(counts.sum(dtype=np.int64))
    if total == 0:
        return pl.DataFrame({"line": np.zeros(0, dtype=np.int64), "sid": pl.Series([], dtype=pl.String)})
    # Matches in the distinct lines (Python's bytes regex over their join; few of them).
    blob = uniq.str.join("\n").item().encode()
    ulen = uniq.str.len_bytes().to_numpy().astype(np.int64)
    ustart = np.zeros(len(ulen), dtype=np.int64)
    np.cumsum(ulen[:-1] + 1, out=ustart[1:])
    spans = np.array([m.span() for m in re.finditer(rx.encode(), blob)], dtype=np.int64).reshape(-1, 2)
    k = np.searchsorted(ustart, spans[:, 0], side="right") - 1
    if (len(spans) != int(in_line.sum()) or (np.bincount(k, minlength=len(uniq)) != in_line).any()
            or (spans[:, 1] > ustart[k] + ulen[k]).any()):
        return None  # the bytes regex and polars' disagree (e.g. non-ASCII digits)
    found = uniq.str.extract_all(rx).explode().drop_nulls()
    if found.to_list() != [blob[a:b].decode() for a, b in spans.tolist()]:
        return None  # same counts, other texts (a non-ASCII digit next to an ASCII one)
    rel, mlen = spans[:, 0] - ustart[k], spans[:, 1] - spans[:, 0]
    if int(mlen.max()) > _MAX_SESSION_ID_BYTES:
        return None
    rel, mlen = rel.astype(ix), mlen.astype(ix)
    blob_arr = np.frombuffer(blob, dtype=np.uint8)
    ptr = np.zeros(len(in_line) + 1, dtype=ix)
    np.cumsum(in_line, out=ptr[1:])
    if rx == HDFS_SESSION_REGEX and grouped.starts is not None and linescan.available():
        # The C scanner reads every HDFS block id of every line as an integer, in one pass, at the
        # exact line starts it found; "-" (byte 4 of a match) is in the distinct line.
        negative = blob_arr[spans[:, 0] + 4] == ord("-")
        found = linescan.block_keys(arr, grouped.starts, codes, ptr, rel + 4 + negative,
                                    mlen - 4 - negative, negative)
        if found is not None:
            return pl.DataFrame({"line": found[0], "sid": found[1]})
    # Match j of raw line i is match ptr[codes[i]] + j of the distinct lines. (Built from
    # per-line arrays, in place where possible.)
    shift = ptr[codes]
    ends = np.cumsum(counts, dtype=ix)
    shift -= ends
    shift += counts  # ptr[codes[i]] - (index of the first match of raw line i)
    del ends
    m = np.repeat(shift, counts)
    del shift
    m += np.arange(total, dtype=ix)
    # Each raw line has the length of its distinct line (so the offsets carry over; a line end
    # "\r\n" counts as "\n"), and each id starts with its match's first bytes.
    want = ulen[codes]
    # (The C scanner's starts are exact: its distinct lines are the raw lines, digits aside.)
    starts = grouped.starts if grouped.starts is not None else _starts_from_lengths(arr, want)
    if starts is None:  # e.g. "\r\n" line ends: find the line ends in the raw bytes
        starts = chunk.line_starts()
        raw_len = np.empty(len(starts), dtype=np.int64)
        raw_len[:-1] = starts[1:] - 1 - starts[:-1]
        raw_len[-1:] = len(arr) - 1 - starts[-1:]
        if not (raw_len == want).all():
            cr = raw_len == want + 1
            cr[cr] = arr[starts[cr] + want[cr]] == 13
            if not ((raw_len == want) | cr).all():
                return None
    del want
    id_start = np.repeat(starts.astype(ix, copy=False), counts)
    del starts
    id_start += rel[m]
    # Spot check: each id starts with its match's first byte.
    if not (arr[id_start] == blob_arr[spans[:, 0]][m]).all():
        return None
    keys = None
    if rx == HDFS_SESSION_REGEX:  # HDFS block ids as integers; "-" (byte 4) is in the distinct line
        keys = _block_id_keys(arr, id_start, mlen[m], (blob_arr[spans[:, 0] + 4] == ord("-"))[m], pool)
    line = np.repeat(np.arange(len(counts), dtype=ix), counts)
    most = int(counts.max())
    if keys is not None and most <= _MAX_NUMPY_REPEATS:
        # A line naming the same id twice joins that session once: matches of a line are
        # consecutive, so a repeat has its first occurrence at most most - 1 places before it.
        repeat = np.zeros(len(line), dtype=bool)
        for k in range(1, most):
            repeat[k:] |= (line[k:] == line[:-k]) & (keys[k:] == keys[:-k])
        if repeat.any():
            line, keys = line[~repeat], keys[~repeat]
        return pl.DataFrame({"line": line, "sid": keys})
    if keys is not None:
        sess = pl.DataFrame({"line": line, "sid": keys})
    else:
        # The ids are ASCII: the regex is bytes-only and its matches are ASCII in the distinct
        # lines, and digit normalisation changes digits only.
        rows = _fixed_rows(arr, id_start, int(mlen.max()))
        sess = pl.DataFrame({"line": line, "sid": _binary_rows(rows, mlen[m]).cast(pl.String)})
    multi = counts[line] >= 2
    if multi.any():  # a line naming the same id twice joins that session once
        keep = np.ones(len(line), dtype=bool)
        sub = sess.filter(pl.Series(multi))
        keep[np.flatnonzero(multi)] = sub.select(pl.struct("line", "sid").is_first_distinct()).to_series().to_numpy()
        sess = sess.filter(pl.Series(keep))
    return sess
