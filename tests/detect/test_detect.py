from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from logllm.data.windows import window_starts
from logllm.detect import (
    SequencePolicy,
    SessionSequencer,
    StreamLine,
    WindowSequencer,
)
from logllm.errors import ConfigError
from logllm.explain import ScoreCache, leave_one_out, log_odds_fn, top_k
from logllm.follow import LineReader, RawLine


def raw(lines: list[str | bytes], source: str = "app.log") -> list[RawLine]:
    return [RawLine(source, i + 1, x if isinstance(x, bytes) else x.encode()) for i, x in enumerate(lines)]


def log_lines(n: int, failures: dict[int, str] | None = None) -> list[str]:
    """n lines ``- <t> ...``; line numbers (1-based) in ``failures`` are alerts with that label."""
    failures = failures or {}
    out = []
    for i in range(1, n + 1):
        if i in failures:
            out.append(f"{failures[i]} {1000 + i} disk failure on sda{i % 3}")
        else:
            out.append(f"- {1000 + i} job {i} finished in {i % 7} ms")
    return out


def test_windows_flag_the_right_lines(make_detector):
    det = make_detector(SequencePolicy("window", window=100, step=100), top_k=3)
    dets = list(det.process(log_lines(250, {150: "VAPI", 240: "CPU"})))
    assert [(d.first_line, d.last_line, d.lines, d.reason) for d in dets] == [
        (1, 100, 100, "full"), (101, 200, 100, "full"), (201, 250, 50, "end")]
    assert [d.anomalous for d in dets] == [False, True, True]
    assert dets[1].top[0]["line"] == 150 and dets[1].top[0]["text"].startswith("VAPI")
    assert dets[1].top[0]["message"] == "disk failure on <*>"
    assert dets[1].top[0]["contribution"] == pytest.approx(dets[1].score - (1 - 0.999 ** 99))
    assert dets[0].top == []  # normal windows are not explained by default
    d = json.loads(dets[2].to_json())
    assert d["label"] == "anomalous" and d["sequence_id"] == "<input>:201-250" and d["threshold"] == 0.5
    assert det.stats.sequences_scored == 3 and det.stats.flagged == 2 and det.stats.lines_read == 250


def test_overlapping_and_gapped_windows():
    def windows(n, window, step):
        seq = WindowSequencer(window, step)
        out = []
        for i in range(1, n + 1):
            out += seq.add(StreamLine("f", i, str(i), "m"))
        out += seq.flush()
        return [(s.first_line, s.last_line, s.reason) for s in out]

    # The same windows as `prepare` builds (data.windows.window_starts) over the same lines.
    for n, window, step in ((10, 4, 2), (11, 4, 2), (10, 2, 4), (9, 2, 4), (7, 2, 4), (3, 5, 5), (250, 100, 100)):
        expected = [(a + 1, b, "full" if b - a == window else "end") for a, b in window_starts(0, n, window, step)]
        assert windows(n, window, step) == expected, (n, window, step)
    assert windows(10, 4, 2) == [(1, 4, "full"), (3, 6, "full"), (5, 8, "full"), (7, 10, "full")]


def test_windows_are_per_source_and_restart_after_rotation():
    seq = WindowSequencer(3)
    out = []
    for src, n in (("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("a", 1), ("a", 2)):
        out += seq.add(StreamLine(src, n, "", "m"))
    out += seq.flush()
    assert [(s.sequence_id, s.reason) for s in out] == [("a:1-3", "full"), ("b:1-2", "end"), ("a@1:1-2", "end")]


def test_sessions_timeout_multikey_and_end():
    seq = SessionSequencer(r"blk_-?\d+", timeout=10)
    out = []

    def add(t, content):
        line = StreamLine("hdfs.log", len(out_lines) + 1, content, content, float(t), seq.keys(content))
        out_lines.append(line)
        out.extend(seq.add(line, wall=0.0))

    out_lines: list[StreamLine] = []
    add(0, "open blk_1")
    add(1, "open blk_2")
    add(2, "copy blk_1 to blk_2")  # joins both sessions
    add(3, "no block here")  # no key: counted, not in any sequence
    add(5, "write blk_2")
    add(14, "close blk_2")  # 12 s after blk_1's last line (idle), 9 s after blk_2's (not)
    add(15, "reopen blk_1")  # a new session of the same key
    out += seq.flush()
    got = [(s.sequence_id, [line.line_number for line in s.lines], s.reason) for s in out]
    assert got == [("blk_1", [1, 3], "idle"), ("blk_2", [2, 3, 5, 6], "end"), ("blk_1#2", [7], "end")]
    assert seq.no_key == 1


def test_sessions_bounded_by_eviction_and_length():
    seq = SessionSequencer(r"k\d+", timeout=None, max_open=2, max_lines=3)
    out = []
    for i, key in enumerate(["k1", "k2", "k1", "k3", "k1", "k1"], start=1):
        out += seq.add(StreamLine("f", i, key, key, None, (key,)), wall=0.0)
    assert [(s.sequence_id, s.reason, len(s.lines)) for s in out] == [("k2", "evicted", 1), ("k1", "max_lines", 3)]
    assert seq.evicted == 1
    assert [s.sequence_id for s in seq.flush()] == ["k3", "k1#2"]


def test_wall_clock_timeout_closes_idle_sessions(make_detector):
    det = make_detector(SequencePolicy("session", session_pattern=r"blk_\d+", session_timeout=0.05),
                        wall_clock_timeout=True)
    assert det.feed(raw(["- 1 open blk_1"])) == []
    time.sleep(0.1)
    dets = det.tick()
    assert [(d.sequence_id, d.reason) for d in dets] == [("blk_1", "idle")]


def test_malformed_input_is_counted_and_the_stream_goes_on(make_detector):
    lines = log_lines(12, {5: "VAPI"})
    bad = [b"", b"   ", b"\x00\x01\x02\xff\xfe binary \x00junk", b"- 3 caf\xe9 au lait", b"not a log line"]
    stream = raw([*lines[:6], *bad, *lines[6:]])
    det = make_detector(SequencePolicy("window", window=4, step=4), keep_unparsed=True)
    dets = list(det.process(stream))
    s = det.stats
    # The binary line is invalid UTF-8 too; empty, blank, binary and "not a log line" do not parse.
    assert (s.lines_read, s.empty, s.binary, s.invalid_utf8, s.unparsed) == (17, 2, 1, 2, 4)
    # Kept as content (the run's on_unparsed=keep), as `prepare` keeps them: the windows are prepare's.
    assert s.lines_used == 17
    assert [(d.first_line, d.last_line) for d in dets] == [(1, 4), (5, 8), (9, 12), (13, 16), (17, 17)]
    assert dets[1].anomalous and dets[1].top[0]["line"] == 5
    # With unparsed lines skipped (counted), the windows after them hold the next good lines.
    det = make_detector(SequencePolicy("window", window=4, step=4), keep_unparsed=False)
    dets = list(det.process(stream))
    assert det.stats.unparsed_skipped == 4 and det.stats.lines_used == 13
    assert [(d.first_line, d.last_line) for d in dets] == [(1, 4), (5, 12), (13, 16), (17, 17)]
    assert [line["line"] for line in dets[1].top][:1] == [5]


def test_leave_one_out_matches_brute_force_and_dedups(fake_model):
    cache = ScoreCache(log_odds_fn(fake_model))
    seq = ["a", "a", "disk failure", "b", "a"]
    [contrib] = leave_one_out(cache, [seq], by="position")
    table = sorted(set(seq))
    ids = [table.index(t) for t in seq]
    full = fake_model.score(table, [ids])[0]
    brute = [full - fake_model.score(table, [ids[:i] + ids[i + 1:]])[0] for i in range(len(seq))]
    np.testing.assert_allclose(contrib.probability, brute, atol=1e-12)
    assert int(np.argmax(contrib.log_odds)) == 2
    # 1 base + 4 distinct variants (leaving out either of the first two "a" gives the same sequence).
    assert cache.stats["scored"] == 5
    leave_one_out(cache, [seq], by="position")
    assert cache.stats["scored"] == 5  # all from the cache the second time


def test_ranking_survives_saturated_probabilities():
    """P(anomalous) is 1.0 in float32 with or without any one alert line; the log-odds read from the
    model's answer logits still rank the alert lines first."""
    import torch

    class Saturated:
        def answer_logits(self, texts, seqs, batch_size=64):
            d = torch.tensor([sum((30.0 if "failure" in texts[i] else 1.0 for i in s), 0.0) for s in seqs])
            return torch.stack([torch.zeros_like(d), d], dim=1)

        def score(self, texts, seqs, batch_size=64):
            return torch.softmax(self.answer_logits(texts, seqs), -1)[:, 1].numpy()

    model = Saturated()
    seq = ["ok"] * 5 + ["disk failure"] + ["ok"] * 5 + ["disk failure"]
    assert ScoreCache(model).score_texts([seq])[0] == 1.0
    [c] = leave_one_out(ScoreCache(log_odds_fn(model)), [seq], by="position")
    assert [i for i, _ in top_k(c, 2)] == [5, 11]
    np.testing.assert_allclose(c.log_odds, [1.0] * 5 + [30.0] + [1.0] * 5 + [30.0])


def test_top_k_lists_distinct_messages_when_given_keys() -> None:
    """Three copies of one message rank first by contribution; with the messages as keys the top 3 are
    the best line of three different messages, in rank order, and a short list is not padded."""
    from logllm.explain import Contributions

    seq = ["fatal", "fatal", "vapi", "fatal", "ok", "mad"]
    drops = np.array([5.0, 4.0, 2.0, 4.5, 0.1, 3.0])
    c = Contributions(probability=drops / 10, log_odds=drops)
    assert [i for i, _ in top_k(c, 3)] == [0, 3, 1]
    assert [i for i, _ in top_k(c, 3, seq)] == [0, 5, 2]
    assert [i for i, _ in top_k(c, 10, seq)] == [0, 5, 2, 4]
    assert top_k(c, 3, seq)[1] == (5, pytest.approx(0.3))
    with pytest.raises(ValueError, match="keys"):
        top_k(c, 3, seq[:2])


def test_leaving_out_a_text_credits_a_burst_of_identical_alerts(fake_model):
    """Two identical alert lines: leaving out one leaves the other, so single-line leave-one-out ranks
    them no higher than normal lines; leaving out the text ranks both first, with the same drop."""
    def log_odds(texts, seqs, batch_size):  # anomalous iff any alert is present; normal lines add a little
        return np.array([30.0 * any(texts[i] == "disk failure" for i in s) + 0.1 * len(s) for s in seqs])

    seq = ["ok", "ok", "disk failure", "ok", "disk failure", "ok"]
    by_pos = leave_one_out(ScoreCache(log_odds), [seq])[0]
    np.testing.assert_allclose(by_pos.log_odds, [0.1] * 6)
    cache = ScoreCache(log_odds)
    by_text = leave_one_out(cache, [seq], by="text")[0]
    np.testing.assert_allclose(by_text.log_odds, [0.4, 0.4, 30.2, 0.4, 30.2, 0.4])
    assert [i for i, _ in top_k(by_text, 2)] == [2, 4]
    assert cache.stats["scored"] == 3  # the sequence and one variant per distinct text
    with pytest.raises(ValueError, match="by='line'"):
        leave_one_out(cache, [seq], by="line")  # type: ignore[arg-type]


def test_detector_explain_api(make_detector):
    det = make_detector(SequencePolicy("window", window=10))
    ranked = det.explain(["x <*>", "disk failure on <*>", "y"])
    assert [i for i, _ in ranked] == [1, 0, 2]  # ties keep their order
    assert ranked[0][1] == pytest.approx(det.score(["x <*>", "disk failure on <*>", "y"]) - (1 - 0.999 ** 2))
    assert len(det.explain(["a", "b"], k=1)) == 1


def test_bad_options(make_detector):
    with pytest.raises(ConfigError, match="threshold"):
        make_detector(SequencePolicy(), threshold=1.5)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        SessionSequencer("blk_(")
    with pytest.raises(ConfigError, match="session pattern"):
        make_detector(SequencePolicy("session"))


WRITER = r"""
import os, sys, time
path, n, rotate_at, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
fh = open(path, "a")
for i in range(1, n + 1):
    if i == rotate_at:
        fh.close()
        os.rename(path, path + ".1")
        fh = open(path, "a")
    label = "VAPI" if i % 37 == 0 else "-"
    fh.write(f"{label} {1000 + i} disk failure {i}\n" if label != "-" else f"- {1000 + i} job {i} done\n")
    fh.flush()
    print(f"{i} {time.time()}", flush=True)
    time.sleep(every)
fh.close()
"""


def test_follow_reports_every_window_once_across_rotation(tmp_path, make_detector):
    """A writer appends lines and rotates midway; every completed window is reported once, soon."""
    path = tmp_path / "live.log"
    path.write_text("")
    n, rotate_at, window = 230, 121, 20  # the old file holds 120 lines: 6 windows; the new one 110: 5 + 1 partial
    det = make_detector(SequencePolicy("window", window=window, step=window), wall_clock_timeout=True)
    reader = LineReader([path], follow=True, poll_interval=0.02)
    seen: list[tuple] = []
    when: dict[tuple, float] = {}

    def consume():
        for d in det.run(reader):
            key = (d.sequence_id, d.first_line, d.last_line)
            seen.append(key)
            when[key] = time.time()

    thread = threading.Thread(target=consume)
    thread.start()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(rotate_at), "0.002"],
                              stdout=subprocess.PIPE, text=True)
    written = dict(line.split() for line in writer.communicate(timeout=60)[0].splitlines())
    deadline = time.monotonic() + 30
    while len(seen) < 11 and time.monotonic() < deadline:
        time.sleep(0.02)
    reader.stop.set()
    thread.join(timeout=30)
    full = [k for k in seen if k[2] - k[1] + 1 == window]
    expected = [(f"{path}:{a}-{a + window - 1}", a, a + window - 1) for a in range(1, 120, window)]
    expected += [(f"{path}@1:{a}-{a + window - 1}", a, a + window - 1) for a in range(1, 101, window)]
    assert full == expected  # each completed window once, in order, none lost across the rotation
    assert seen[len(full):] == [(f"{path}@1:101-110", 101, 110)]  # the partial one, at stop
    # The window completes when its last line is written; it is reported well before a generous deadline.
    for key in full:
        line_in_stream = key[2] + (120 if "@1" in key[0] else 0)
        assert when[key] - float(written[str(line_in_stream)]) < 10.0


def test_cache_is_bounded(fake_model):
    cache = ScoreCache(fake_model, max_entries=10)
    cache.score_texts([[str(i)] for i in range(25)])
    assert cache.stats["evicted"] == 15
    assert len(cache._cache) == 10
    # Scores do not depend on how sequences are grouped into calls.
    a = cache.score_texts([["disk failure", str(i)] for i in range(5)])
    b = np.concatenate([ScoreCache(fake_model).score_texts([["disk failure", str(i)]]) for i in range(5)])
    np.testing.assert_allclose(a, b)
    assert list(itertools.islice(a, 1))[0] == pytest.approx(1 - 0.1 * 0.999)


def test_reading_a_file_like_the_cli(tmp_path, make_detector):
    path = Path(tmp_path / "f.log")
    path.write_text("\n".join(log_lines(30, {7: "VAPI"})) + "\n")
    det = make_detector(SequencePolicy("window", window=10), explain="all", top_k=2)
    dets = list(det.run(LineReader([path])))
    assert [d.sequence_id for d in dets] == [f"{path}:1-10", f"{path}:11-20", f"{path}:21-30"]
    # Each listed line is a different message: windows 2 and 3 hold one message (10 times) only.
    assert [len(d.top) for d in dets] == [2, 1, 1]
    assert dets[0].top[0]["line"] == 7 and dets[0].top[0]["occurrences"] == 1
    assert dets[0].top[1]["occurrences"] == 9 and dets[1].top[0]["occurrences"] == 10
    repeats = make_detector(SequencePolicy("window", window=10), explain="all", top_k=2, explain_repeats=True)
    assert [len(d.top) for d in repeats.run(LineReader([path]))] == [2, 2, 2]
