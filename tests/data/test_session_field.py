"""`--session-field KEY`: sessions of structured lines by a record's key, in `prepare` and in `detect`."""

from __future__ import annotations

import json
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from logllm.cli import main
from logllm.data.dataset import PreparedData
from logllm.data.formats import FAMILY_FORMATS
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.detect import Detector
from logllm.errors import ConfigError, DataError
from logllm.follow import LineReader

SLICE_LINES = 4000  # (line 3,624 names its block twice)


def sessions_of(root: Path) -> dict[str, tuple[str, int | None, list[int], list[str]]]:
    """Every sequence of a prepared folder: id -> (split, label, line numbers, masked messages)."""
    data = PreparedData(root)
    out = {}
    for name in ("train", "val", "test"):
        if data.has_split(name):
            for row in data.split(name).iter_rows(named=True):
                out[row["sequence_id"]] = (name, row["label"], row["line_numbers"], data.texts(row["message_ids"]))
    return out


@pytest.fixture(scope="module")
def hdfs_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory, hdfs_as) -> dict[str, Path]:
    """The first lines of HDFS_2pct as text, and as JSON lines, logfmt and RFC 5424 syslog whose key
    ``block`` (syslog: ``sd.hdfs@32473.block``) holds the line's block id (JSON: a list where a line
    names several; left out where it names none)."""
    folder = tmp_path_factory.mktemp("hdfs_json")
    src = shared_data / "HDFS_2pct"
    with open(src / "HDFS_2pct.log") as fh:
        lines = [next(fh).rstrip("\n") for _ in range(SLICE_LINES)]
    text = folder / "hdfs.log"
    text.write_text("".join(line + "\n" for line in lines))
    out = {"text": text, "labels": src / "anomaly_label.csv"}
    for fmt, name in (("json", "hdfs.jsonl"), ("logfmt", "hdfs.logfmt"), ("syslog", "hdfs.syslog")):
        out[fmt] = folder / name
        out[fmt].write_text("".join(r + "\n" for r in hdfs_as(lines, fmt)))
    return out


def test_json_sessions_by_field_equal_the_text_sessions_by_regex(hdfs_slice: dict[str, Path], tmp_path: Path) -> None:
    labels = str(hdfs_slice["labels"])
    text = prepare(PrepareOptions(family="hdfs", inputs=(str(hdfs_slice["text"]),), labels=labels, val_ratio=0.1),
                   tmp_path / "text")
    by_field = prepare(PrepareOptions(family="hdfs", format="json", message_field="msg", session_field="block",
                                      inputs=(str(hdfs_slice["json"]),), labels=labels, val_ratio=0.1),
                       tmp_path / "json")
    custom = prepare(PrepareOptions(family="custom", format="json", message_field="msg", session_field="block",
                                    inputs=(str(hdfs_slice["json"]),), labels=labels, val_ratio=0.1),
                     tmp_path / "custom")
    expected = sessions_of(text.out)
    assert len(expected) > 100 and any(v[1] == 1 for v in expected.values())
    assert sessions_of(by_field.out) == expected  # same ids, splits, labels, lines and masked messages
    assert sessions_of(custom.out) == expected
    m = by_field.manifest
    assert m["options"]["session_field"] == "block" and m["options"]["session_regex"] is None
    assert m["lines_without_session"] == text.manifest["lines_without_session"]
    assert m["session_memberships"] == text.manifest["session_memberships"]


@pytest.mark.parametrize(("fmt", "key"), [("logfmt", "block"), ("syslog", "sd.hdfs@32473.block")])
def test_logfmt_and_syslog_sessions_by_field_equal_the_json_sessions(hdfs_slice: dict[str, Path], hdfs_as,
                                                                      tmp_path: Path, fmt: str, key: str) -> None:
    """The same HDFS lines as logfmt (``block=...``) and as RFC 5424 syslog (``[hdfs@32473 block="..."]``,
    the message in MSG) prepare to the sessions of the JSON lines: ids, splits, labels, lines, messages.
    Two lines naming no block (quotes, ``=`` and ``]`` in the message) are in no session in each."""
    lines = hdfs_slice["text"].read_text().splitlines()
    no_block = '081109 204005 35 INFO dfs.FSNamesystem: BLOCK* heartbeat: "dn=10.251.73.220:50010" [ok] x=1'
    lines[10:10] = [no_block]
    lines[2000:2000] = [no_block.replace("35", "36")]

    def prepared(name: str, **fields: str):
        path = tmp_path / f"hdfs.{name}"
        path.write_text("".join(r + "\n" for r in hdfs_as(lines, name)))
        return prepare(PrepareOptions(family="hdfs", format=name, inputs=(str(path),), val_ratio=0.1,
                                      labels=str(hdfs_slice["labels"]), **fields), tmp_path / name)

    want = prepared("json", message_field="msg", session_field="block")
    got = prepared(fmt, session_field=key, **({"message_field": "msg"} if fmt == "logfmt" else {}))
    expected = sessions_of(want.out)
    assert len(expected) > 100 and any(v[1] == 1 for v in expected.values())
    assert sessions_of(got.out) == expected
    m, w = got.manifest, want.manifest
    assert m["options"]["session_field"] == key and m["options"]["format"] == fmt
    assert m["unparsed_lines"] == w["unparsed_lines"] == 0
    assert m["lines_without_session"] == w["lines_without_session"] == 2
    assert m["lines_without_session_examples"] == [f"{tmp_path / f'hdfs.{fmt}'}:{n}" for n in (11, 2001)]
    assert m["session_memberships"] == w["session_memberships"]


def test_records_without_the_key_are_counted_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "app.jsonl"
    rows = [{"req": "r1", "msg": "open 1"}, {"req": "r2", "msg": "open 2"}, {"msg": "heartbeat 7"},
            {"req": "r1", "msg": "close 1", "lvl": "bad"}, "{not json", {"req": "", "msg": "empty key"},
            {"req": ["r2", "r3", "r2"], "msg": "move 3"}, {"req": 7, "msg": "numeric id"}]
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    labels = tmp_path / "labels.csv"
    labels.write_text("id,label\nr1,Anomaly\nr2,Normal\nr3,Normal\n7,Normal\n")
    result = prepare(PrepareOptions(family="custom", format="json", message_field="msg", session_field="req",
                                    inputs=(str(path),), labels=str(labels), train_ratio=0.5), tmp_path / "out")
    m = result.manifest
    assert m["lines_without_session"] == 3  # no key, not a record, the empty value
    assert m["lines_without_session_examples"] == [f"{path}:3", f"{path}:5", f"{path}:6"]
    assert m["dropped_lines"]["no_session"] == 3 and m["unparsed_lines"] == 1
    got = sessions_of(result.out)
    assert {k: (v[1], v[2]) for k, v in got.items()} == {
        "r1": (1, [1, 4]), "r2": (0, [2, 7]), "r3": (0, [7]), "7": (0, [8])}
    assert "3 have no session key (--session-field 'req')" in result.summary()
    assert f"first in no session: {path}:3" in result.summary()
    # Without --labels a session takes the label of its lines (--label-field): anomalous if any line is.
    path2 = tmp_path / "lab.jsonl"
    path2.write_text("".join(json.dumps({"req": r, "msg": f"m{i}", "label": lab}) + "\n"
                             for i, (r, lab) in enumerate([("a", "-"), ("b", "-"), ("a", "FAIL"), ("b", "-")])))
    got = sessions_of(prepare(PrepareOptions(family="custom", format="json", message_field="msg", session_field="req",
                                             label_field="label", inputs=(str(path2),), train_ratio=0.5),
                              tmp_path / "lab").out)
    assert {k: v[1] for k, v in got.items()} == {"a": 1, "b": 0}


def test_bad_session_field_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "app.jsonl"
    path.write_text('{"msg": "a", "req": "r1"}\n{"msg": "b"}\n')
    for key in ("", "a..b"):
        with pytest.raises(ConfigError, match="--session-field .* is not a key"):
            PrepareOptions(family="custom", format="json", session_field=key, inputs=(str(path),)).resolved()
    with pytest.raises(ConfigError, match="--session-field 'req' names a key of structured lines"):
        PrepareOptions(family="custom", session_field="req", inputs=(str(path),)).resolved()
    with pytest.raises(ConfigError, match="--session-field 'req' and --session-regex"):
        PrepareOptions(family="custom", format="json", session_field="req", session_regex="r\\d",
                       inputs=(str(path),)).resolved()
    with pytest.raises(ConfigError, match="cannot be combined with --window"):
        PrepareOptions(family="custom", format="json", session_field="req", window=5, inputs=(str(path),)).resolved()
    with pytest.raises(DataError, match=r"--session-field 'request': no record of the 2 lines has that key"):
        prepare(PrepareOptions(family="custom", format="json", message_field="msg", session_field="request",
                               inputs=(str(path),)), tmp_path / "none")
    rc = main(["prepare", "custom", "--log", str(path), "--format", "json", "--session-field", "",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--session-field '' is not a key" in err and "Traceback" not in err


class StandIn:
    """A model stand-in: every sequence normal (log-odds -8), read as windows as LogLLM reads them."""

    def __init__(self) -> None:
        self.config = types.SimpleNamespace(max_messages=128, long_stride=None)

    def answer_logits(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], batch_size: int = 64):
        d = torch.full((len(sequences),), -8.0, dtype=torch.float64)
        return torch.stack([torch.zeros_like(d), d], dim=1)

    def score(self, texts, sequences, batch_size=64) -> np.ndarray:
        return torch.softmax(self.answer_logits(texts, sequences), -1)[:, 1].numpy()


def detected(prepared_dir: Path, run: Path, log: Path, **overrides) -> tuple[dict[str, list[int]], Detector]:
    run.mkdir()
    (run / "data_manifest.json").write_text(json.dumps(PreparedData(prepared_dir).manifest))
    det = Detector.from_run(run, threshold=0.5, model=StandIn(), explain="none", overrides=overrides or None)
    out: dict[str, list[int]] = {}
    for d in det.run(LineReader([str(log)])):
        out[d.sequence_id] = [d.first_line, d.last_line, d.lines]
    return out, det


def test_detect_groups_by_the_runs_session_field(hdfs_slice: dict[str, Path], tmp_path: Path) -> None:
    text = prepare(PrepareOptions(family="hdfs", inputs=(str(hdfs_slice["text"]),)), tmp_path / "text")
    by_field = prepare(PrepareOptions(family="custom", format="json", message_field="msg", session_field="block",
                                      inputs=(str(hdfs_slice["json"]),)), tmp_path / "json")
    from_text, _ = detected(text.out, tmp_path / "run_text", hdfs_slice["text"])
    from_json, det = detected(by_field.out, tmp_path / "run_json", hdfs_slice["json"])
    assert from_json == from_text and len(from_json) > 100
    prepared_ids = set(sessions_of(by_field.out))
    assert set(from_json) == prepared_ids
    # A record without the key is counted, as a line naming no block is in a regex run.
    assert det.stats.no_session_key == by_field.manifest["lines_without_session"]
    # A text --log-format on a field-keyed run needs sessions of its own.
    with pytest.raises(ConfigError, match="the run's sessions are the records' key 'block'"):
        detected(by_field.out, tmp_path / "run_bad", hdfs_slice["text"], format=FAMILY_FORMATS["hdfs"])
