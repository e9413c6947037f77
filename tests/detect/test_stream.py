"""Streaming input for `detect`: stdin handed on as it arrives, stopping while stdin is silent,
truncation noticed by the file's first bytes, escaped control characters, options anywhere."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from pathlib import Path

import pytest

from logllm.follow import LineReader, RawLine

TIMEOUT = 60.0  # generous: these are functional waits, not timings


def _drain_in_thread(reader: LineReader) -> queue.Queue:
    """Consume ``reader.batches()`` in a daemon thread; non-empty batches (and a final None) go to a queue."""
    out: queue.Queue = queue.Queue()

    def work() -> None:
        for batch in reader.batches():
            if batch:
                out.put(batch)
        out.put(None)

    threading.Thread(target=work, daemon=True).start()
    return out


class _BinaryStdin:
    """A pipe's read end as ``sys.stdin``, with ``.buffer`` as the real stdin has."""

    def __init__(self, fd: int):
        self.buffer = open(fd, "rb")  # noqa: SIM115


def test_stdin_lines_arrive_while_the_pipe_stays_open(monkeypatch):
    read_fd, write_fd = os.pipe()
    monkeypatch.setattr(sys, "stdin", _BinaryStdin(read_fd))
    reader = LineReader(["-"])
    got = _drain_in_thread(reader)
    try:
        os.write(write_fd, b"one\ntwo\nthr")
        batch = got.get(timeout=TIMEOUT)  # the writer is still there: nothing has ended the input
        assert batch == [RawLine("<stdin>", 1, b"one"), RawLine("<stdin>", 2, b"two")]
        os.write(write_fd, b"ee\n")
        assert got.get(timeout=TIMEOUT) == [RawLine("<stdin>", 3, b"three")]
    finally:
        os.close(write_fd)
    assert got.get(timeout=TIMEOUT) is None  # the pipe closed: input ends
    sys.stdin.buffer.close()


def test_stop_ends_reading_a_silent_stdin(monkeypatch):
    """Ctrl-C / SIGTERM set ``stop``; reading must end although the pipe stays open and silent."""
    read_fd, write_fd = os.pipe()
    monkeypatch.setattr(sys, "stdin", _BinaryStdin(read_fd))
    reader = LineReader(["-"])
    got = _drain_in_thread(reader)
    try:
        os.write(write_fd, b"a\nhalf")
        assert got.get(timeout=TIMEOUT) == [RawLine("<stdin>", 1, b"a")]
        reader.stop.set()
        # The half line read before the stop is handed on (counted as unterminated), then input ends.
        assert got.get(timeout=TIMEOUT) == [RawLine("<stdin>", 2, b"half")]
        assert got.get(timeout=TIMEOUT) is None
    finally:
        os.close(write_fd)
        sys.stdin.buffer.close()
    assert reader.stats.unterminated == 1


def test_follow_notices_a_file_truncated_and_refilled_past_its_old_size(tmp_path: Path):
    """Within one poll the file is emptied and written again, longer than before: the size alone
    does not show it; its first bytes do. Every new line is read, numbered from 1."""
    path = tmp_path / "app.log"
    path.write_text("".join(f"old line {i:02d}\n" for i in range(15)))
    reader = LineReader([path], follow=True, poll_interval=0.01)
    batches = reader.batches()  # advanced by hand: nothing is read between two next() calls
    got: list[RawLine] = []
    while (batch := next(batches)) != []:
        got.extend(batch)
    assert len(got) == 15
    with open(path, "r+b") as fh:  # copytruncate, then a burst of new lines before the next poll
        fh.truncate(0)
        fh.write("".join(f"new line {i:02d}\n" for i in range(55)).encode())
    new: list[RawLine] = []
    while (batch := next(batches)) != []:
        new.extend(batch)
    assert [line.data.decode() for line in new] == [f"new line {i:02d}" for i in range(55)]
    assert [line.line_number for line in new] == list(range(1, 56))
    assert reader.stats.truncations == 1
    for i in range(3):  # appends after it are just appends
        with open(path, "ab") as fh:
            fh.write(f"more {i}\n".encode())
        more = []
        while (batch := next(batches)) != []:
            more.extend(batch)
        assert more == [RawLine(str(path), 56 + i, f"more {i}".encode())]
    assert reader.stats.truncations == 1
    reader.stop.set()
    list(batches)


# -- control characters ------------------------------------------------------------------------------

EVIL = "kernel: \x1b]0;owned\x07\x1b[2J done\r\u202e"


def test_printable_escapes_terminal_controls():
    from logllm.follow import printable

    assert printable(EVIL) == "kernel: \\x1b]0;owned\\x07\\x1b[2J done\\r\\u202e"
    assert printable("tab\tkept, newline\nescaped") == "tab\tkept, newline\\nescaped"
    assert printable("a\nb", keep_newlines=True) == "a\nb"
    assert printable("ünïcode ok") == "ünïcode ok"


def test_table_output_escapes_control_characters():
    from logllm.cli.detect import _table_row

    d = {"anomalous": True, "score": 0.9, "source": "x\x1b[2J.log", "first_line": 1, "last_line": 2, "lines": 2,
         "reason": "full", "top": [{"line": 2, "contribution": 0.5, "text": EVIL}]}
    text = _table_row(d)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\u202e" not in text
    assert "\\x1b]0;owned\\x07\\x1b[2J" in text and "x\\x1b[2J.log:1-2" in text


def test_log_messages_escape_control_characters():
    from logllm.cli import _PrintableFormatter

    record = logging.LogRecord("logllm.x", logging.WARNING, __file__, 1, "line %d: %s", (7, EVIL), None)
    text = _PrintableFormatter("%(levelname)s %(message)s").format(record)
    assert text == "WARNING line 7: kernel: \\x1b]0;owned\\x07\\x1b[2J done\\r\\u202e"
    assert record.getMessage().endswith("\u202e")  # the record itself is left as it was


# -- the command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["detect", "RUN", "--follow", "a.log"],
    ["detect", "RUN", "a.log", "--follow"],
    ["detect", "--follow", "RUN", "a.log"],
    ["-q", "detect", "RUN", "--window", "50", "--follow", "a.log"],
])
def test_detect_options_may_stand_anywhere(argv):
    from logllm.cli import _parse, build_parser

    args = _parse(build_parser(), argv)
    assert (args.command, args.run, args.files, args.follow) == ("detect", "RUN", ["a.log"], True)
    assert args.func.__module__ == "logllm.cli.detect"


def test_other_commands_parse_as_before():
    from logllm.cli import _parse, build_parser

    args = _parse(build_parser(), ["-v", "evaluate", "RUN", "--data", "DIR"])
    assert (args.command, args.verbose, str(args.run), str(args.data)) == ("evaluate", 1, "RUN", "DIR")
    with pytest.raises(SystemExit) as exc:
        _parse(build_parser(), ["detect", "RUN", "a.log", "--no-such-option"])
    assert exc.value.code == 2


def test_detect_follow_after_the_run_reaches_the_run(tmp_path, capsys):
    """`logllm detect RUN --follow FILE` is parsed; here it stops at the missing run folder."""
    from logllm.cli import main

    assert main(["detect", str(tmp_path), "--follow", str(tmp_path / "a.log")]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" not in err and "data_manifest.json" in err


# -- the run's options -----------------------------------------------------------------------------------

def test_training_only_options_do_not_stop_detection(caplog):
    """A run prepared with sessions and a labels file, detected with `--window 100`: the labels file
    (and the training line range) label and choose training data only; detection names and ignores them."""
    from logllm.data.options import PrepareOptions
    from logllm.detect import preprocessor_from_manifest

    options = PrepareOptions(family="custom", inputs=("app.log",), format="<Date> <Content>", labels="labels.csv",
                             session_regex=r"req-\d+", start_line=5).resolved()
    manifest = {"options": options.to_dict()}
    with caplog.at_level(logging.INFO, logger="logllm.detect"):
        pre, policy = preprocessor_from_manifest(manifest, {"window": 100})
    assert (policy.kind, policy.window, policy.step) == ("window", 100, 100)
    assert pre.options.labels is None
    assert "labels='labels.csv'" in caplog.text and "start_line=5" in caplog.text
    # The run's own sessions still work as before.
    _, policy = preprocessor_from_manifest(manifest)
    assert (policy.kind, policy.session_pattern) == ("session", r"req-\d+")


def test_threshold_is_checked_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from logllm.cli import main
    from logllm.data.options import PrepareOptions
    from logllm.detect import Detector
    from logllm.errors import ConfigError
    from logllm.model.logllm import LogLLM

    run = tmp_path / "run"
    run.mkdir()
    options = PrepareOptions(family="thunderbird", inputs=("tb.log",), window=20).resolved()
    (run / "data_manifest.json").write_text(__import__("json").dumps({"options": options.to_dict()}))

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(LogLLM, "from_pretrained", no_model)
    with pytest.raises(ConfigError, match="--threshold"):
        Detector.from_run(run, threshold=1.5)
    for bad in (["--threshold", "2"], ["--threshold", "nan"], ["--top-k", "-1"], ["--batch-size", "0"],
                ["--out", str(tmp_path)], ["--poll-interval", "0"], [str(tmp_path / "missing.log")]):
        assert main(["detect", str(run), *bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and (bad[0] in err or "no such file" in err), err
