"""Fixed and time windows over a line table, and sessions grouped by id.

The windowing rules live here once, for both `prepare` (whole tables) and `logllm.detect` (lines
one at a time): `window_span` / `windows_holding` / `window_count` for fixed windows,
`time_bucket` / `time_bucket_expr` for time windows.

The line table (one row per kept line, in log order) has columns ``message_id`` UInt32,
``label`` Int8 (nullable), ``file_index`` UInt16, ``line_number`` UInt64 and, for time windows,
``timestamp`` Float64. A window is anomalous if any of its lines is; normal if none is and at least
one line is labeled; unlabeled otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

SEQ_AGG = [
    pl.col("message_id").alias("message_ids"),
    pl.col("file_index"),
    pl.col("line_number").alias("line_numbers"),
    pl.col("label").max().alias("label"),
]
SEQUENCE_COLUMNS = ["sequence_id", "label", "message_ids", "file_index", "line_numbers"]


def window_span(k: int, window: int, step: int) -> tuple[int, int]:
    """Positions ``[start, end)`` of fixed window ``k`` (0-based) over a run of lines counted from 0,
    before it is cut at the end of the run (see `window_count`)."""
    start = k * step
    return start, start + window


def windows_holding(i: int, window: int, step: int) -> range:
    """The windows ``k`` whose span holds position ``i``, oldest first (none when ``i`` lies between two
    windows, ``step > window``). A window's first position is its start, so it opens there."""
    first = max(0, -(-(i - window + 1) // step))  # smallest k with k*step + window > i
    return range(first, i // step + 1)


def window_count(n: int, window: int, step: int) -> int:
    """How many windows ``n`` lines make: one starts every ``step`` lines while the start is inside the
    run, and the first window that reaches the end (possibly shorter than ``window``) is the last, so
    that with overlapping windows (step < window) no window is a subset of the one before it."""
    if n <= 0:
        return 0
    starts_inside = -(-n // step)
    first_reaching_end = max(0, -(-(n - window) // step))  # smallest k with k*step + window >= n
    return min(starts_inside, first_reaching_end + 1)


def window_starts(lo: int, hi: int, window: int, step: int) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` inside ``[lo, hi)``: every ``step`` lines, the last one possibly shorter;
    none crosses ``hi``. With overlapping windows (step < window), stops at the first that reaches hi."""
    out = []
    for k in range(window_count(hi - lo, window, step)):
        start, end = window_span(k, window, step)
        out.append((lo + start, lo + min(end, hi - lo)))
    return out


def time_bucket(timestamp: float, seconds: float) -> int:
    """The time window of a timestamp: ``floor(timestamp / seconds)`` (`time_bucket_expr` on a column)."""
    return math.floor(timestamp / seconds)


def time_bucket_expr(column: str, seconds: float) -> pl.Expr:
    """`time_bucket` of every value of ``column``, as an Int64 polars expression."""
    return (pl.col(column) / seconds).floor().cast(pl.Int64)


def cut_at(bounds: list[tuple[int, int]], cuts: np.ndarray | list[int]) -> list[tuple[int, int]]:
    """Each ``[lo, hi)`` of ``bounds`` cut at the positions of ``cuts`` inside it (e.g. where a new
    input file starts), so that no window built inside a part crosses a cut."""
    out = []
    cuts = np.asarray(cuts, dtype=np.int64)
    for lo, hi in bounds:
        inner = cuts[(cuts > lo) & (cuts < hi)].tolist()
        edges = [lo, *inner, hi]
        out += [(a, b) for a, b in zip(edges[:-1], edges[1:])]
    return out


def lines_in_windows(bounds: list[tuple[int, int]], window: int, step: int) -> int:
    """How many lines of the parts ``bounds`` the fixed windows take (less than all of them only
    when ``step > window``: the lines between two windows belong to none)."""
    if step <= window:
        return sum(hi - lo for lo, hi in bounds)
    return sum(e - s for lo, hi in bounds for s, e in window_starts(lo, hi, window, step))


def fixed_windows(lines: pl.DataFrame, bounds: list[tuple[int, int]], window: int, step: int,
                  first_index: int = 0) -> tuple[pl.DataFrame, int]:
    """Windows inside each ``[lo, hi)`` of ``bounds``; ids ``w000000``... numbered from ``first_index``."""
    spans = [w for lo, hi in bounds for w in window_starts(lo, hi, window, step)]
    if not spans:
        return _empty(), first_index
    ids = [f"w{first_index + i:06d}" for i in range(len(spans))]
    if step == window:
        # Windows tile each part: the window of a line is its offset // window (no index arrays).
        parts, base = [], 0
        for lo, hi in bounds:
            n_w = window_count(hi - lo, window, step)
            if hi > lo:
                parts.append(lines.slice(lo, hi - lo).with_columns(
                    (pl.int_range(hi - lo, dtype=pl.Int64) // window + base).alias("_w")))
            base += n_w
        out = pl.concat(parts).group_by("_w", maintain_order=True).agg(SEQ_AGG)
        out = out.with_columns(pl.Series("sequence_id", ids, dtype=pl.String)).select(SEQUENCE_COLUMNS)
        return out, first_index + len(spans)
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    lens = np.array([e - s for s, e in spans], dtype=np.int64)
    win = np.repeat(np.arange(len(spans), dtype=np.int64), lens)
    # Position of each row inside its window, then the line it takes.
    offsets = np.arange(len(win), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    take = np.repeat(starts, lens) + offsets
    rows = lines[take].with_columns(pl.Series("_w", win))
    out = rows.group_by("_w", maintain_order=True).agg(SEQ_AGG)
    out = out.with_columns(pl.Series("sequence_id", ids, dtype=pl.String)).select(SEQUENCE_COLUMNS)
    return out, first_index + len(spans)


def time_windows(lines: pl.DataFrame, bounds: list[tuple[int, int]], seconds: float,
                 first_index: int = 0) -> tuple[pl.DataFrame, int]:
    """Lines grouped by ``floor(timestamp / seconds)`` inside each ``[lo, hi)``, in order of first line."""
    frames = []
    index = first_index
    for lo, hi in bounds:
        part = lines[lo:hi]
        if not len(part):
            continue
        part = part.with_columns(time_bucket_expr("timestamp", seconds).alias("_w"))
        agg = part.group_by("_w", maintain_order=True).agg(SEQ_AGG)
        ids = [f"t{index + i:06d}" for i in range(len(agg))]
        index += len(agg)
        frames.append(agg.with_columns(pl.Series("sequence_id", ids, dtype=pl.String)).select(SEQUENCE_COLUMNS))
    return (pl.concat(frames) if frames else _empty()), index


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema={"sequence_id": pl.String, "label": pl.Int8, "message_ids": pl.List(pl.UInt32),
                                "file_index": pl.List(pl.UInt16), "line_numbers": pl.List(pl.UInt64)})
