"""Structured formats (json, logfmt, syslog) and `--format auto` (logllm.data.structured, records, autodetect)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest

from logllm.cli import main
from logllm.data.autodetect import detect_format, sample_lines
from logllm.data.dataset import PreparedData
from logllm.data.formats import FAMILY_FORMATS, LOGHUB_FORMATS, LogFormat
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.data.records import StructuredParser
from logllm.data.structured import BadRecord, get_path, parse_logfmt, parse_syslog
from logllm.errors import ConfigError, DataError

BGL_FIELDS = LogFormat.parse(FAMILY_FORMATS["bgl"]).fields
SEVERITY = {"INFO": 6, "WARNING": 4, "ERROR": 3, "SEVERE": 3, "FATAL": 2, "FAILURE": 2}
SD_LABEL = "sd.bgl@32473.label"


def bgl_records(shared_data: Path) -> list[dict[str, str]]:
    """Every line of the BGL_2k sample as its format's fields (all 2,000 lines match the format)."""
    lines = (shared_data / "BGL_2k" / "BGL_2k.log").read_text().splitlines()
    fields = LogFormat.parse(FAMILY_FORMATS["bgl"]).extract(pl.Series(lines), list(BGL_FIELDS))
    assert fields.null_count().sum_horizontal().item() == 0
    return fields.to_dicts()


def logfmt_value(text: str) -> str:
    return text if text and not any(c in text for c in ' "=\\') else json.dumps(text)


def sd_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def rewrite(records: list[dict[str, str]], fmt: str) -> list[str]:
    """The BGL lines re-written as JSON lines, logfmt or RFC 5424 syslog (label and header fields kept)."""
    out = []
    for r in records:
        if fmt == "json":
            out.append(json.dumps({"label": r["Label"], "timestamp": int(r["Timestamp"]), "node": r["Node"],
                                   "time": r["Time"], "type": r["Type"], "component": r["Component"],
                                   "level": r["Level"], "message": r["Content"]}))
        elif fmt == "logfmt":
            pairs = {"label": r["Label"], "ts": r["Timestamp"], "node": r["Node"], "level": r["Level"],
                     "component": r["Component"], "msg": r["Content"]}
            out.append(" ".join(f"{k}={logfmt_value(v)}" for k, v in pairs.items()))
        else:
            day, clock = r["Time"][:10], r["Time"][11:].replace(".", ":", 2)
            pri = 8 + SEVERITY.get(r["Level"], 5)
            out.append(f"<{pri}>1 {day}T{clock}Z {r['Node']} {r['Component']} - {r['Type']} "
                       f'[bgl@32473 label="{sd_value(r["Label"])}" level="{sd_value(r["Level"])}"] {r["Content"]}')
    return out


def prepared(root: Path) -> tuple[dict, list[tuple]]:
    """The manifest and every window as (split, id, label, line numbers, masked messages)."""
    data = PreparedData(root)
    rows = []
    for name in ("train", "test"):
        for row in data.split(name).iter_rows(named=True):
            rows.append((name, row["sequence_id"], row["label"], row["line_numbers"],
                         data.texts(row["message_ids"])))
    return data.manifest, rows


@pytest.fixture(scope="module")
def bgl_variants(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bgl")
    records = bgl_records(shared_data)
    out = {"text": shared_data / "BGL_2k" / "BGL_2k.log"}
    for fmt, name in (("json", "bgl.jsonl"), ("logfmt", "bgl.logfmt"), ("syslog", "bgl.syslog")):
        out[fmt] = folder / name
        out[fmt].write_text("\n".join(rewrite(records, fmt)) + "\n")
    return out


@pytest.mark.parametrize(("fmt", "family", "label_field"), [
    ("json", "custom", "label"), ("json", "bgl", "label"), ("logfmt", "custom", "label"),
    ("syslog", "custom", SD_LABEL), ("auto", "custom", "label"), ("auto-text", "custom", "Label")])
def test_bgl_rewritten_prepares_like_the_text(bgl_variants: dict[str, Path], tmp_path: Path, fmt: str,
                                              family: str, label_field: str) -> None:
    text_manifest, expected = prepared(prepare(PrepareOptions(family="bgl", inputs=(str(bgl_variants["text"]),)),
                                               tmp_path / "text").out)
    source = bgl_variants[{"auto": "json", "auto-text": "text"}.get(fmt, fmt)]
    result = prepare(PrepareOptions(family=family, format=fmt[:4] if fmt.startswith("auto") else fmt,
                                    label_field=label_field,  # type: ignore[arg-type]
                                    inputs=(str(source),)), tmp_path / "structured")
    manifest, got = prepared(result.out)
    assert len(got) == 20 and sum(1 for r in got if r[2] == 1) == 12  # README: 20 windows, 12 anomalous
    assert got == expected
    assert manifest["unparsed_lines"] == 0 and manifest["distinct_messages"] == text_manifest["distinct_messages"]
    o = manifest["options"]
    picked = {"auto": "json", "auto-text": FAMILY_FORMATS["bgl"]}.get(fmt, fmt)
    assert o["format"] == picked and o["label_rule"] == "field"
    assert o["message_field"] == {"json": "message", "logfmt": "msg", "syslog": "message", "auto": "message"}.get(fmt)
    if fmt.startswith("auto"):
        assert manifest["format_detection"]["format"] == picked and manifest["format_detection"]["rate"] == 1.0
    else:
        assert "format_detection" not in manifest


def expected_formats() -> dict[str, str]:
    loghub = {name: text for name, (text, _) in LOGHUB_FORMATS.items()}
    return {"Android": loghub["Android"], "Apache": loghub["Apache"], "HDFS": FAMILY_FORMATS["hdfs"],
            "HPC": loghub["HPC"], "Linux": loghub["Linux"], "OpenSSH": loghub["OpenSSH"], "Spark": loghub["Spark"],
            "Thunderbird": FAMILY_FORMATS["thunderbird"], "Zookeeper": loghub["Zookeeper"]}


def test_auto_picks_the_format_of_every_sample(shared_data: Path, bgl_variants: dict[str, Path]) -> None:
    files = sorted((shared_data / "loghub_2k").glob("*_2k.log"))
    want = expected_formats()
    assert sorted(f.name.removesuffix("_2k.log") for f in files) == sorted(want)
    for path in files:
        found = detect_format(sample_lines(str(path)), where=str(path))
        assert found.format == want[path.name.removesuffix("_2k.log")], path.name
        assert found.rate >= 0.9 and found.lines == 200
    for fmt, path in bgl_variants.items():
        found = detect_format(sample_lines(str(path)))
        assert found.format == (FAMILY_FORMATS["bgl"] if fmt == "text" else fmt)
        assert found.rate == 1.0
    assert detect_format(sample_lines(str(bgl_variants["logfmt"]))).message_field == "msg"


def test_auto_refuses_under_the_floor_naming_the_best(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "mixed.log"
    lines = [json.dumps({"msg": f"request {i} served"}) for i in range(12)] + [f"free text {i}" for i in range(8)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"--format auto: no format matches 90% of the first 20 non-blank lines of "
                                        r".*mixed.log; best: json 60%; .*Pass --format"):
        prepare(PrepareOptions(family="custom", format="auto", inputs=(str(path),)), tmp_path / "p")
    path.write_text("\n".join(lines[:12] + lines[:8] + ["free text"]) + "\n")
    with caplog.at_level(logging.INFO, logger="logllm.data.autodetect"):
        m = prepare(PrepareOptions(family="custom", format="auto", window=5, inputs=(str(path),)), tmp_path / "q").manifest
    assert "picked json ('json', message key 'msg'): 95.2% of the first 21 non-blank lines" in caplog.text
    assert m["unparsed_lines"] == 1 and m["unparsed_examples"] == [f"{path}:21"]


def write_json_with_bad_lines(tmp_path: Path) -> Path:
    lines = [json.dumps({"label": "-", "message": f"job {i} done"}) for i in range(30)]
    lines[4] = '{"label": "FAIL", "message": "disk error'  # line 5: invalid JSON (cut off)
    lines[11] = "[1, 2]"  # line 12: not an object
    lines[19] = json.dumps({"label": "-", "text_": "no message key"})  # line 20
    path = tmp_path / "app.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_records_follow_on_unparsed(tmp_path: Path) -> None:
    path = write_json_with_bad_lines(tmp_path)
    base = dict(family="custom", format="json", label_field="label", window=10, inputs=(str(path),))
    m, rows = prepared(prepare(PrepareOptions(**base), tmp_path / "keep").out)  # type: ignore[arg-type]
    assert m["unparsed_lines"] == 3 and m["unparsed_examples"] == [f"{path}:5", f"{path}:12", f"{path}:20"]
    first = next(r for r in rows if r[3][0] == 1)
    assert first[2] == 1  # the label of the cut-off line 5 is read, and kept out of its text
    assert first[4][4] == '{"message": "disk error' and all("FAIL" not in t for r in rows for t in r[4])
    m, rows = prepared(prepare(PrepareOptions(on_unparsed="skip", **base), tmp_path / "skip").out)  # type: ignore[arg-type]
    assert m["skipped_lines"] == 3 and m["dropped_lines"] == {"skipped_unparsed": 3}
    assert all(n not in (5, 12, 20) for r in rows for n in r[3])
    with pytest.raises(DataError, match=r"app.jsonl:5: invalid JSON \(Unterminated string .*\): "
                                        r"'\{\"label\": \"FAIL\"" ):
        prepare(PrepareOptions(on_unparsed="fail", **base), tmp_path / "fail")  # type: ignore[arg-type]
    lines = path.read_text().splitlines()
    lines[4] = lines[11] = json.dumps({"label": "-", "message": "fine"})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"app.jsonl:20: no message key 'message' \(keys: label, text_\); "
                                        r"pass --message-field KEY"):
        prepare(PrepareOptions(on_unparsed="fail", **base), tmp_path / "fail2")  # type: ignore[arg-type]


def test_no_record_and_no_message_key_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "plain.log"
    path.write_text("just text\nmore text\n")
    with pytest.raises(DataError, match=r"none of the first 2 records of .*plain.log has a key of 'message'"):
        prepare(PrepareOptions(family="custom", format="json", inputs=(str(path),)), tmp_path / "a")
    with pytest.raises(DataError, match=r"plain.log: none of the first 2 lines is a json \(message key 'msg'\) "
                                        r"record; line 1: invalid JSON"):
        prepare(PrepareOptions(family="custom", format="json", message_field="msg", inputs=(str(path),)),
                tmp_path / "b")
    with pytest.raises(ConfigError, match=r"bgl with --format json needs --label-field KEY"):
        PrepareOptions(family="bgl", format="json", inputs=(str(path),)).resolved()
    with pytest.raises(ConfigError, match=r"--message-field 'msg' names a key of structured lines"):
        PrepareOptions(family="custom", message_field="msg", inputs=(str(path),)).resolved()


def test_json_keys_dotted_paths_level_and_time_windows(tmp_path: Path) -> None:
    rows = [{"ts": f"2024-05-01T10:0{i // 3}:{(i % 3) * 20:02d}Z", "log": {"msg": f"step {i} ok", "level": "info"},
             "k8s.pod": f"web-{i % 2}"} for i in range(12)]
    path = tmp_path / "app.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    opts = PrepareOptions(family="custom", format="json", message_field="log.msg", level_field="log.level",
                          time_window="60s", timestamp_field="ts", inputs=(str(path),), train_ratio=0.5)
    manifest, got = prepared(prepare(opts, tmp_path / "p").out)
    assert [r[3] for r in got] == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]  # one window per minute
    assert got[0][4] == ["info step <*> ok"] * 3 and manifest["bad_timestamps"] == 0
    assert get_path(rows[0], "k8s.pod") == "web-0" and get_path({"a": {"b.c": 1}}, "a.b.c") == 1
    assert get_path(rows[0], "log.nope") is None


def test_logfmt_and_syslog_records() -> None:
    r = parse_logfmt('level=info msg="said \\"hi\\" = ok" flag dur=1.5s path=/a=b')
    assert r == {"level": "info", "msg": 'said "hi" = ok', "flag": "", "dur": "1.5s", "path": "/a=b"}
    with pytest.raises(BadRecord, match="unterminated quote"):
        parse_logfmt('msg="never closed')
    r = parse_syslog('<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 '
                     '[exampleSDID@32473 iut="3" eventSource="App\\]lication"][x@1 a="b"] \ufeff\'su root\' failed')
    assert (r["message"], r["host"], r["app"], r["pid"], r["msgid"]) == ("'su root' failed", "mymachine.example.com",
                                                                         "su", None, "ID47")
    assert (r["facility"], r["severity"], r["sd"]["exampleSDID@32473"]["eventSource"]) == (4, 2, "App]lication")
    r = parse_syslog("<13>1 - - - - - -")
    assert r["message"] == "" and r["timestamp"] is None and r["sd"] == {}
    r = parse_syslog("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown")
    assert (r["message"], r["app"], r["pid"], r["priority"]) == ("check pass; user unknown", "sshd(pam_unix)",
                                                                 "19939", None)
    with pytest.raises(BadRecord, match="not syslog"):
        parse_syslog("2024-01-01 something")
    parser = StructuredParser(PrepareOptions(family="custom", format="syslog", inputs=("x",), time_window="1m"))
    batch = parser.parse(["<13>Oct  1 22:14:15 host app: hello", "<13>1 2003-10-11T22:14:15Z h a - - - hi"])
    assert batch.content.to_list() == ["hello", "hi"] and batch.timestamp[1] == 1065910455.0
    assert batch.timestamp[0] == 970438455.0  # RFC 3164 has no year: read in 2000


def test_detect_parses_new_lines_like_the_json_run(bgl_variants: dict[str, Path], tmp_path: Path) -> None:
    from logllm.detect import preprocessor_from_manifest

    data = PreparedData(prepare(PrepareOptions(family="custom", format="json", label_field="label",
                                               inputs=(str(bgl_variants["json"]),)), tmp_path / "p").out)
    pre, policy = preprocessor_from_manifest(data.manifest)
    assert (policy.kind, policy.window) == ("window", 100)
    lines = bgl_variants["json"].read_text().splitlines()
    test = data.split("test")
    first = test["line_numbers"][0].to_list()
    batch = pre.parse([lines[n - 1] for n in first] + ["{not json"])
    assert pre.mask(batch.content[:-1]) == data.texts(test["message_ids"][0].to_list())  # type: ignore[arg-type]
    assert batch.unparsed == 1 and batch.content[-1] == "{not json"
    with pytest.raises(ConfigError, match=r"--log-format auto: .*resolved once, by `logllm prepare`"):
        preprocessor_from_manifest(data.manifest, {"format": "auto"})
    pre, _ = preprocessor_from_manifest(data.manifest, {"timestamp_field": "timestamp"})
    assert pre.parse(lines[:1]).timestamp == [1117838570.0]


def test_cli_structured_options(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("".join(f'time={1700000000 + 30 * i} lvl=warn message="retry {i}"\n' for i in range(8)))
    rc = main(["-q", "prepare", "custom", "--log", str(path), "--format", "logfmt", "--message-field", "message",
               "--level-field", "lvl", "--time-window", "60s", "--time-field", "time", "--out", str(tmp_path / "o")])
    assert rc == 0
    manifest, got = prepared(tmp_path / "o")
    o = manifest["options"]
    assert (o["message_field"], o["level_field"], o["timestamp_field"]) == ("message", "lvl", "time")
    assert [len(r[3]) for r in got] == [2, 2, 2, 2] and got[0][4] == ["warn retry <*>"] * 2
