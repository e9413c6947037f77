"""`logllm prepare` end to end: families, splits, determinism, bad input, manifest, CLI."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import polars as pl
import pytest

from logllm.cli import main
from logllm.data.dataset import PreparedData
from logllm.data.masking import mask_series
from logllm.data.options import PrepareOptions
from logllm.data.parsing import LineParser
from logllm.data.prepare import prepare
from logllm.errors import ConfigError, DataError

HDFS_FMT = "<Date> <Time> <Pid> <Level> <Component>: <Content>"


def write_hdfs(tmp: Path, blocks: int = 60, anomalous: set[int] | None = None, extra: list[str] | None = None,
               unlabeled: set[int] | None = None) -> tuple[Path, Path]:
    """A small HDFS-like log: 3-5 lines per block, interleaved; plus a labels file."""
    anomalous = {3, 7, 11} if anomalous is None else anomalous
    lines = []
    for step in range(5):
        for b in range(blocks):
            if step >= 3 + b % 3:
                continue
            bid = f"blk_{'-' if b % 2 else ''}{1000 + b * 7919}"
            msg = [f"Receiving block {bid} src: /10.250.{b % 7}.{b}:{5000 + step} dest: /10.250.0.1:50010",
                   f"BLOCK* NameSystem.addStoredBlock: blockMap updated: 10.251.{b}.9:50010 is added to {bid} size {b * 13}",
                   f"PacketResponder {step} for block {bid} terminating",
                   f"Deleting block {bid} file /mnt/hadoop/dfs/data/current/subdir{b}/{bid}",
                   f"Exception writing block {bid} to mirror 10.0.0.{b}:50010"][step]
            lines.append(f"0811{10 + step:02d} 2035{b % 60:02d} {100 + b} INFO dfs.DataNode: {msg}")
    lines += extra or []
    log = tmp / "hdfs.log"
    log.write_text("\n".join(lines) + "\n")
    labels = tmp / "labels.csv"
    rows = [f"blk_{'-' if b % 2 else ''}{1000 + b * 7919},{'Anomaly' if b in anomalous else 'Normal'}"
            for b in range(blocks) if b not in (unlabeled or set())]
    labels.write_text("BlockId,Label\n" + "\n".join(rows) + "\n")
    return log, labels


def write_windowed(tmp: Path, n: int = 1000, alerts: set[int] | None = None, name: str = "tb.log") -> Path:
    alerts = {5, 450, 905} if alerts is None else alerts
    lines = []
    for i in range(n):
        label = "VAPI" if i in alerts else "-"
        lines.append(f"{label} {1131568278 + i} 2005.11.09 dn{i % 30} Nov 9 12:{i // 60 % 60:02d}:{i % 60:02d} "
                     f"dn{i % 30}/dn{i % 30} kernel: event {i % 17} on node dn{i % 30} took {i * 3} ms")
    p = tmp / name
    p.write_text("\n".join(lines) + "\n")
    return p


def files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.parquet"))}


# ---- the sample data ------------------------------------------------------------------------------
@pytest.mark.integration
def test_hdfs_2pct_figures_determinism_and_seed(shared_data: Path, tmp_path: Path, scanner: str) -> None:
    d = shared_data / "HDFS_2pct"
    o = PrepareOptions(family="hdfs", inputs=(str(d / "HDFS_2pct.log"),), labels=str(d / "anomaly_label.csv"))
    m = prepare(o, tmp_path / "a").manifest
    assert (m["lines"], m["unparsed_lines"], m["distinct_messages"], m["sequences"]) == (222_579, 0, 32, 11_501)
    assert (m["splits"]["train"]["sequences"], m["splits"]["test"]["sequences"]) == (9200, 2301)
    assert m["splits"]["train"]["anomalous"] + m["splits"]["test"]["anomalous"] == 350
    assert m["inputs"][0]["bytes"] == 31_210_055 and len(m["inputs"][0]["sha256"]) == 64
    prepare(o, tmp_path / "b")
    assert files(tmp_path / "a") == files(tmp_path / "b")  # same seed: byte-identical
    from dataclasses import replace

    prepare(replace(o, seed=1), tmp_path / "c")
    test_a = set(pl.read_parquet(tmp_path / "a" / "test.parquet")["sequence_id"])
    test_c = set(pl.read_parquet(tmp_path / "c" / "test.parquet")["sequence_id"])
    assert len(test_c) == 2301 and test_a != test_c


@pytest.mark.integration
def test_bgl_2k_and_thunderbird_windows(shared_data: Path, tmp_path: Path, scanner: str) -> None:
    m = prepare(PrepareOptions(family="bgl", inputs=(str(shared_data / "BGL_2k" / "BGL_2k.log"),)), tmp_path / "bgl").manifest
    assert m["sequences"] == 20 and sum(s["anomalous"] for s in m["splits"].values()) == 12
    tb = shared_data / "Thunderbird"
    inputs = (str(tb / "Thunderbird_slice_20051109_10219.log"), str(tb / "Thunderbird_slice_20051115_19350.log"))
    m = prepare(PrepareOptions(family="thunderbird", inputs=inputs), tmp_path / "tb").manifest
    assert m["lines"] == 29_569
    # README: 296 windows, 95 anomalous over the whole stream. Windows cross neither the split nor the
    # boundary between the two files: 103 + 135 (train) + 60 (test).
    assert m["sequences"] == 298 and [m["splits"][s]["sequences"] for s in ("train", "test")] == [238, 60]
    assert sum(s["anomalous"] for s in m["splits"].values()) == 95


@pytest.mark.integration
def test_streaming_api_reproduces_prepared_messages(shared_data: Path, tmp_path: Path) -> None:
    log = shared_data / "BGL_2k" / "BGL_2k.log"
    prepare(PrepareOptions(family="bgl", inputs=(str(log),)), tmp_path / "p")
    data = PreparedData(tmp_path / "p")
    opts = PrepareOptions.from_dict(data.manifest["options"]).resolved()
    batch = LineParser(opts).parse(log.read_text().splitlines())
    ids = {t: i for i, t in enumerate(data.messages)}
    streamed = [ids[t] for t in mask_series(batch.content, opts.mask).to_list()]
    prepared = [i for s in ("train", "test") for i in data.split(s)["message_ids"].explode().to_list()]
    assert streamed == prepared


# ---- fast path == per-line path; chunking does not matter -------------------------------------------
def test_hdfs_fast_path_matches_custom_and_small_chunks(tmp_path: Path, scanner: str) -> None:
    log, labels = write_hdfs(tmp_path, extra=["081120 203500 9 INFO x: two blk_5 and blk_6 and blk_5 again"])
    labels.write_text(labels.read_text() + "blk_5,Normal\nblk_6,Anomaly\n")
    base = dict(inputs=(str(log),), labels=str(labels), val_ratio=0.25, seed=3)
    prepare(PrepareOptions(family="hdfs", **base), tmp_path / "fast")  # type: ignore[arg-type]
    prepare(PrepareOptions(family="custom", format=HDFS_FMT, session_regex=r"blk_-?\d+", **base),  # type: ignore[arg-type]
            tmp_path / "custom")
    prepare(PrepareOptions(family="hdfs", **base), tmp_path / "chunks", chunk_bytes=700)  # type: ignore[arg-type]
    assert files(tmp_path / "fast") == files(tmp_path / "custom") == files(tmp_path / "chunks")
    data = PreparedData(tmp_path / "fast")
    seqs = pl.concat([data.split(s) for s in ("train", "val", "test")])
    assert len(seqs) == 62 and seqs["sequence_id"].n_unique() == 62
    b5 = seqs.filter(pl.col("sequence_id") == "blk_5")
    assert b5["line_numbers"].to_list() == [[len(log.read_text().splitlines())]]  # joined once
    assert data.manifest["splits"]["val"]["sequences"] == round(int(62 * 0.8) * 0.25)


_EDGE_LINES = [f"081109 2035{i % 60:02d} {i} INFO dfs.DataNode: Receiving blk_{'-' if i % 3 else ''}{i * 7919 + 1} "
               f"src: /10.0.0.{i % 9}:500 blk_{i * 7919 + 1}" for i in range(120)]
_EDGE_LINES.append("081109 203501 7 INFO dfs.X: blk_99 twice blk_99 and blk_-0 and blk_007")


@pytest.mark.parametrize(("case", "text", "fast"), [  # fast: whether the offsets are used
    ("plain", "\n".join(_EDGE_LINES) + "\n", True),
    ("crlf", "\r\n".join(_EDGE_LINES) + "\r\n", True),
    ("no final newline", "\n".join(_EDGE_LINES) + "\n081109 203501 7 INFO dfs.X: last blk_123456", True),
    ("empty lines", "\n\n".join(_EDGE_LINES) + "\n", True),
    ("byte order mark", "\ufeff" + "\n".join(_EDGE_LINES) + "\n", True),  # the reader drops it
    ("id in a header field", "\n".join(_EDGE_LINES) + "\n081109 203501 blk_1 INFO dfs.X: hdr blk_5\n", False),
    ("non-ASCII digit after an id", "\n".join(_EDGE_LINES) + "\n081109 203501 7 INFO dfs.X: blk_12\u0661 blk_3\n", False),
])
def test_hdfs_fast_session_ids_match_per_line_regex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str,
                                                     text: str, fast: bool, scanner: str) -> None:
    """Session ids copied out of the raw bytes at the offsets found in the distinct lines equal the
    per-line regex's; where the offsets cannot be trusted the per-line way is used (same output)."""
    from logllm.data import grouping, threads

    used: list[bool] = []
    original = grouping._at_offsets

    def spy(*args: object) -> pl.DataFrame | None:
        out = original(*args)  # type: ignore[arg-type]
        used.append(out is not None)
        return out

    monkeypatch.setattr(grouping, "_at_offsets", spy)
    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", 1)  # byte passes and block ids in two threads
    log = tmp_path / "x.log"
    log.write_bytes(text.encode())
    prepare(PrepareOptions(family="hdfs", inputs=(str(log),)), tmp_path / "fast")
    assert used and all(used) == fast, case
    prepare(PrepareOptions(family="custom", format=HDFS_FMT, session_regex=r"blk_-?\d+", inputs=(str(log),)),
            tmp_path / "custom")
    prepare(PrepareOptions(family="hdfs", inputs=(str(log),)), tmp_path / "chunks", chunk_bytes=900)
    assert files(tmp_path / "fast") == files(tmp_path / "custom") == files(tmp_path / "chunks")
    ids = pl.concat([PreparedData(tmp_path / "fast").split(s) for s in ("train", "test")])["sequence_id"]
    assert {"blk_99", "blk_-0", "blk_007", "blk_-7920"} <= set(ids.to_list())


def test_byte_order_mark_is_not_part_of_the_first_line(tmp_path: Path, scanner: str) -> None:
    """A UTF-8 byte order mark starting a file (plain or gzip) is dropped: the first line's label
    token is "-" (normal), as in a file without it, and the manifest still hashes the bytes on disk."""
    plain = write_windowed(tmp_path, n=300, alerts={250})
    text = plain.read_bytes()
    marked = tmp_path / "marked.log"
    marked.write_bytes(b"\xef\xbb\xbf" + text)
    zipped = tmp_path / "marked.log.gz"
    zipped.write_bytes(gzip.compress(b"\xef\xbb\xbf" + text))
    for name, log in (("plain", plain), ("marked", marked), ("zipped", zipped)):
        m = prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=10), tmp_path / name).manifest
        assert m["unparsed_lines"] == 0 and sum(s["anomalous"] for s in m["splits"].values()) == 1, name
    assert files(tmp_path / "plain") == files(tmp_path / "marked") == files(tmp_path / "zipped")
    assert m["inputs"][0]["sha256"] == hashlib.sha256(zipped.read_bytes()).hexdigest()


def test_the_log_says_when_the_c_scanner_is_missing(tmp_path: Path, scanner: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    log = write_windowed(tmp_path, n=50)
    with caplog.at_level("INFO", logger="logllm.data.prepare"):
        prepare(PrepareOptions(family="thunderbird", inputs=(str(log),)), tmp_path / "p")
    said = [r.getMessage() for r in caplog.records if "without the C scanner" in r.getMessage()]
    assert len(said) == (scanner == "numpy"), said
    if said:
        assert "not built" in said[0] or "LOGLLM_NO_C" in said[0]


def test_windowed_fast_path_matches_custom(tmp_path: Path, scanner: str) -> None:
    log = write_windowed(tmp_path)
    with open(log, "a") as f:
        f.write("CPU broken line\n\n")
    prepare(PrepareOptions(family="thunderbird", inputs=(str(log),)), tmp_path / "fast")
    o = PrepareOptions(family="custom", inputs=(str(log),), label_rule="first_token", window=100,
                       format="<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Content>")
    prepare(o, tmp_path / "custom", chunk_bytes=5000)
    assert files(tmp_path / "fast") == files(tmp_path / "custom")


# ---- windows and splits -----------------------------------------------------------------------------
def test_chronological_windows_never_cross_the_split(tmp_path: Path) -> None:
    log = write_windowed(tmp_path, n=1000, alerts={5, 750, 905})
    m = prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), val_ratio=0.1), tmp_path / "p").manifest
    data = PreparedData(tmp_path / "p")
    spans = {s: data.split(s)["line_numbers"].to_list() for s in ("train", "val", "test")}
    # train lines 1..720, val 721..800 (end of the training part), test 801..1000
    assert [w[0] for w in spans["train"]] == list(range(1, 721, 100))
    assert spans["train"][-1] == list(range(701, 721))
    assert spans["val"] == [list(range(721, 801))]
    assert [len(w) for w in spans["test"]] == [100, 100]
    assert [m["splits"][s]["anomalous"] for s in ("train", "val", "test")] == [1, 1, 1]
    ids = [i for s in ("train", "val", "test") for i in data.split(s)["sequence_id"].to_list()]
    assert ids == [f"w{i:06d}" for i in range(11)]


def test_overlapping_windows(tmp_path: Path) -> None:
    log = write_windowed(tmp_path, n=300)
    prepare(PrepareOptions(family="spirit", inputs=(str(log),), window=100, step=50, train_ratio=0.5),
            tmp_path / "p")
    train = PreparedData(tmp_path / "p").split("train")["line_numbers"].to_list()
    assert [(w[0], w[-1]) for w in train] == [(1, 100), (51, 150)]


def test_custom_time_windows_and_line_range(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    lines = [f"2024-01-01 10:{i // 6:02d}:{(i % 6) * 10:02d} {'ERROR' if i == 40 else 'INFO'} worker {i} done"
             for i in range(120)]
    log.write_text("\n".join(lines) + "\n")
    o = PrepareOptions(family="custom", inputs=(str(log),), format="<Date> <Time> <Level> <Content>",
                       label_field="Level", normal_values=("INFO",), time_window="1m",
                       timestamp_field="Date,Time", timestamp_format="%Y-%m-%d %H:%M:%S",
                       start_line=7, end_line=114)
    m = prepare(o, tmp_path / "p").manifest
    data = PreparedData(tmp_path / "p")
    train = data.split("train")
    assert m["lines"] == 108 and train["line_numbers"][0].to_list() == list(range(7, 13))
    assert all(len(w) == 6 for w in train["line_numbers"].to_list()[:5])
    assert m["splits"]["train"]["anomalous"] == 1 and data.messages == ["worker <*> done"]


def test_custom_sessions_labelled_by_lines(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    log.write_text("".join(f"{'E' if i == 3 else 'I'} req={i % 4} step {i}\n" for i in range(40)))
    o = PrepareOptions(family="custom", inputs=(str(log),), format="<Level> <Content>", label_field="Level",
                       normal_values=("I",), session_regex=r"req=\d", train_ratio=0.5, seed=0)
    m = prepare(o, tmp_path / "p").manifest
    assert m["sequences"] == 4 and sum(s["anomalous"] for s in m["splits"].values()) == 1


def test_logllm_csv_import(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text('Content,Label\n"open 1 ;-; read 22 bytes",0\n"disk failure sda1",1\n')
    (tmp_path / "test.csv").write_text('BlockId,Content,Label\nblk_1,"open 3 ;-; close",anomalous\n')
    o = PrepareOptions(family="logllm-csv", inputs=(str(tmp_path / "train.csv"), str(tmp_path / "test.csv")),
                       csv_splits=("train", "test"))
    m = prepare(o, tmp_path / "p").manifest
    data = PreparedData(tmp_path / "p")
    assert data.messages == ["open <*>", "read <*> bytes", "disk failure <*>", "close"]
    assert data.split("train")["sequence_id"].to_list() == ["train:1", "train:2"]
    assert data.split("test").row(0) == ("blk_1", 1, [0, 3], [1, 1], [2, 2])
    assert m["splits"]["train"] == {"sequences": 2, "anomalous": 1, "unlabeled": 0, "lines": 3}
    assert m["invalid_utf8_lines"] == 0 and m["invalid_utf8_lines_examples"] == []
    (tmp_path / "bad.csv").write_text("Content,Label\nx,maybe\n")
    with pytest.raises(DataError, match=r"bad.csv:2: Label 'maybe'"):
        prepare(PrepareOptions(family="logllm-csv", inputs=(str(tmp_path / "bad.csv"), str(tmp_path / "test.csv")),
                               csv_splits=("train", "test")), tmp_path / "q")


def test_logllm_csv_invalid_utf8_is_counted(tmp_path: Path) -> None:
    """Latin-1 bytes in an imported CSV are replaced (U+FFFD) and counted with file:line, like raw logs."""
    (tmp_path / "train.csv").write_bytes(b'Content,Label\n"caf\xe9 open 1 ;-; read",0\n"fine",0\n"na\xefve \xff",1\n')
    (tmp_path / "test.csv").write_bytes(b"Content,Label\nclose,0\n")
    o = PrepareOptions(family="logllm-csv", inputs=(str(tmp_path / "train.csv"), str(tmp_path / "test.csv")),
                       csv_splits=("train", "test"))
    result = prepare(o, tmp_path / "p")
    m = result.manifest
    assert m["invalid_utf8_lines"] == 2
    assert m["invalid_utf8_lines_examples"] == [f"{tmp_path / 'train.csv'}:2", f"{tmp_path / 'train.csv'}:4"]
    assert PreparedData(tmp_path / "p").messages == ["caf\ufffd open <*>", "read", "fine", "na\ufffdve \ufffd", "close"]
    assert "lines with invalid UTF-8 (decoded with replacement): 2" in result.summary()
    assert m["inputs"][0]["sha256"] == hashlib.sha256((tmp_path / "train.csv").read_bytes()).hexdigest()


# ---- bad input ----------------------------------------------------------------------------------------
def test_format_matching_no_line(tmp_path: Path) -> None:
    log = write_windowed(tmp_path, n=20)
    with pytest.raises(DataError, match=r"tb.log: the log format '<Date> \[<Level>\] <Content>' matches none of "
                                        r"the first 20 lines; first line 1: '- 1131568278"):
        prepare(PrepareOptions(family="custom", format="<Date> [<Level>] <Content>", inputs=(str(log),)),
                tmp_path / "p")


def test_unparsed_policies(tmp_path: Path) -> None:
    log, labels = write_hdfs(tmp_path, extra=["garbage line blk_1000", "more garbage"])
    n = len(log.read_text().splitlines())
    base = dict(family="hdfs", inputs=(str(log),), labels=str(labels))
    m = prepare(PrepareOptions(**base), tmp_path / "keep").manifest  # type: ignore[arg-type]
    assert m["unparsed_lines"] == 2 and m["unparsed_examples"] == [f"{log}:{n - 1}", f"{log}:{n}"]
    assert m["lines_without_session"] == 1  # "more garbage" names no block: counted
    texts = PreparedData(tmp_path / "keep").messages
    assert "garbage line <*>" in texts  # kept as content-only, in block 1000's session
    m = prepare(PrepareOptions(on_unparsed="skip", **base), tmp_path / "skip").manifest  # type: ignore[arg-type]
    assert m["skipped_lines"] == 2 and "garbage line <*>" not in PreparedData(tmp_path / "skip").messages
    with pytest.raises(DataError, match=rf"hdfs.log:{n - 1}: line does not match .*'garbage line blk_1000'"):
        prepare(PrepareOptions(on_unparsed="fail", **base), tmp_path / "fail")  # type: ignore[arg-type]


def test_missing_labels_policies(tmp_path: Path) -> None:
    log, labels = write_hdfs(tmp_path, unlabeled={1, 2})
    base = dict(family="hdfs", inputs=(str(log),), labels=str(labels))
    with pytest.raises(DataError, match=r"2 of 60 sessions have no label \(first: blk_-8919, blk_16838\)"):
        prepare(PrepareOptions(**base), tmp_path / "a")  # type: ignore[arg-type]
    m = prepare(PrepareOptions(missing_labels="drop", **base), tmp_path / "b").manifest  # type: ignore[arg-type]
    assert m["sequences"] == 58 and m["missing_labels"]["count"] == 2
    m = prepare(PrepareOptions(missing_labels="keep", **base), tmp_path / "c").manifest  # type: ignore[arg-type]
    assert m["sequences"] == 60 and sum(s["unlabeled"] for s in m["splits"].values()) == 2
    labels.write_text("BlockId,Label\nblk_1000,Normal\nblk_-8919,Weird\n")
    with pytest.raises(DataError, match=r"labels.csv:3: label 'weird'"):
        prepare(PrepareOptions(missing_labels="keep", **base), tmp_path / "d")  # type: ignore[arg-type]


def test_invalid_utf8_and_huge_line_are_counted(tmp_path: Path, scanner: str) -> None:
    log = write_windowed(tmp_path, n=50)
    with open(log, "ab") as f:
        f.write("- 1 2005.11.09 dn1 Nov 9 12:00:00 dn1/dn1 caf\xe9 latin-1\n".encode("latin-1"))
        f.write(b"- 1 2005.11.09 dn1 Nov 9 12:00:00 dn1/dn1 " + b"abc 12 " * 1_500_000 + b"\n")
    m = prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=10), tmp_path / "p").manifest
    assert m["invalid_utf8_lines"] == 1 and m["invalid_utf8_lines_examples"] == [f"{log}:51"]
    assert m["truncated_lines"] == 1 and m["truncated_lines_examples"] == [f"{log}:52"]
    texts = PreparedData(tmp_path / "p").messages
    # the content is cut at 100,000 characters before masking ("12" -> "<*>" lengthens it a little)
    assert "caf\ufffd <*>" in texts and 100_000 < max(len(t) for t in texts) < 120_000


def test_gzip_input_and_missing_or_empty_files(tmp_path: Path, scanner: str) -> None:
    log = write_windowed(tmp_path, n=200)
    gz = tmp_path / "tb.log.gz"
    gz.write_bytes(gzip.compress(log.read_bytes()))
    prepare(PrepareOptions(family="thunderbird", inputs=(str(log),)), tmp_path / "plain")
    prepare(PrepareOptions(family="thunderbird", inputs=(str(gz),)), tmp_path / "gz")
    assert files(tmp_path / "plain") == files(tmp_path / "gz")
    with pytest.raises(DataError, match="--log .*missing.log: file not found"):
        prepare(PrepareOptions(family="bgl", inputs=(str(tmp_path / "missing.log"),)), tmp_path / "x")
    (tmp_path / "empty.log").write_text("")
    with pytest.raises(DataError, match="empty.log: file is empty"):
        prepare(PrepareOptions(family="bgl", inputs=(str(tmp_path / "empty.log"),)), tmp_path / "x")
    with pytest.raises(DataError, match="no lines in range"):
        prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), start_line=500), tmp_path / "x")
    with pytest.raises(ConfigError, match="--train-ratio"):
        prepare(PrepareOptions(family="bgl", inputs=(str(log),), train_ratio=1.0), tmp_path / "x")


# ---- manifest and CLI ----------------------------------------------------------------------------------
def test_manifest_contents(tmp_path: Path) -> None:
    log, labels = write_hdfs(tmp_path)
    m = prepare(PrepareOptions(family="hdfs", inputs=(str(log),), labels=str(labels), val_ratio=0.1),
                tmp_path / "p").manifest
    for key in ("lines", "unparsed_lines", "distinct_messages", "splits", "options", "seed", "inputs",
                "version", "versions"):
        assert key in m
    assert set(m["splits"]) == {"train", "val", "test"}
    assert m["inputs"][0]["bytes"] == log.stat().st_size and m["versions"]["polars"] == pl.__version__
    assert PrepareOptions.from_dict(m["options"]).resolved().to_dict() == m["options"]
    assert m["lines"] == sum(s["lines"] for s in m["splits"].values())


def test_cli_summary_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, labels = write_hdfs(tmp_path)
    rc = main(["-q", "prepare", "hdfs", "--log", str(log), "--labels", str(labels), "--val-ratio", "0.1",
               "--out", str(tmp_path / "p"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "train" in out and "val" in out and "distinct messages: 5" in out
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["splits"]["val"]["sequences"] == 5
    rc = main(["prepare", "bgl", "--log", str(tmp_path / "nope.log"), "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.log: file not found" in err and "Traceback" not in err
    rc = main(["prepare", "logllm-csv", "--log", str(log), "--out", str(tmp_path / "q")])
    assert rc == 2 and "logllm-csv takes --train" in capsys.readouterr().err


def test_mask_none_and_split_overrides(tmp_path: Path) -> None:
    log, labels = write_hdfs(tmp_path, blocks=20)
    prepare(PrepareOptions(family="hdfs", inputs=(str(log),), labels=str(labels), mask="none"), tmp_path / "raw")
    texts = PreparedData(tmp_path / "raw").messages
    assert any("blk_1000" in t for t in texts) and not any("<*>" in t for t in texts)
    # sessions split chronologically: train holds the first sessions in order of appearance
    prepare(PrepareOptions(family="hdfs", inputs=(str(log),), labels=str(labels), split="chronological"),
            tmp_path / "chrono")
    train = PreparedData(tmp_path / "chrono").split("train")["line_numbers"].list.first().to_list()
    assert train == sorted(train) and len(train) == 16
    # windows split at random: seeded, every window in exactly one split
    wlog = write_windowed(tmp_path, n=1000)
    a = prepare(PrepareOptions(family="bgl", inputs=(str(wlog),), split="random", seed=1,
                               format="<Label> <Content>"), tmp_path / "rand").manifest
    ids = [i for s in ("train", "test") for i in PreparedData(tmp_path / "rand").split(s)["sequence_id"].to_list()]
    assert sorted(ids) == [f"w{i:06d}" for i in range(10)] and a["splits"]["test"]["sequences"] == 2


def test_session_regex_matching_nothing_and_labels_for_windows(tmp_path: Path) -> None:
    log = write_windowed(tmp_path, n=30)
    with pytest.raises(DataError, match=r"session regex .* matches nothing in the messages of 30 lines"):
        prepare(PrepareOptions(family="custom", inputs=(str(log),), session_regex=r"req-\d+"), tmp_path / "a")
    with pytest.raises(ConfigError, match="--labels .* labels sessions"):
        prepare(PrepareOptions(family="bgl", inputs=(str(log),), labels=str(log)), tmp_path / "b")


def test_block_id_keys_match_python_int() -> None:
    """The SWAR block-id conversion equals int() on random ids of every length; a block holding an id
    that is not its integer's decimal form (leading zero, -0, beyond int64) gives None."""
    import numpy as np

    from logllm.data.grouping import _block_id_values

    rng = np.random.default_rng(0)
    good = [str(int(rng.integers(10 ** (d - 1) if d > 1 else 0, 10**d if d < 19 else 2**63 - 1, dtype=np.int64)))
            for d in rng.integers(1, 20, size=5000)]
    good = [("-" if rng.random() < 0.5 and s != "0" else "") + s for s in good]
    for bad in (None, "007", "-0", "9223372036854775808", "9999999999999999999"):
        ids = good if bad is None else [*good[:100], bad]
        prefixes = (b"blk_", b"x blk_", b" 98765432109876543210 blk_", b"\x00\xff/: blk_")
        buf, end = bytearray(b" " * 24), []
        for i, s in enumerate(ids):
            buf += prefixes[i % 4] + s.encode()
            end.append(len(buf))
            buf += b"\n"
        negative = np.array([s.startswith("-") for s in ids])
        digits = np.array([len(s) for s in ids]) - negative
        keys = _block_id_values(np.frombuffer(bytes(buf), dtype=np.uint8), np.array(end), digits, negative)
        if bad is None:
            assert keys is not None and keys.tolist() == [int(s) for s in ids]
        else:
            assert keys is None, bad
