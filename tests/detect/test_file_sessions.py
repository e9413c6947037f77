"""`detect` on runs prepared with `--session-by file|dir`, and long sessions read whole: a stand-in model
reads windows of ``max_messages`` lines (the `logllm.scoring` rule) and is anomalous iff a window holds
the alert, so results are exact without training."""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from logllm.data.dataset import PreparedData
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.detect import Detector
from logllm.detect.preprocess import preprocessor_from_manifest
from logllm.detect.sequencers import FileSessionSequencer, StreamLine
from logllm.follow import LineReader
from logllm.scoring import WindowPlan, best_windows

FORMAT = r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>"
ALERT = "Failed to renew lease for 30 seconds"
KEY = "renew lease"  # what survives masking


class WindowedStandIn:
    """Reads windows of ``max_messages`` messages as LogLLM does (`WindowPlan`, `best_windows`); a window
    is anomalous (log-odds +8) iff it holds the alert, else -8. Records the longest window it read."""

    def __init__(self, max_messages: int = 128, long_stride: int | None = None):
        self.config = types.SimpleNamespace(max_messages=max_messages, long_stride=long_stride)
        self.longest = 0

    def answer_logits(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], batch_size: int = 64):
        windows, owner = WindowPlan.of(self).expand(sequences)
        self.longest = max([self.longest, *map(len, windows)])
        d = np.array([8.0 if any(KEY in texts[i] for i in w) else -8.0 for w in windows])
        best = best_windows(d, owner, len(sequences)) if len(windows) else np.zeros(0, dtype=np.int64)
        d = torch.tensor(d[best])
        return torch.stack([torch.zeros_like(d), d], dim=1)

    def score(self, texts, sequences, batch_size=64) -> np.ndarray:
        return torch.softmax(self.answer_logits(texts, sequences), -1)[:, 1].double().numpy()


def line(i: int, text: str, level: str = "INFO") -> str:
    return f"2015-10-17 15:37:{i % 60:02d},{100 + i} {level} [main] org.apache.hadoop.mapred.MapTask: {text}\n"


def tree(root: Path, apps: dict[str, int], lines: int = 4) -> Path:
    """One folder per application, two container logs each (the second written first); apps with 1 hold
    the alert as the last line of their second container."""
    for app, bad in apps.items():
        (root / app).mkdir(parents=True)
        for c in (2, 1):
            body = [line(i, f"task {i} of container {c} in {app}") for i in range(lines)]
            if bad and c == 2:
                body.append(line(99, ALERT, "WARN"))
            (root / app / f"container_{app}_{c:06d}.log").write_text("".join(body))
    return root


def prepared_sequences(out: Path) -> tuple[dict, dict[str, list[tuple[str, int, str]]]]:
    data = PreparedData(out)
    inputs = [i["path"] for i in data.manifest["inputs"]]
    seqs = {}
    for split in ("train", "val", "test"):
        if not data.has_split(split):
            continue
        t = data.split(split)
        for sid, files, nums, ids in zip(t["sequence_id"], t["file_index"], t["line_numbers"], t["message_ids"]):
            seqs[sid] = [(inputs[f], int(n), data.messages[m]) for f, n, m in zip(files, nums, ids)]
    return data.manifest, seqs


def detected_sequences(manifest: dict, files: list[str], model=None, **kwargs) -> tuple[dict, list]:
    """Every detection with all its lines (explain all, every line listed) as (source, line, message)."""
    pre, policy = preprocessor_from_manifest(manifest)
    model = model or WindowedStandIn()
    det = Detector(model, pre, policy, 0.5, explain="all", explain_repeats=True, top_k=10**6, **kwargs)
    dets = list(det.run(LineReader(files)))
    got = {d.sequence_id: sorted((t["source"], t["line"], t["message"]) for t in d.top) for d in dets}
    return got, dets


@pytest.mark.parametrize("window", [None, 3])
def test_detect_rebuilds_folder_sessions_as_prepare_made_them(tmp_path: Path, window: int | None) -> None:
    root = tree(tmp_path / "Hadoop", {"app_0001": 0, "app_0002": 1, "app_0003": 0})
    out = tmp_path / "out"
    prepare(PrepareOptions(family="custom", inputs=(str(root),), format=FORMAT, session_by="dir", window=window,
                           split="chronological", train_ratio=0.5), out)
    manifest, expected = prepared_sequences(out)
    files = [i["path"] for i in manifest["inputs"]]  # in prepare's read order
    got, dets = detected_sequences(manifest, files)
    assert got == {sid: sorted(lines) for sid, lines in expected.items()}
    if window is None:
        assert sorted(got) == ["app_0001", "app_0002", "app_0003"]
        # Each folder is scored when the lines move on to the next one, not only at the end.
        assert [d.reason for d in dets] == ["end"] * 3
        assert [(d.sequence_id, d.anomalous, d.source) for d in dets] == [
            ("app_0001", False, str(root / "app_0001")), ("app_0002", True, str(root / "app_0002")),
            ("app_0003", False, str(root / "app_0003"))]
    else:
        assert "app_0002#w000002" in got and len(got["app_0002#w000002"]) == 3  # 9 lines: 3 windows


def test_detect_rebuilds_file_sessions_by_file_name(tmp_path: Path) -> None:
    root = tree(tmp_path / "logs", {"a": 0, "b": 1})
    files = sorted(str(p) for p in root.rglob("*.log"))
    out = tmp_path / "out"
    prepare(PrepareOptions(family="custom", inputs=tuple(files), format=FORMAT, session_by="file",
                           train_ratio=0.5), out)
    manifest, expected = prepared_sequences(out)
    got, dets = detected_sequences(manifest, files)
    assert got == {sid: sorted(lines) for sid, lines in expected.items()}
    assert {d.sequence_id for d in dets if d.anomalous} == {"container_b_000002.log"}


def test_a_4000_line_session_is_read_whole_and_explained_at_line_3000(tmp_path: Path) -> None:
    """The issue's check: one file of 4,000 lines whose only anomalous line is line 3,000; the model reads
    128 lines at a time, yet the session is flagged and its explanation points at line 3,000."""
    log = tmp_path / "app" / "big.log"
    log.parent.mkdir()
    log.write_text("".join(line(i, ALERT, "WARN") if i == 3000 else line(i, f"task {i % 17} done")
                           for i in range(1, 4001)))
    out = tmp_path / "out"
    prepare(PrepareOptions(family="custom", inputs=(str(log),), format=FORMAT, session_by="file",
                           train_ratio=0.5), out)
    run = tmp_path / "run"
    run.mkdir()
    (run / "data_manifest.json").write_text(json.dumps(PreparedData(out).manifest))
    model = WindowedStandIn()
    det = Detector.from_run(run, threshold=0.5, model=model, top_k=3)
    [d] = list(det.run(LineReader([str(log)])))
    assert (d.sequence_id, d.lines, d.first_line, d.last_line, d.anomalous) == ("big.log", 4000, 1, 4000, True)
    assert d.top[0]["line"] == 3000 and d.top[0]["source"] == str(log) and ALERT in d.top[0]["text"]
    assert d.top[0]["contribution"] > 0.99 and all(t["contribution"] <= 1e-9 for t in d.top[1:])
    assert model.longest == 128  # never more than max_messages lines at once
    # A stride of 64: overlapping windows, the same flag and explanation.
    det = Detector.from_run(run, threshold=0.5, model=WindowedStandIn(long_stride=64), top_k=1)
    [d] = list(det.run(LineReader([str(log)])))
    assert d.anomalous and d.top[0]["line"] == 3000


def _stream(source: str, n: int, start: int = 1) -> list[StreamLine]:
    return [StreamLine(source, i, f"raw {i}", f"m {i}") for i in range(start, start + n)]


def test_file_sessions_close_on_switch_idle_rotation_and_max_lines(caplog) -> None:
    seq = FileSessionSequencer("dir")
    out = [s for ln in _stream("r/a/1.log", 3) + _stream("r/a/2.log", 2) for s in seq.add(ln)]
    assert out == []  # files of one folder join its session
    out = seq.add(_stream("r/b/1.log", 1)[0])
    assert [(s.sequence_id, s.source, len(s.lines), s.reason) for s in out] == [("a", "r/a", 5, "end")]
    assert [(s.sequence_id, len(s.lines)) for s in seq.flush()] == [("b", 1)]
    # Following (a timeout): files that grow together stay open until idle; a folder read again is a#2.
    seq = FileSessionSequencer("dir", timeout=10)
    for ln in _stream("r/a/1.log", 2):
        seq.add(ln, wall=0.0)
    seq.add(_stream("r/b/1.log", 1)[0], wall=5.0)
    assert seq.expire(None, 9.0) == []
    assert [s.sequence_id for s in seq.expire(None, 12.0)] == ["a"]
    seq.add(_stream("r/a/1.log", 1, start=3)[0], wall=13.0)
    assert [s.sequence_id for s in seq.flush()] == ["b", "a#2"]
    # A rotated file (line numbers go back) starts a new session; max_lines scores a session in parts.
    seq = FileSessionSequencer("file", max_lines=4)
    done = [s for ln in _stream("x/f.log", 3) + _stream("x/f.log", 5) for s in seq.add(ln)]
    assert [(s.sequence_id, len(s.lines), s.reason) for s in done] == [("f.log", 3, "rotated"), ("f.log#2", 4, "max_lines")]
    assert seq.cut == 1 and "reached 4 lines" in caplog.text


def test_detect_overrides_on_a_folder_run(tmp_path: Path) -> None:
    root = tree(tmp_path / "Hadoop", {"app_0001": 0, "app_0002": 1})
    out = tmp_path / "out"
    prepare(PrepareOptions(family="custom", inputs=(str(root),), format=FORMAT, session_by="dir", train_ratio=0.5,
                           labels=None), out)
    manifest = PreparedData(out).manifest
    _, policy = preprocessor_from_manifest(manifest, {"window": 4})
    assert (policy.kind, policy.session_by, policy.window, policy.step) == ("files", "dir", 4, 4)
    _, policy = preprocessor_from_manifest(manifest, {"session_regex": "task [0-9]+"})
    assert policy.kind == "session"
