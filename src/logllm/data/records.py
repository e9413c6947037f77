"""Structured lines (json, logfmt, syslog) -> the columns the text path makes: content, label, timestamp.

:class:`StructuredParser` is the structured twin of :class:`logllm.data.parsing.LineParser`: same
``parse(lines, source, first_line)`` and the same :class:`~logllm.data.parsing.ParsedBatch`, so
`prepare` and streaming detection take either from :func:`line_parser`::

    opts = PrepareOptions.from_dict(manifest["options"]).resolved()
    batch = line_parser(opts).parse(lines, source="app.jsonl", first_line=1)

The message is the value at ``message_field`` (with the ``level_field`` value in front of it where
one is named); the label the value at ``label_field``, compared with ``normal_values``; the time the
value at ``timestamp_field`` (read only for time windows, or where the caller asks); the session ids the
value at ``session_field`` (:func:`~logllm.data.structured.session_keys`, also for a record without a
message; a line that is no record names none). The other keys
of a record are not part of the message; :meth:`StructuredParser.record` gives a whole record.

A line that is not a record (invalid JSON, not logfmt or syslog) or has no message follows
``on_unparsed`` as text lines do: kept (counted; its text is the content, without the label key where
it can be found, so a label never reaches a message), skipped (counted) or a DataError naming file:line.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from typing import Any

import polars as pl

from logllm.data.options import PrepareOptions
from logllm.data.parsing import LineParser, ParsedBatch, clip
from logllm.data.structured import DEFAULT_MESSAGE_KEY, PARSERS, BadRecord, as_text, get_path, session_keys
from logllm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["StructuredParser", "line_parser", "unparsed_reason"]

#: RFC 3164 times have no year: they are read in this (leap) year, so that windows within a year work.
RFC3164_YEAR = 2000


def line_parser(options: PrepareOptions, check_fields: bool = False) -> LineParser | StructuredParser:
    """The parser of the lines of ``options``: structured (json, logfmt, syslog) or a format string."""
    if options.is_structured:
        return StructuredParser(options)
    return LineParser(options, check_fields=check_fields)


def unparsed_reason(parser: LineParser | StructuredParser, line: str) -> str:
    """Why ``line`` is unparsed, for an error message (``file:line: <reason>: 'line'``)."""
    if isinstance(parser, StructuredParser):
        return parser.reason(line)
    return f"line does not match the log format {parser.format.text!r}"


def _key_regex(fmt: str, key: str | None) -> str | None:
    """A regex finding ``key`` (its last part) and its value (group ``value``) in the raw text of a
    line that is no record: best effort, to keep a label out of the content of a kept line."""
    if not key:
        return None
    name = re.escape(key.split(".")[-1])
    quoted = r'"(?:[^"\\]|\\.)*"'
    if fmt == "json":
        return rf'"{name}"\s*:\s*(?P<value>{quoted}|[^,}}\s]+)\s*,?\s*'
    if fmt == "logfmt":
        return rf'(?:^|(?<=\s)){name}=(?P<value>{quoted}|\S*)\s*'
    return rf'(?:^|(?<=[\s\[])){name}=(?P<value>{quoted})\s*'  # syslog: an SD parameter


class StructuredParser:
    """Parses batches of json, logfmt or syslog lines according to (resolved) :class:`PrepareOptions`.

    ``timestamps``: read the time of each line (None: only for time windows, as `prepare` needs).
    """

    def __init__(self, options: PrepareOptions, timestamps: bool | None = None):
        self.options = options if options.split is not None else options.resolved()
        o = self.options
        if not o.is_structured:
            raise ConfigError(f"--format {o.format!r} is not json, logfmt or syslog")
        self.read = PARSERS[str(o.format)]
        key = o.message_field or DEFAULT_MESSAGE_KEY[str(o.format)]
        if not key:
            raise ConfigError(f"--format {o.format} needs --message-field KEY (`prepare` finds it in the first "
                              "lines when not given)")
        self.message_key: str = key
        self.label_key = o.label_field if o.label_rule == "field" else None
        self.level_key = o.level_field
        self.session_key = o.session_field
        want = bool(o.time_window) if timestamps is None else timestamps
        self.time_key = o.timestamp_field if want else None
        self.format_text = f"{o.format} (message key {self.message_key!r})"
        self._label_text = _key_regex(str(o.format), self.label_key)

    def record(self, line: str) -> dict[str, Any]:
        """The whole record of one line (every key); :class:`~logllm.data.structured.BadRecord` if none."""
        return self.read(line)

    def reason(self, line: str) -> str:
        """Why ``line`` gives no message (empty if it does)."""
        try:
            record = self.read(line)
        except BadRecord as err:
            return str(err)
        if get_path(record, self.message_key) is None:
            keys = ", ".join(list(record)[:10])
            return f"no message key {self.message_key!r} (keys: {keys}); pass --message-field KEY"
        return ""

    def parse(self, lines: pl.Series | list[str], source: str = "<lines>", first_line: int = 1,
              line_numbers: pl.Series | None = None) -> ParsedBatch:
        """Parse a batch of lines (without line ends); ``source`` and line numbers only name lines in errors."""
        texts = lines.fill_null("").to_list() if isinstance(lines, pl.Series) else [t or "" for t in lines]
        o = self.options
        content: list[str] = []
        labels: list[str | None] = []
        parsed: list[bool] = []
        times: list[Any] = []
        sessions: list[list[str]] = []
        for i, line in enumerate(texts):
            try:
                record: dict[str, Any] | None = self.read(line)
                msg = get_path(record, self.message_key)
            except BadRecord:
                record, msg = None, None
            if self.session_key:
                sessions.append(session_keys(record, self.session_key))
            if msg is None:
                if o.on_unparsed == "fail":
                    num = int(line_numbers[i]) if line_numbers is not None else first_line + i
                    raise DataError(f"{source}:{num}: {self.reason(line)}: {clip(line)!r}. Fix the line, or pass "
                                    "--on-unparsed keep|skip")
                text, label = self._unparsed(line, record)
                content.append(text)
                labels.append(label)
                parsed.append(False)
                times.append(None)
                continue
            text = as_text(msg) or ""
            if self.level_key:
                level = as_text(get_path(record, self.level_key))
                text = f"{level} {text}" if level else text
            content.append(text)
            labels.append(as_text(get_path(record, self.label_key)) if self.label_key else None)
            parsed.append(True)
            times.append(get_path(record, self.time_key) if self.time_key else None)
        batch = self._batch(content, labels, parsed, times, source, first_line, line_numbers)
        if self.session_key:
            batch.session = pl.Series("session", sessions, dtype=pl.List(pl.String))
        return batch

    def _unparsed(self, line: str, record: dict[str, Any] | None) -> tuple[str, str | None]:
        """Content and label value of a kept line without a message: a record without its label key,
        or the line's text with the label key cut out where it is found."""
        if record is not None:
            if self.label_key:
                label = as_text(get_path(record, self.label_key))
                record = {k: v for k, v in record.items() if k != self.label_key.split(".")[0]}
                return as_text(record) or "", label
            return as_text(record) or "", None
        if self._label_text:
            m = re.search(self._label_text, line)
            if m:
                value = m.group("value")
                return line[:m.start()] + line[m.end():], value[1:-1] if value.startswith('"') else value
        return line, None

    def _batch(self, content: list[str], labels: list[str | None], parsed: list[bool], times: list[Any],
               source: str, first_line: int, line_numbers: pl.Series | None) -> ParsedBatch:
        o = self.options
        text = pl.Series("content", content, dtype=pl.String)
        ok = pl.Series("parsed", parsed, dtype=pl.Boolean)
        value = pl.Series("value", labels, dtype=pl.String)
        label = (pl.select(pl.when(value.is_null()).then(None).when(value.is_in(list(o.normal_values))).then(0)
                           .otherwise(1).cast(pl.Int8).alias("label")).to_series()
                 if self.label_key else pl.Series("label", [None] * len(content), dtype=pl.Int8))
        lengths = text.str.len_chars()
        too_long = (lengths > o.max_line_chars).rename("truncated")
        n_trunc = int(too_long.sum())
        if n_trunc:
            i = int(too_long.arg_max())
            num = int(line_numbers[i]) if line_numbers is not None else first_line + i
            log.warning("%s: %d message(s) longer than %d characters truncated (first: line %d, %d chars)",
                        source, n_trunc, o.max_line_chars, num, int(lengths[i]))
            text = text.str.head(o.max_line_chars)
        timestamp, bad_ts = (self._timestamps(times) if self.time_key else (None, 0))
        n_unparsed = len(ok) - int(ok.sum())
        skip = o.on_unparsed == "skip" and n_unparsed > 0
        keep = ok.rename("keep") if skip else pl.Series("keep", [True] * len(ok), dtype=pl.Boolean)
        return ParsedBatch(content=text, label=label, parsed=ok, keep=keep, timestamp=timestamp,
                           truncated_rows=too_long, unparsed=n_unparsed, skipped=n_unparsed if skip else 0,
                           truncated=n_trunc, bad_timestamps=bad_ts)

    def _timestamps(self, values: list[Any]) -> tuple[pl.Series, int]:
        """Seconds since 1970 per line (null where absent or unreadable) and the count of unreadable ones."""
        fmt = self.options.timestamp_format
        if fmt and fmt != "epoch":
            text = pl.Series([as_text(v) for v in values], dtype=pl.String)
            stamps = (text.str.strptime(pl.Datetime("us"), fmt, strict=False).dt.epoch("us").cast(pl.Float64) / 1e6)
            return stamps.rename("timestamp"), int((stamps.is_null() & text.is_not_null()).sum())
        out: list[float | None] = [_seconds(v, epoch=fmt == "epoch") for v in values]
        bad = sum(1 for v, s in zip(values, out) if v is not None and s is None)
        return pl.Series("timestamp", out, dtype=pl.Float64), bad


def _seconds(value: Any, epoch: bool) -> float | None:
    """A record's time in seconds since 1970: a number (or with ``epoch`` a numeric string) as seconds,
    else an ISO 8601 / RFC 3339 string (UTC where it names no offset), else an RFC 3164 time."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        if epoch:
            return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        try:
            when = datetime.strptime(f"{RFC3164_YEAR} {text}", "%Y %b %d %H:%M:%S")
        except ValueError:
            return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()
