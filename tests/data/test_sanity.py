"""`logllm prepare` with bad input and bad arguments: one clear error before any long work, nothing
dropped or leaked without a word (issue 19, items 7, 10 and 11)."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
from pathlib import Path

import polars as pl
import pytest

from logllm.cli import main
from logllm.data.dataset import PreparedData
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.errors import DataError


def hdfs_lines(n: int, blocks: int = 10) -> list[str]:
    return [f"0811{10 + i % 3:02d} 2035{i % 60:02d} {100 + i} INFO dfs.DataNode: Receiving block "
            f"blk_{1000 + i % blocks} src: /10.250.0.{i % 7}:50010 size {i * 13}" for i in range(n)]


def tb_lines(n: int, alerts: set[int] = frozenset(), first: int = 0) -> list[str]:
    return [f"{'VAPI' if i in alerts else '-'} {1131568278 + first + i} 2005.11.09 dn{i % 30} Nov 9 "
            f"12:{i // 60 % 60:02d}:{i % 60:02d} dn{i % 30}/dn{i % 30} kernel: event {i % 17} took {i * 3} ms"
            for i in range(n)]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to read and parse the logs fails the test: the error must come before."""
    from logllm.data import prepare as prepare_module

    def fail(self: object) -> None:
        raise AssertionError("the logs were read before the argument check")

    monkeypatch.setattr(prepare_module._Preparer, "run", fail)


# ---- arguments checked before any log is read ------------------------------------------------------
def test_out_that_is_a_file_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_parsing: None) -> None:
    log = write(tmp_path / "tb.log", tb_lines(50))
    taken = tmp_path / "taken.txt"
    taken.write_text("keep me\n")
    for out, says in ((taken, "is an existing file, not a folder"), (taken / "sub", "taken.txt is a file, not a folder")):
        rc = main(["prepare", "thunderbird", "--log", str(log), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and says in err and str(out) in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert taken.read_text() == "keep me\n"


def test_out_on_a_read_only_file_system_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, no_parsing: None) -> None:
    import logllm.cli.prepare as cli_prepare

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    log = write(tmp_path / "tb.log", tb_lines(50))
    monkeypatch.setattr(cli_prepare.tempfile, "mkstemp", read_only)
    rc = main(["prepare", "thunderbird", "--log", str(log), "--out", str(tmp_path / "a" / "b"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and f"--out {tmp_path / 'a' / 'b'}: cannot write in {tmp_path}" in err
    assert os.strerror(errno.EROFS) in err and "Traceback" not in err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_under_a_folder_without_write_permission(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     no_parsing: None) -> None:
    log = write(tmp_path / "tb.log", tb_lines(50))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = main(["prepare", "thunderbird", "--log", str(log), "--out", str(locked / "p"), "--no-progress"])
    finally:
        locked.chmod(0o700)
    assert rc == 2 and "cannot write in" in capsys.readouterr().err


def test_negative_seed_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str], no_parsing: None) -> None:
    log = write(tmp_path / "tb.log", tb_lines(50))
    rc = main(["prepare", "thunderbird", "--log", str(log), "--out", str(tmp_path / "p"), "--seed", "-1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--seed -1 must be 0 or a positive integer" in err and "Traceback" not in err


# ---- input sanity ---------------------------------------------------------------------------------------
def test_hdfs_log_prepared_as_bgl_stops_and_names_the_family(tmp_path: Path, scanner: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    log = write(tmp_path / "hdfs.log", hdfs_lines(400))
    # The bgl format "matches" most HDFS lines (ten whitespace-separated fields), with dates as labels.
    with pytest.raises(DataError, match=r"400 of 400 lines \(100%\) are not bgl log lines .*"
                                        r"hdfs.log:1: '081110 .*family hdfs: run `logllm prepare hdfs`"):
        prepare(PrepareOptions(family="bgl", inputs=(str(log),)), tmp_path / "p")
    rc = main(["prepare", "bgl", "--log", str(log), "--out", str(tmp_path / "p"), "--no-progress"])
    assert rc == 2 and "--on-unparsed keep" in capsys.readouterr().err and not (tmp_path / "p").exists()
    # Given explicitly, --on-unparsed keep says such lines are expected.
    rc = main(["-q", "prepare", "bgl", "--log", str(log), "--out", str(tmp_path / "p"), "--no-progress",
               "--on-unparsed", "keep"])
    out = capsys.readouterr().out
    assert rc == 0 and "lines unlike bgl logs (header fields): 400" in out
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["options"]["max_unparsed"] == 1.0


def test_real_logs_pass_the_check(tmp_path: Path, scanner: str) -> None:
    m = prepare(PrepareOptions(family="thunderbird", inputs=(str(write(tmp_path / "tb.log", tb_lines(300))),)),
                tmp_path / "tb").manifest
    assert m["unlike_lines"] == 0 and m["unparsed_lines"] == 0
    m = prepare(PrepareOptions(family="hdfs", inputs=(str(write(tmp_path / "h.log", hdfs_lines(300))),)),
                tmp_path / "h").manifest
    assert m["unlike_lines"] == 0 and m["unparsed_lines"] == 0


def test_binary_file_stops(tmp_path: Path, scanner: str) -> None:
    rng = random.Random(0)
    data = bytes(rng.randrange(256) for _ in range(40_000))
    (tmp_path / "core.bin").write_bytes(data + b"\n")
    with pytest.raises(DataError, match=r"lines \(\d+%\) are not valid UTF-8 \(first: .*core.bin:1\): "
                                        r"is the input a binary file"):
        prepare(PrepareOptions(family="bgl", inputs=(str(tmp_path / "core.bin"),)), tmp_path / "p")


def test_share_of_unparsed_lines_custom_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fmt = "<Date> <Time> <Level> <Component>: <Content>"
    good = [f"2024-01-0{i % 9 + 1} 10:00:{i % 60:02d} INFO app: request {i} served" for i in range(70)]
    bad = [f"garbage {i}" for i in range(30)]
    log = write(tmp_path / "app.log", good + bad)
    base = dict(family="custom", format=fmt, inputs=(str(log),), window=10)
    with pytest.raises(DataError, match=r"30 of 100 lines \(30%\) do not match the format .*app.log:71: "
                                        r"'garbage 0'.*--max-unparsed above 0.2"):
        prepare(PrepareOptions(**base), tmp_path / "a")  # type: ignore[arg-type]
    assert prepare(PrepareOptions(max_unparsed=0.3, **base), tmp_path / "b").manifest["unparsed_lines"] == 30  # type: ignore[arg-type]
    # skipping them is still most of a wrong log: the limit holds
    with pytest.raises(DataError, match="30 of 100 lines"):
        prepare(PrepareOptions(on_unparsed="skip", **base), tmp_path / "c")  # type: ignore[arg-type]
    rc = main(["-q", "prepare", "custom", "--format", fmt, "--log", str(log), "--window", "10", "--out",
               str(tmp_path / "d"), "--max-unparsed", "0.5", "--no-progress"])
    assert rc == 0
    # blank lines say nothing about the format: not counted
    log = write(tmp_path / "blank.log", good + [""] * 40 + bad[:10])
    assert prepare(PrepareOptions(**{**base, "inputs": (str(log),)}), tmp_path / "e").manifest["unparsed_lines"] == 50  # type: ignore[arg-type]
    rc = main(["prepare", "custom", "--format", fmt, "--log", str(log), "--out", str(tmp_path / "f"),
               "--max-unparsed", "1.5"])
    assert rc == 2 and "--max-unparsed 1.5 must be a share between 0 and 1" in capsys.readouterr().err


def test_labels_file_without_header_is_refused(tmp_path: Path) -> None:
    log = write(tmp_path / "hdfs.log", hdfs_lines(100))
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"blk_{1000 + b},{'Anomaly' if b == 3 else 'Normal'}\n" for b in range(10)))
    with pytest.raises(DataError, match=r"labels.csv:1: the first row 'blk_1000,Normal' is data, not a header.*"
                                        r"Add one as its first line, e.g. 'BlockId,Label'"):
        prepare(PrepareOptions(family="hdfs", inputs=(str(log),), labels=str(labels)), tmp_path / "p")
    labels.write_text("BlockId,Label\n" + labels.read_text())
    m = prepare(PrepareOptions(family="hdfs", inputs=(str(log),), labels=str(labels)), tmp_path / "p").manifest
    assert m["sequences"] == 10 and sum(s["anomalous"] for s in m["splits"].values()) == 1


# ---- nothing dropped or leaked without a word -------------------------------------------------------
def test_lines_without_session_are_in_the_summary_and_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             caplog: pytest.LogCaptureFixture) -> None:
    fmt = "<Date> <Time> <Level> <Component>: <Content>"
    lines = [f"2024-01-01 10:00:{i % 60:02d} INFO app: " + (f"req-{i % 5} done" if i % 10 == 0 else f"tick {i}")
             for i in range(200)]
    log = write(tmp_path / "app.log", lines)
    with caplog.at_level(logging.INFO, logger="logllm.data.prepare"):
        rc = main(["prepare", "custom", "--format", fmt, "--log", str(log), "--session-regex", r"req-\d+",
                   "--out", str(tmp_path / "p"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "180  lines in no sequence (90.00% of the input):" in out
    assert "180 name no session (--session-regex 'req-\\\\d+')" in out
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "in no sequence" in r.getMessage()]
    assert len(warned) == 1 and "180 of 200 lines (90.0%)" in warned[0].getMessage()
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["dropped_lines"] == {"no_session": 180}


def test_a_few_dropped_lines_are_a_note_not_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fmt = "<Date> <Time> <Level> <Component>: <Content>"
    lines = [f"2024-01-01 10:00:{i % 60:02d} INFO app: req-{i % 5} step {i}" for i in range(1000)]
    lines[500] = "2024-01-01 10:00:00 INFO app: no id here"
    log = write(tmp_path / "app.log", lines)
    with caplog.at_level(logging.INFO, logger="logllm.data.prepare"):
        m = prepare(PrepareOptions(family="custom", format=fmt, inputs=(str(log),), session_regex=r"req-\d+"),
                    tmp_path / "p").manifest
    assert m["dropped_lines"] == {"no_session": 1}
    notes = [r for r in caplog.records if "in no sequence" in r.getMessage()]
    assert [r.levelno for r in notes] == [logging.INFO]


def test_other_dropped_lines_are_counted(tmp_path: Path) -> None:
    log = write(tmp_path / "tb.log", tb_lines(100, alerts={5}))
    result = prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=10, step=25), tmp_path / "g")
    # train lines 0-79: windows at 0, 25, 50, 75 (35 lines); test lines 80-99: one window (10 lines)
    assert result.manifest["dropped_lines"] == {"between_windows": 55}
    assert "55 are between windows (--step 25 > --window 10)" in result.summary()
    hdfs = write(tmp_path / "hdfs.log", hdfs_lines(100))
    labels = tmp_path / "labels.csv"
    labels.write_text("BlockId,Label\n" + "".join(f"blk_{1000 + b},Normal\n" for b in range(9)))  # no blk_1009
    result = prepare(PrepareOptions(family="hdfs", inputs=(str(hdfs),), labels=str(labels), missing_labels="drop"),
                     tmp_path / "h")
    assert result.manifest["dropped_lines"] == {"missing_label": 10}
    assert "10 are in sessions without a label, dropped (--missing-labels drop)" in result.summary()


def test_label_field_never_reaches_a_message(tmp_path: Path) -> None:
    """Unparsable lines (stack traces) carry the label too; it must leave the text of every line."""
    fmt = "<Label> <Date> <Time> <Level> <Component>: <Content>"
    lines = []
    for i in range(60):
        label = "LBLBAD" if i % 20 == 7 else "LBLOK"
        if i % 6 == 5:  # a stack-trace line: it does not match the format
            lines.append(f"{label} \tat org.example.Worker.run(Worker.java:{i})")
        elif i == 2:
            lines.append(label)  # a line holding its label alone
        else:
            lines.append(f"{label} 2024-01-01 10:00:{i:02d} INFO app.Worker: job {i} finished")
    log = write(tmp_path / "app.log", lines)
    o = PrepareOptions(family="custom", format=fmt, inputs=(str(log),), label_field="Label",
                       normal_values=("LBLOK",), window=10)
    m = prepare(o, tmp_path / "p").manifest
    assert m["unparsed_lines"] == 11
    data = PreparedData(tmp_path / "p")
    assert not [t for t in data.messages if "LBL" in t]
    assert sorted(data.messages) == ["", "at org.example.Worker.run(<*>)", "job <*> finished"]
    # The label of an unparsed line is read where the label field is: the stack-trace line 47
    # ("LBLBAD \tat ...") makes window w000004 (lines 40-47) anomalous, as lines 7 and 27 (parsed) do
    # for w000000 and w000002.
    assert lines[47].startswith("LBLBAD \tat") and lines[7].startswith("LBLBAD 2024")
    windows = pl.concat([data.split(s) for s in ("train", "test")])
    assert windows.filter(pl.col("label") == 1)["sequence_id"].to_list() == ["w000000", "w000002", "w000004"]


def test_windows_never_cross_input_files(tmp_path: Path, scanner: str) -> None:
    a = write(tmp_path / "a.log", tb_lines(150))
    b = write(tmp_path / "b.log", tb_lines(150, alerts={0}, first=150))
    # chronological: train = lines 1-240 (a.log, then b.log up to its line 90), test = the rest
    for split, sizes in (("chronological", [100, 50, 90, 60]), ("random", [100, 50, 100, 50])):
        prepare(PrepareOptions(family="thunderbird", inputs=(str(a), str(b)), window=100, split=split),
                tmp_path / split)
        data = PreparedData(tmp_path / split)
        windows = pl.concat([data.split(s) for s in ("train", "test")]).sort("sequence_id")
        assert windows["file_index"].list.n_unique().max() == 1  # no window holds lines of both files
        assert windows["message_ids"].list.len().to_list() == sizes
        # a's lines never take b's first label
        firsts = windows.filter(pl.col("file_index").list.first() == 0)
        assert firsts["label"].to_list() == [0, 0]


def test_time_windows_never_cross_input_files(tmp_path: Path) -> None:
    fmt = "<Epoch> <Level> <Content>"
    a = write(tmp_path / "a.log", [f"{1200 + i} INFO tick {i}" for i in range(30)])
    b = write(tmp_path / "b.log", [f"{1200 + i} INFO tock {i}" for i in range(30)])  # the same minute
    prepare(PrepareOptions(family="custom", format=fmt, inputs=(str(a), str(b)), time_window="60s",
                           timestamp_field="Epoch", timestamp_format="epoch"), tmp_path / "t")
    windows = pl.concat([PreparedData(tmp_path / "t").split(s) for s in ("train", "test")])
    # train: lines 1-48 (a.log, then 18 lines of b.log); test: b.log's last 12 lines
    assert windows["file_index"].list.n_unique().max() == 1
    assert windows["message_ids"].list.len().to_list() == [30, 18, 12]
