"""Byte-array passes split over threads: numpy releases the GIL inside its loops, so two halves of a
large array (:func:`in_parts`), or two threads taking its blocks in turn (:func:`in_blocks`), are
processed at once on two cores.

The helper thread comes from the caller: ``pool`` is an executor it owns (``logllm prepare`` makes
one with :func:`part_pool` for the whole run and closes it at the end). Without one, a call that
splits its work starts a helper thread for that call only. No state is kept between calls.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from typing import TypeVar

T = TypeVar("T")

#: Arrays shorter than this are processed in the calling thread (a thread hand-off costs more).
MIN_PARALLEL_BYTES = 4 << 20


def part_pool() -> ThreadPoolExecutor:
    """The executor that the byte passes of one run share (one helper thread: there are two cores at
    most to use); the caller closes it (``with part_pool() as pool: ...``)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="logllm-part")


def workers() -> int:
    """How many threads a byte pass is split over: 2, or 1 where only one core is available."""
    return max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def in_parts(fn: Callable[[int, int], T], n: int, min_bytes: int | None = None,
             pool: Executor | None = None) -> list[T]:
    """``[fn(lo, hi) for each part]`` over ``range(n)`` cut into up to two contiguous parts, run in
    parallel when ``n >= min_bytes`` (default :data:`MIN_PARALLEL_BYTES`) and more than one core is
    available; results in part order."""
    parts = workers() if n >= (MIN_PARALLEL_BYTES if min_bytes is None else min_bytes) else 1
    cuts = [n * k // parts for k in range(parts + 1)]
    return together([partial(fn, cuts[k], cuts[k + 1]) for k in range(parts)], pool)


def together(calls: list[Callable[[], T]], pool: Executor | None = None) -> list[T]:
    """``[call() for call in calls]``: the first in the calling thread while the others run in
    ``pool`` (for work that releases the GIL; without a pool, in a helper thread started for this
    call); results in call order."""
    if len(calls) < 2:
        return [call() for call in calls]
    if pool is None:
        with part_pool() as own:
            return together(calls, own)
    others = [pool.submit(call) for call in calls[1:]]
    first = calls[0]()
    return [first, *(f.result() for f in others)]


def in_blocks(fn: Callable[[Iterator[tuple[int, int]]], T], n: int, block: int,
              min_bytes: int | None = None, pool: Executor | None = None) -> list[T]:
    """``fn(blocks)`` in up to two threads (as :func:`in_parts` decides), where ``blocks`` yields
    ``(lo, hi)`` blocks of ``range(n)`` of ``block`` items, each block to one thread only: a thread
    takes the next block when it is done with one, so when another process or thread holds up one
    of them, the other does more of the work (two fixed halves would wait for the slower one).
    Returns one result per thread, in no particular order; ``fn`` must not depend on which blocks
    it gets (each block is processed once by some thread)."""
    starts = iter(range(0, n, block))
    lock = threading.Lock()

    def blocks() -> Iterator[tuple[int, int]]:
        while True:
            with lock:
                lo = next(starts, None)
            if lo is None:
                return
            yield lo, min(lo + block, n)

    return in_parts(lambda lo, hi: fn(blocks()), n, min_bytes, pool)
