"""`logllm detect` on a live pipe, options after the run, and the model's input checks and caches,
with a tiny real run (`stream_run` in conftest.py)."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading

import pytest

from logllm.cli import main
from logllm.errors import DataError

TIMEOUT = 60.0  # generous functional waits; the issue's own check is "within 2 s" / "within 1 s"


def _lines_of(stream) -> queue.Queue:
    """Lines of a subprocess pipe, read in a daemon thread (None at its end)."""
    out: queue.Queue = queue.Queue()

    def work() -> None:
        for line in stream:
            out.put(line)
        out.put(None)

    threading.Thread(target=work, daemon=True).start()
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_detect_streams_a_pipe_that_stays_open_and_stops_on_a_signal(stream_run, sig):
    """The lines of one window go in, the pipe stays open: the window's detection comes out. Then a
    signal, while detect waits on the silent pipe, ends it with the summary and exit code 0."""
    lines = stream_run["log"].read_text().splitlines()
    proc = subprocess.Popen([sys.executable, "-m", "logllm", "-q", "detect", str(stream_run["run"]), "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        out = _lines_of(proc.stdout)
        proc.stdin.write("\n".join(lines[:20]) + "\n")  # the run's windows hold 20 lines
        proc.stdin.flush()
        first = out.get(timeout=TIMEOUT)
        assert first is not None, proc.stderr.read() if proc.stderr else ""
        d = json.loads(first)
        assert (d["source"], d["first_line"], d["last_line"], d["reason"]) == ("<stdin>", 1, 20, "full")
        proc.stdin.write(lines[20] + "\n")  # one more line, then silence (the pipe stays open)
        proc.stdin.flush()
        proc.send_signal(sig)
        assert proc.wait(timeout=TIMEOUT) == 0
        rest = []
        while (line := out.get(timeout=TIMEOUT)) is not None:
            rest.append(json.loads(line))
        # The open window (line 21) is scored at the stop, as at the end of input.
        assert [(r["first_line"], r["last_line"], r["reason"]) for r in rest] == [(21, 21, "end")]
        err = proc.stderr.read() if proc.stderr else ""
        assert "21 lines read" in err and "2 sequences scored" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
        proc.wait(timeout=TIMEOUT)


def test_options_after_the_run_and_between_files(stream_run, tmp_path, capsys):
    run, log = str(stream_run["run"]), stream_run["log"]
    second = tmp_path / "b.log"
    second.write_text(log.read_text())
    out = tmp_path / "det.jsonl"
    assert main(["-q", "detect", run, "--window", "50", str(log), "--out", str(out), str(second),
                 "--explain", "none"]) == 0
    dets = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(d["source"], d["first_line"], d["last_line"]) for d in dets] == [
        (str(path), a, a + 49) for path in (log, second) for a in range(1, 200, 50)]
    capsys.readouterr()


def test_score_rejects_a_string_and_empty_sequences(stream_run):
    from logllm.model.logllm import LogLLM

    model = LogLLM.from_pretrained(stream_run["run"])
    with pytest.raises(TypeError, match="not one string"):
        model.score("disk failure on <*>")
    with pytest.raises(TypeError, match="sequence 1 is a string"):
        model.score([["a <*>"], "disk failure"])
    with pytest.raises(DataError, match="sequence 1 is empty"):
        model.score([["a <*>"], []])
    with pytest.raises(DataError, match="sequence 0 is empty"):
        model.score(["a <*>"], [[]])
    assert model.score([["a <*>", "disk failure on <*>"]]).shape == (1,)


def test_follow_keeps_the_tokenizer_cache_bounded(stream_run):
    """The detector's cap on cached message vectors bounds the model's tokenizer cache too."""
    from logllm.detect import Detector, ParsedBatch, SequencePolicy
    from logllm.follow import RawLine
    from logllm.model.logllm import LogLLM

    class AsIs:  # each line is its own message
        def parse(self, lines):
            return ParsedBatch(list(lines), [None] * len(lines))

        def mask(self, contents):
            return contents

    model = LogLLM.from_pretrained(stream_run["run"])
    det = Detector(model, AsIs(), SequencePolicy("window", window=4), 0.5, explain="none", max_cached_texts=8)
    words = "job disk session user root kernel file open".split()
    texts = [f"{a} {b} {c}" for a in words for b in words for c in words[:2]]  # 128 distinct messages
    det.feed([RawLine("f", i + 1, t.encode()) for i, t in enumerate(texts)])
    assert det.stats.sequences_scored == 32
    assert len(model._tokens) <= 8
