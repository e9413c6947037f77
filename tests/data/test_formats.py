"""Loghub format strings -> header regex and fields; the line parser and its policies."""

from __future__ import annotations

import polars as pl
import pytest

from logllm.data.formats import FAMILY_FORMATS, LogFormat
from logllm.data.options import PrepareOptions
from logllm.data.parsing import LineParser
from logllm.errors import ConfigError, DataError

HDFS_LINE = ("081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-1608999687919862906 "
             "src: /10.250.19.102:54106 dest: /10.250.19.102:50010")


def test_hdfs_format_strips_header() -> None:
    fmt = LogFormat.parse(FAMILY_FORMATS["hdfs"])
    content, parsed = fmt.strip_header(pl.Series([HDFS_LINE, "garbage", ""]))
    assert content.to_list() == [HDFS_LINE.split(": ", 1)[1], "garbage", ""]
    assert parsed.to_list() == [True, False, False]


def test_fields_are_extracted() -> None:
    fmt = LogFormat.parse("<Date> <Time> <Pid> <Level> <Component>: <Content>")
    df = fmt.extract(pl.Series([HDFS_LINE]), ["Level", "Component"])
    assert df.row(0) == ("INFO", "dfs.DataNode$DataXceiver")


def test_whitespace_runs_and_literal_brackets() -> None:
    for text in (r"\[<Time>\] \[<Level>\] <Content>", "[<Time>] [<Level>] <Content>"):
        fmt = LogFormat.parse(text)
        content, parsed = fmt.strip_header(pl.Series(["[Sun Dec 04]   [error] mod_jk child", "Sun [error] x"]))
        assert content.to_list()[0] == "mod_jk child" and parsed.to_list() == [True, False]


def test_content_only_format_parses_everything() -> None:
    fmt = LogFormat.parse("<Content>")
    content, parsed = fmt.strip_header(pl.Series(["a b", ""]))
    assert content.to_list() == ["a b", ""] and parsed.all()


@pytest.mark.parametrize("bad", ["no fields", "<Date> <Content> <Level>", "<Date> <Date> <Content>",
                                 "<1x> <Content>", "<Date> <Content> trailing"])
def test_bad_formats_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError, match="--format"):
        LogFormat.parse(bad)


def _bgl(**kw: object) -> LineParser:
    return LineParser(PrepareOptions(family="bgl", inputs=("x",), **kw))  # type: ignore[arg-type]


BGL = ("- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS "
       "KERNEL INFO instruction cache parity error corrected")


def test_first_token_labels_and_unparsed_content_without_label() -> None:
    batch = _bgl().parse([BGL, "KERNDTLB too short", "", "APPREAD " + BGL[2:]])
    assert batch.label.to_list() == [0, 1, None, 1]
    assert batch.parsed.to_list() == [True, False, False, True]
    # an unparsed line keeps its text but not its label token (that would leak the label)
    assert batch.content.to_list() == ["instruction cache parity error corrected", "too short", "",
                                       "instruction cache parity error corrected"]
    assert batch.unparsed == 2 and batch.skipped == 0 and batch.keep.all()


def test_unparsed_skip_and_fail() -> None:
    batch = _bgl(on_unparsed="skip").parse([BGL, "junk"])
    assert batch.keep.to_list() == [True, False] and batch.skipped == 1
    with pytest.raises(DataError, match=r"app\.log:11: line does not match.*'junk'"):
        _bgl(on_unparsed="fail").parse([BGL, "junk"], source="app.log", first_line=10)


def test_label_field_and_timestamps() -> None:
    o = PrepareOptions(family="custom", inputs=("x",), format="<Date> <Time> <Level> <Content>",
                       label_field="Level", normal_values=("INFO", "DEBUG"), time_window="60s",
                       timestamp_field="Date,Time", timestamp_format="%y%m%d %H%M%S")
    batch = LineParser(o).parse(["081109 203530 INFO a 1", "081109 203631 WARN b", "081109 99 INFO c", "x"])
    assert batch.label.to_list() == [0, 1, 0, None]
    ts = batch.timestamp.to_list()
    assert ts[1] - ts[0] == 61 and ts[2] is None and ts[3] is None
    assert batch.bad_timestamps == 1


def test_truncation_is_counted() -> None:
    o = PrepareOptions(family="custom", inputs=("x",), format="<Content>", max_line_chars=5, window=10)
    batch = LineParser(o).parse(["abcdefgh", "abc"])
    assert batch.content.to_list() == ["abcde", "abc"] and batch.truncated == 1


def test_options_round_trip_and_validation() -> None:
    o = PrepareOptions(family="thunderbird", inputs=("a.log", "b.log"), val_ratio=0.1).resolved()
    again = PrepareOptions.from_dict(o.to_dict())
    assert again == o and again.window == 100 and again.step == 100 and again.split == "chronological"
    assert PrepareOptions(family="hdfs", inputs=("x",)).resolved().split == "random"
    with pytest.raises(ConfigError, match="--val-ratio"):
        PrepareOptions(family="bgl", inputs=("x",), val_ratio=1.5).resolved()
    with pytest.raises(ConfigError, match="--time-window needs"):
        PrepareOptions(family="custom", inputs=("x",), time_window="60s").resolved()
    with pytest.raises(ConfigError, match="--label-field 'Lvl'"):
        PrepareOptions(family="custom", inputs=("x",), format="<Level> <Content>", label_field="Lvl").resolved()
    with pytest.raises(ConfigError, match="unknown prepare option"):
        PrepareOptions.from_dict({"family": "bgl", "bogus": 1})
