"""Raw lines -> content, line label and timestamp, with the unparsed-line policy applied.

This is the one definition of "how a raw line becomes a message" used both by `logllm prepare` and
by streaming detection::

    opts = PrepareOptions.from_dict(manifest["options"]).resolved()
    parser = LineParser(opts)
    batch = parser.parse(lines, source="app.log", first_line=1)
    messages = mask_series(batch.content, opts.mask)

A line that does not match the format is never dropped silently: with ``on_unparsed="keep"`` its
whole text (without its label: the first token for label-first families, the label field where
``--label-field`` names one) becomes the content and it is counted; with ``"skip"`` it is counted and flagged ``keep=False``; with ``"fail"`` a DataError names
file:line and shows the line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import polars as pl

from logllm.data.formats import FAMILY_FIELD_PATTERNS, FAMILY_FORMATS, LogFormat
from logllm.data.options import PrepareOptions
from logllm.errors import DataError

log = logging.getLogger(__name__)

_FIRST_TOKEN = r"^\s*(\S+)"
_FIRST_TOKEN_AND_SPACE = r"^\s*\S+\s*"


@dataclass
class ParsedBatch:
    """One batch of parsed lines; every Series has one row per input line."""

    content: pl.Series  # String: the message (header removed), truncated to max_line_chars
    label: pl.Series  # Int8: 1 anomalous, 0 normal, null unknown
    parsed: pl.Series  # Boolean: the line matched the format
    keep: pl.Series  # Boolean: False for lines skipped by on_unparsed="skip"
    timestamp: pl.Series | None  # Float64 seconds since the epoch (time windows only), null if bad
    truncated_rows: pl.Series | None = None  # Boolean: the content was cut at max_line_chars
    #: Boolean: the line matches the family's format string but its fields are not what that
    #: family's logs hold (see ``LineParser(check_fields=True)``); None when not checked
    unlike_rows: pl.Series | None = None
    #: List(String): the session ids of each line (``--session-field``, structured lines); None otherwise
    session: pl.Series | None = None
    unparsed: int = 0
    skipped: int = 0
    truncated: int = 0
    bad_timestamps: int = 0
    unlike: int = 0

    def __len__(self) -> int:
        return len(self.content)


def clip(text: str, n: int = 200) -> str:
    """``text`` cut to ``n`` characters (with its length said), for error messages."""
    return text if len(text) <= n else text[:n] + f"... ({len(text)} chars)"


class LineParser:
    """Parses batches of raw lines according to (resolved) :class:`PrepareOptions`.

    ``check_fields=True`` (used by `prepare`'s input check) also flags the lines of a built-in
    label-first family, read with its own format, whose header fields are not what that family's
    logs hold (:data:`~logllm.data.formats.FAMILY_FIELD_PATTERNS`): ``ParsedBatch.unlike_rows``.
    """

    def __init__(self, options: PrepareOptions, check_fields: bool = False):
        self.options = options if options.split is not None else options.resolved()
        self.format: LogFormat = self.options.log_format
        o = self.options
        self.label_rule = o.label_rule or "none"
        self.ts_fields = o.timestamp_field.split(",") if (o.time_window and o.timestamp_field) else []
        wanted = list(self.ts_fields)
        if self.label_rule == "field" and o.label_field:
            wanted.append(o.label_field)
        self.wanted = list(dict.fromkeys(wanted))
        self.field_checks: dict[str, str] = {}
        if check_fields and self.format.text == FAMILY_FORMATS.get(o.family):
            self.field_checks = FAMILY_FIELD_PATTERNS.get(o.family, {})
        self.label_prefix = (self.format.field_prefix_regex(o.label_field)
                             if self.label_rule == "field" and o.label_field else None)

    def parse(self, lines: pl.Series | list[str], source: str = "<lines>", first_line: int = 1,
              line_numbers: pl.Series | None = None) -> ParsedBatch:
        """Parse a batch of raw lines (without line ends).

        ``source`` and ``first_line`` (or explicit ``line_numbers``) are only used in messages.
        """
        s = lines if isinstance(lines, pl.Series) else pl.Series("line", lines, dtype=pl.String)
        s = s.fill_null("")
        o = self.options
        content, parsed = self.format.strip_header(s)
        n_unparsed = len(s) - int(parsed.sum())
        if n_unparsed and o.on_unparsed == "fail":
            i = int(parsed.arg_min())  # first False
            num = int(line_numbers[i]) if line_numbers is not None else first_line + i
            raise DataError(f"{source}:{num}: line does not match the log format {self.format.text!r}: "
                            f"{clip(s[i])!r}. Fix --format, or pass --on-unparsed keep|skip")
        frame = pl.DataFrame({"line": s, "content": content, "parsed": parsed})
        exprs: list[pl.Expr] = []
        if self.label_rule == "first_token":
            token = pl.col("line").str.extract(_FIRST_TOKEN, 1)
            exprs.append(pl.when(token.is_null()).then(None).when(token.is_in(list(o.normal_values)))
                         .then(0).otherwise(1).cast(pl.Int8).alias("label"))
            # An unparsed line keeps its text but not its label token: that would leak the label.
            exprs.append(pl.when(pl.col("parsed")).then(pl.col("content"))
                         .otherwise(pl.col("line").str.replace(_FIRST_TOKEN_AND_SPACE, "")).alias("content"))
        fields = self.format.extract(s, self.wanted) if self.wanted else None
        if self.label_rule == "field" and fields is not None:
            value = fields[o.label_field]
            frame = frame.with_columns(value.alias("_label"))
            if n_unparsed and self.label_prefix:
                # A line that does not match the format keeps its text but never its label field (the
                # label would reach the model): the header up to the label field is looked for alone;
                # where it is found the label is read from it and cut out of the text.
                found = s.str.extract_groups(self.label_prefix).struct.unnest()
                value = pl.coalesce(pl.col("value"), pl.col("alone"))
                frame = frame.with_columns(found.select(pl.when(value != "").then(value).alias("_found")))
                frame = frame.with_columns(pl.when(pl.col("parsed")).then(pl.col("_label"))
                                           .otherwise(pl.col("_found")).alias("_label"))
                exprs.append(pl.when(pl.col("parsed")).then(pl.col("content"))
                             .otherwise(pl.col("line").str.replace(self.label_prefix, "${before}"))
                             .alias("content"))
            exprs.append(pl.when(pl.col("_label").is_null()).then(None)
                         .when(pl.col("_label").is_in(list(o.normal_values))).then(0).otherwise(1)
                         .cast(pl.Int8).alias("label"))
        if not any(e.meta.output_name() == "label" for e in exprs):
            exprs.append(pl.lit(None, dtype=pl.Int8).alias("label"))
        frame = frame.with_columns(exprs)
        lengths = frame["content"].str.len_chars()
        too_long = lengths > o.max_line_chars
        n_trunc = int(too_long.sum())
        if n_trunc:
            i = int(too_long.arg_max())
            num = int(line_numbers[i]) if line_numbers is not None else first_line + i
            log.warning("%s: %d line(s) longer than %d characters truncated (first: line %d, %d chars)",
                        source, n_trunc, o.max_line_chars, num, int(lengths[i]))
            frame = frame.with_columns(pl.col("content").str.head(o.max_line_chars))
        timestamp = None
        bad_ts = 0
        if self.ts_fields and fields is not None:
            timestamp, bad_ts = self._timestamps(fields)
        unlike_rows = self._unlike(s, frame["parsed"]) if self.field_checks else None
        keep = pl.Series("keep", [True] * len(s), dtype=pl.Boolean)
        skipped = 0
        if n_unparsed and o.on_unparsed == "skip":
            keep = frame["parsed"].rename("keep")
            skipped = n_unparsed
        return ParsedBatch(content=frame["content"], label=frame["label"], parsed=frame["parsed"], keep=keep,
                           timestamp=timestamp, truncated_rows=too_long.rename("truncated"), unparsed=n_unparsed,
                           skipped=skipped, truncated=n_trunc, bad_timestamps=bad_ts, unlike_rows=unlike_rows,
                           unlike=int(unlike_rows.sum()) if unlike_rows is not None else 0)

    def _unlike(self, lines: pl.Series, parsed: pl.Series) -> pl.Series:
        """Lines that match the format but whose checked fields do not look like the family's."""
        fields = self.format.extract(lines, list(self.field_checks))
        ok = pl.lit(True)
        for name, pattern in self.field_checks.items():
            ok = ok & pl.col(name).str.contains(pattern).fill_null(False)
        looks_right = fields.select(ok.alias("ok")).to_series()
        return (parsed & ~looks_right).rename("unlike")

    def _timestamps(self, fields: pl.DataFrame) -> tuple[pl.Series, int]:
        o = self.options
        text = fields.select(pl.concat_str([pl.col(f) for f in self.ts_fields], separator=" ")).to_series()
        if o.timestamp_format == "epoch":
            ts = text.str.strip_chars().cast(pl.Float64, strict=False)
        else:
            dt = text.str.strptime(pl.Datetime("us"), o.timestamp_format, strict=False)
            ts = dt.dt.epoch("us").cast(pl.Float64) / 1e6
        ts = ts.rename("timestamp")
        # Lines whose fields parsed but whose timestamp did not (unparsed lines are counted elsewhere).
        bad = int((ts.is_null() & text.is_not_null()).sum())
        return ts, bad
