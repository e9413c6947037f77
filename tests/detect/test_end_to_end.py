"""`prepare` -> a tiny LogLLM run -> `evaluate` and `detect` on the raw lines agree, window by window."""

from __future__ import annotations

import html as html_lib
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.cli import main


def write_log(path: Path, n: int = 400) -> None:
    """Thunderbird-format lines; every 23rd is an alert; an empty and an unparseable line near the end."""
    rows = []
    for i in range(1, n + 1):
        t = 1131568278 + i
        head = f"{t} 2005.11.09 dn{i % 7} Nov 9 12:31:{i % 60:02d} dn{i % 7}/dn{i % 7}"
        if i % 23 == 0:
            rows.append(f"VAPI {head} kernel: disk failure on sda{i % 4}")
        elif i % 3:
            rows.append(f"- {head} sshd[{1000 + i}]: session opened for user root")
        else:
            rows.append(f"- {head} crond[{2000 + i}]: job {i} finished in {i % 9} ms")
    rows[n - 30] = ""
    rows[n - 20] = "garbage"
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_encoder):
    from logllm.data.prepare import PrepareOptions, prepare
    from logllm.evaluate import evaluate
    from logllm.model.config import ModelConfig
    from logllm.model.logllm import LogLLM

    root = tmp_path_factory.mktemp("e2e")
    log = root / "tb.log"
    write_log(log)
    prepared = root / "prepared"
    prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=20, train_ratio=0.5), prepared)
    run = root / "run"
    config = ModelConfig(encoder=str(tiny_encoder), decoder="tiny-llama", decoder_layers=1, decoder_width=32,
                         decoder_heads=2, device="cpu")
    model = LogLLM.build(config, seed=0)
    model.save_pretrained(run / "model")
    from logllm.data.dataset import PreparedData

    data = PreparedData(prepared)
    test = data.sequences("test")
    # Untrained, so scores are arbitrary but deterministic; the median (no labels used) splits the windows.
    scores = model.score(data.messages, [m.tolist() for m in test.message_ids])
    (run / "threshold.json").write_text(json.dumps({"threshold": float(np.median(scores)), "source": "test-median"}))
    (run / "config.json").write_text(json.dumps({"seed": 0, "model": config.to_dict()}))
    (run / "data_manifest.json").write_text(json.dumps(data.manifest))
    (run / "train_log.jsonl").write_text("".join(json.dumps({"stage": s, "step": i, "epoch": 0, "loss": 1.0 / (i + 1),
                                                             "lr": 1e-3}) + "\n" for s in "123" for i in range(5)))
    evaluate(run, prepared, "test")
    return {"run": run, "log": log, "prepared": prepared, "data": data}


def test_detect_matches_evaluate_window_by_window(tiny_run, tmp_path, capsys):
    run, log, data = tiny_run["run"], tiny_run["log"], tiny_run["data"]
    table = data.split("test")
    first_line = int(table["line_numbers"].list.first().min())
    out = tmp_path / "det.jsonl"
    assert main(["detect", str(run), str(log), "--start-line", str(first_line), "--out", str(out),
                 "--explain", "all", "--top-k", "3"]) == 0
    err = capsys.readouterr().err
    assert "sequences scored" in err and "lines read" in err
    dets = [json.loads(line) for line in out.read_text().splitlines()]
    scores = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    expected = {
        (int(lines[0]), int(lines[-1])): (score, pred)
        for lines, score, pred in zip(table["line_numbers"].to_list(), scores["score"], scores["pred"])
    }
    got = {(d["first_line"], d["last_line"]): (d["score"], int(d["anomalous"])) for d in dets}
    assert got.keys() == expected.keys()  # the same windows, with the same line ranges
    for key, (score, pred) in expected.items():
        assert got[key][0] == pytest.approx(score, abs=1e-5)
        assert got[key][1] == pred
    assert 0 < sum(d["anomalous"] for d in dets) < len(dets)
    # Each window lists the best line of up to 3 different messages.
    distinct = {(int(lines[0]), int(lines[-1])): len(set(ids))
                for lines, ids in zip(table["line_numbers"].to_list(), table["message_ids"].to_list())}
    assert all(len(d["top"]) == min(3, distinct[(d["first_line"], d["last_line"])]) for d in dets)
    assert all(len({t["message"] for t in d["top"]}) == len(d["top"]) for d in dets)
    assert all(t["occurrences"] >= 1 for d in dets for t in d["top"])
    # The odd lines were read and counted, and the stream went on.
    assert '"empty": 1' in err and '"unparsed": 2' in err
    # Explanations from the CLI equal the Python API's.
    from logllm.detect import Detector

    det = Detector.from_run(run, explain_repeats=True)  # every line ranked, repeats included
    d0 = dets[0]
    lines = log.read_text().splitlines()[d0["first_line"] - 1 : d0["last_line"]]
    messages = det.preprocessor.mask([c for c in det.preprocessor.parse(lines).content])
    # The log-odds that explanations rank by are the model's own score, in another unit.
    from logllm.explain import log_odds_fn, sigmoid

    seqs = [m.tolist() for m in data.sequences("test").message_ids[:6]]
    np.testing.assert_allclose(sigmoid(log_odds_fn(det.model)(data.messages, seqs, 4)),
                               det.model.score(data.messages, seqs), atol=1e-5)
    ranked = dict(det.explain(messages))
    # Equal messages give near-equal contributions whose order may flip at float noise: compare values.
    for t in d0["top"]:
        assert ranked[t["line"] - d0["first_line"]] == pytest.approx(t["contribution"], abs=1e-5)
    best: dict[str, float] = {}  # the best contribution of each message
    for i, value in ranked.items():
        best[messages[i]] = max(best.get(messages[i], -np.inf), value)
    assert sorted(best.values(), reverse=True)[:3] == pytest.approx([t["contribution"] for t in d0["top"]], abs=1e-5)


def _cli(args: list[str], stdin: bytes, monkeypatch, capsys) -> tuple[str, str]:
    """Run `logllm detect` in this process with ``stdin`` as standard input; returns (stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    capsys.readouterr()
    assert main(["-q", "detect", *args]) == 0
    return capsys.readouterr()


def test_detect_stdin_table_only_anomalies_and_overrides(tiny_run, monkeypatch, capsys):
    run, log = str(tiny_run["run"]), tiny_run["log"]
    dets = [json.loads(x) for x in _cli([run, "-"], log.read_bytes(), monkeypatch, capsys)[0].splitlines()]
    assert len(dets) == 20 and {d["source"] for d in dets} == {"<stdin>"}
    flagged = [d for d in dets if d["anomalous"]]
    assert flagged
    text, err = _cli([run, "-", "--format", "table", "--only-anomalies"], log.read_bytes(), monkeypatch, capsys)
    assert text.count("ANOMALY") == len(flagged) and "normal " not in text
    assert f"<stdin>:{flagged[0]['first_line']}-{flagged[0]['last_line']}" in text
    assert "400 lines read" in err
    # A prepare option overridden for detection: windows of 50 lines instead of the run's 20.
    dets = [json.loads(x) for x in _cli([run, "--window", "50"], log.read_bytes(), monkeypatch, capsys)[0].splitlines()]
    assert [(d["first_line"], d["last_line"]) for d in dets] == [(a, a + 49) for a in range(1, 400, 50)]


def test_detect_errors_are_clear(tiny_run, tmp_path, capsys):
    run = tiny_run["run"]
    assert main(["detect", str(run), str(tmp_path / "none.log")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["detect", str(run), "--threshold", "2"]) == 2
    assert "--threshold" in capsys.readouterr().err
    assert main(["detect", str(tmp_path)]) == 2
    assert "data_manifest.json" in capsys.readouterr().err


def test_follow_cli_reports_windows_once_across_rotation(tiny_run, tmp_path):
    """`logllm detect --follow` on a file that a writer appends to and rotates midway."""
    run = tiny_run["run"]
    live = tmp_path / "live.log"
    live.write_text("")
    lines = tiny_run["log"].read_text().splitlines()[:200]
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "logllm", "-q", "detect", str(run), str(live), "--follow",
                             "--poll-interval", "0.05", "--window", "20", "--out", str(out)],
                            stderr=subprocess.PIPE, text=True)
    try:
        written_at = {}
        fh = open(live, "a")
        for i, line in enumerate(lines, start=1):
            if i == 41:  # wait until the detector reads (model loaded), or it would start after the rotation
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline and len(out.read_text().splitlines() if out.exists() else []) < 2:
                    time.sleep(0.05)
            if i == 101:  # rotate: rename away, continue in a new file at the same path
                fh.close()
                live.rename(tmp_path / "live.log.1")
                fh = open(live, "a")
            fh.write(line + "\n")
            fh.flush()
            written_at[i] = time.time()
            if i % 20 == 0:
                time.sleep(0.05)
        fh.close()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = out.read_text().splitlines() if out.exists() else []
            if len(done) >= 10:
                break
            time.sleep(0.1)
        seen_at = time.time()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    dets = [json.loads(x) for x in out.read_text().splitlines()]
    ranges = [(d["sequence_id"].split(":")[0].endswith("@1"), d["first_line"], d["last_line"]) for d in dets]
    expected = [(False, a, a + 19) for a in range(1, 100, 20)] + [(True, a, a + 19) for a in range(1, 100, 20)]
    assert ranges == expected  # every completed window once, none lost or repeated across the rotation
    assert seen_at - written_at[200] < 120  # a generous bound; the benchmark prints the real latency
    assert "10 sequences scored" in err and "lines read" in err


def test_report_on_a_real_run_scores_a_missing_split(tiny_run):
    from logllm.report import build_report

    run, prepared = tiny_run["run"], tiny_run["prepared"]
    assert not (run / "eval" / "train").exists()
    page = build_report(run, data_dir=prepared, splits=["test", "train"], out=run / "r.html").read_text()
    assert (run / "eval" / "train" / "scores.parquet").is_file()  # scored through `evaluate`
    assert page.count('src="data:image/png;base64,') == 5 * 2 + 2  # 5 per split (with the timeline)
    assert "disk failure on &lt;*&gt;" in page  # the alert message tops the association table
    # The run's own model (loaded from the run folder) explains the top flagged windows, by raw line.
    table = page[page.index('<table id="flagged-test">'):]
    table = table[: table.index("</table>")]
    rows = re.findall(r'<tr data-sequence="([^"]+)">(.*?)</tr>', table, flags=re.S)
    scores = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    threshold = json.loads((run / "threshold.json").read_text())["threshold"]
    assert {sid for sid, _ in rows} <= set(scores.filter(pl.col("score") >= threshold)["sequence_id"].to_list())
    assert all(html.count('class="topline"') == 3 for _, html in rows[:5])  # --explain-top 5, --top-lines 3
    assert "could not be loaded" not in page
    lines = tiny_run["log"].read_text().splitlines()
    shown = re.findall(r'<span class="ln">tb\.log:(\d+)</span>.*?<code>(.*?)</code>', rows[0][1], flags=re.S)
    assert shown and all(html_lib.unescape(text) == lines[int(n) - 1] for n, text in shown)


def test_hdfs_sessions_match_prepare(tmp_path, tiny_encoder, capsys):
    """Sessions by block id: `detect` over the raw log scores the same sessions, with the same
    messages, as the prepared folder holds (a line naming two blocks joins both)."""
    from logllm.data.dataset import PreparedData
    from logllm.data.prepare import PrepareOptions, prepare
    from logllm.model.config import ModelConfig
    from logllm.model.logllm import LogLLM

    rng = np.random.default_rng(0)
    rows, blocks = [], [f"blk_{'-' if i % 2 else ''}{10**9 + i * 7919}" for i in range(12)]
    for i in range(150):
        b = blocks[int(rng.integers(len(blocks)))]
        kind = int(rng.integers(4))
        text = (f"Receiving block {b} src: /10.0.0.{i % 9}:500{i % 7} dest: /10.0.0.1:50010" if kind == 0 else
                f"PacketResponder {i % 3} for block {b} terminating" if kind == 1 else
                f"Deleting block {b} file /data/{i}" if kind == 2 else
                f"BLOCK* ask 10.0.0.{i % 5}:50010 to replicate {b} to datanode(s) {blocks[(i + 1) % 12]}")
        rows.append(f"081109 2035{i % 60:02d} {100 + i} INFO dfs.DataNode$DataXceiver: {text}")
    log = tmp_path / "hdfs.log"
    log.write_text("\n".join(rows) + "\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("BlockId,Label\n" + "".join(f"{b},{'Anomaly' if i % 4 == 0 else 'Normal'}\n"
                                                  for i, b in enumerate(blocks)))
    prepared = tmp_path / "prepared"
    prepare(PrepareOptions(family="hdfs", inputs=(str(log),), labels=str(labels)), prepared)
    data = PreparedData(prepared)
    run = tmp_path / "run"
    model = LogLLM.build(ModelConfig(encoder=str(tiny_encoder), decoder="tiny-llama", decoder_layers=1,
                                     decoder_width=32, decoder_heads=2, device="cpu"), seed=0)
    model.save_pretrained(run / "model")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    (run / "data_manifest.json").write_text(json.dumps(data.manifest))
    expected = {}
    for split in ("train", "test"):
        seqs = data.sequences(split)
        scores = model.score(data.messages, [m.tolist() for m in seqs.message_ids])
        table = data.split(split)
        for sid, s, lines in zip(seqs.ids, scores, table["line_numbers"].to_list()):
            expected[sid] = (float(s), lines[0], lines[-1])
    out = tmp_path / "det.jsonl"
    assert main(["-q", "detect", str(run), str(log), "--out", str(out), "--explain", "none"]) == 0
    got = {d["sequence_id"]: (d["score"], d["first_line"], d["last_line"], d["reason"])
           for d in map(json.loads, out.read_text().splitlines())}
    assert got.keys() == expected.keys() and len(got) == 12
    for sid, (score, first, last) in expected.items():
        assert got[sid][0] == pytest.approx(score, abs=1e-5)
        assert got[sid][1:] == (first, last, "end")
    # Log-time session time-outs need timestamps: read from header fields given as overrides.
    import calendar

    from logllm.detect import preprocessor_from_manifest

    pre, policy = preprocessor_from_manifest(
        data.manifest, {"timestamp_field": "Date,Time", "timestamp_format": "%y%m%d %H%M%S"}, session_timeout=5)
    assert (policy.kind, policy.session_pattern, policy.session_timeout) == ("session", r"blk_-?\d+", 5)
    batch = pre.parse(rows[:2] + ["junk"])
    assert batch.timestamp[:2] == [calendar.timegm((2008, 11, 9, 20, 35, s, 0, 0, 0)) for s in (0, 1)]
    assert batch.timestamp[2] is None and batch.unparsed == 1
