"""`logllm prepare` keeps no state between runs: the byte passes' helper thread belongs to the run
and ends with it, and ``LOGLLM_NO_C`` is read when a run asks, not when the module is imported."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from logllm.data import linescan, threads
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare


def _part_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("logllm-part")]


def test_prepare_closes_its_helper_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scanner: str) -> None:
    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", 1)  # every byte pass split over two threads
    monkeypatch.setattr(threads, "workers", lambda: 2)  # (also on a one-core machine)
    log = tmp_path / "x.log"
    log.write_text("".join(f"081109 2035{i % 60:02d} {i} INFO dfs.DataNode: Receiving blk_{i * 7919 + 1} "
                           f"src: /10.0.0.{i % 9}:500\n" for i in range(300)))
    before = _part_threads()
    prepare(PrepareOptions(family="hdfs", inputs=(str(log),)), tmp_path / "out")
    assert _part_threads() == before == []
    calls = []
    assert threads.together([lambda: calls.append(1) or 1, lambda: calls.append(2) or 2]) == [1, 2]
    assert sorted(calls) == [1, 2] and _part_threads() == []  # a call without a pool ends its thread


@pytest.mark.skipif(linescan._c is None, reason="the C line scanner is not built here")
def test_no_c_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLLM_NO_C", "1")
    assert not linescan.available() and "LOGLLM_NO_C" in (linescan.unavailable_reason() or "")
    monkeypatch.setenv("LOGLLM_NO_C", "0")
    assert linescan.available() and linescan.unavailable_reason() is None
    monkeypatch.delenv("LOGLLM_NO_C")
    assert linescan.available()
