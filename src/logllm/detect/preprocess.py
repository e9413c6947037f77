"""A run's preprocessing for new lines, rebuilt from its data manifest.

`preprocessor_from_manifest` reads the `prepare` options recorded in a run's ``data_manifest.json``
(format, masking, windows, sessions, or files and folders as sessions), applies the options a user overrides for detection (the same
flags as `prepare`, `OVERRIDABLE`), and returns a `RunPreprocessor` (parsing and masking with the data
package's own code, so new lines become messages exactly as the training data did) and the
`SequencePolicy` that cuts them into sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from logllm.detect.sequencers import SequencePolicy
from logllm.errors import ConfigError

log = logging.getLogger("logllm.detect")  # the package's logger, for all its modules


@dataclass
class ParsedBatch:
    """A batch of lines after parsing: content (None = unparsed and skipped) and timestamp per line."""

    content: list[str | None]
    timestamp: list[float | None]
    unparsed: int = 0  # lines that did not match the format (kept as content or skipped)
    #: the session keys of each line read from its record (``session_field``); None: found by the sequencer
    sessions: list[tuple[str, ...]] | None = None


class Preprocessor(Protocol):
    """The run's preprocessing for new lines (built from the data manifest; see `preprocessor_from_manifest`)."""

    def parse(self, lines: list[str]) -> ParsedBatch: ...

    def mask(self, contents: list[str]) -> list[str]: ...


# `prepare` options a user may change for detection (the same flags as `prepare`).
OVERRIDABLE = ("format", "message_field", "level_field", "mask", "on_unparsed", "window", "step", "session_regex",
               "session_field", "time_window", "timestamp_field", "timestamp_format", "max_line_chars", "label_rule",
               "label_field")

# `prepare` options that describe the training data rather than how a line is read: detection sets
# them to these values (a labels file labels the training sessions; the line range and the split
# chose the training lines), so that they never stop an override such as `--window`.
TRAINING_ONLY: dict[str, Any] = {"labels": None, "labels_format": "csv", "missing_labels": "fail",
                                 "start_line": None, "end_line": None, "split": None, "split_by": "sequence"}


class RunPreprocessor:
    """The data package's own parsing and masking (`logllm.data.parsing.LineParser`, or
    `logllm.data.records.StructuredParser` for json, logfmt and syslog lines; `mask_series`), so new
    lines become messages exactly as the training data did.

    ``on_unparsed="fail"`` would stop a stream at its first odd line; here such lines are skipped
    and counted instead. Timestamps are read when ``timestamp_field`` and ``timestamp_format`` are
    set (session time-outs in log time, time windows).
    """

    def __init__(self, options: Any):
        from dataclasses import replace

        from logllm.data.parsing import LineParser
        from logllm.data.records import StructuredParser

        if options.on_unparsed == "fail":
            log.info("on_unparsed=fail in the run's options: in a stream such lines are skipped and counted")
            options = replace(options, on_unparsed="skip")
        self.options = options
        o = options
        self.parser: LineParser | StructuredParser
        if o.is_structured:  # a record's time is read by the parser (no --timestamp-format needed)
            self.parser = StructuredParser(options, timestamps=bool(o.timestamp_field))
            self.ts_fields: list[str] = []
        else:
            self.parser = LineParser(options)
            self.ts_fields = o.timestamp_field.split(",") if (o.timestamp_field and o.timestamp_format) else []

    def parse(self, lines: list[str]) -> ParsedBatch:
        import polars as pl

        series = pl.Series("line", lines, dtype=pl.String)
        batch = self.parser.parse(series)
        content = batch.content.to_list()
        if batch.skipped:
            content = [c if k else None for c, k in zip(content, batch.keep.to_list())]
        if batch.timestamp is not None:
            stamps = batch.timestamp.to_list()
        elif self.ts_fields:
            stamps = self._timestamps(series)
        else:
            stamps = [None] * len(lines)
        sessions = None if batch.session is None else [tuple(keys) for keys in batch.session.to_list()]
        return ParsedBatch(content, stamps, batch.unparsed, sessions)

    def _timestamps(self, series: Any) -> list[float | None]:
        import polars as pl

        fields = self.parser.format.extract(series, self.ts_fields)  # type: ignore[union-attr]
        text = fields.select(pl.concat_str([pl.col(f) for f in self.ts_fields], separator=" ")).to_series()
        if self.options.timestamp_format == "epoch":
            ts = text.str.strip_chars().cast(pl.Float64, strict=False)
        else:
            dt = text.str.strptime(pl.Datetime("us"), self.options.timestamp_format, strict=False)
            ts = dt.dt.epoch("us").cast(pl.Float64) / 1e6
        return ts.to_list()

    def mask(self, contents: list[str]) -> list[str]:
        from logllm.data.masking import mask_series

        return mask_series(contents, self.options.mask).to_list()


def preprocessor_from_manifest(manifest: dict[str, Any], overrides: dict[str, Any] | None = None,
                               session_timeout: float | None = None,
                               where: str = "data_manifest.json") -> tuple[RunPreprocessor, SequencePolicy]:
    """Rebuild the run's preprocessing and sequencing from its data manifest's ``options``.

    ``overrides`` change `prepare` options (keys of ``OVERRIDABLE``; None values are ignored).
    """
    from dataclasses import replace

    from logllm.data.options import PrepareOptions

    raw = manifest.get("options")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: has no 'options' (it was not written by `logllm prepare`); "
                          "rebuild the prepared folder with this logllm version and retrain, or copy "
                          "the options into the manifest")
    options = PrepareOptions.from_dict(raw)
    changes = {k: v for k, v in (overrides or {}).items() if v is not None}
    bad = sorted(set(changes) - set(OVERRIDABLE))
    if bad:
        raise ConfigError(f"cannot override {bad} for detection; overridable: {', '.join(OVERRIDABLE)}")
    unused = {k: getattr(options, k) for k in ("labels", "start_line", "end_line") if getattr(options, k) is not None}
    if unused:
        log.info("%s: %s not used for detection (they chose and labelled the training data); "
                 "use detect's own --start-line/--end-line for a line range", where,
                 ", ".join(f"{k}={v!r}" for k, v in unused.items()))
    options = replace(options, **TRAINING_ONLY)
    if changes.get("format") == "auto":
        raise ConfigError(f"--log-format auto: detection reads lines as the run's data was prepared ({where}: "
                          f"format {options.format!r}); `auto` is resolved once, by `logllm prepare`. Pass a "
                          "format (a Loghub format string, json, logfmt or syslog) or leave it out")
    if changes.get("format") and changes["format"] not in ("json", "logfmt", "syslog"):
        changes.setdefault("message_field", None)  # keys of the run's structured lines: not of text
        changes.setdefault("level_field", None)
        if options.session_field and not any(changes.get(k) for k in ("session_regex", "window", "time_window")):
            raise ConfigError(f"--log-format {changes['format']!r}: the run's sessions are the records' key "
                              f"{options.session_field!r} ({where}), which text lines do not have; pass "
                              "--session-regex, --window or --time-window too")
    if options.session_by and (changes.get("session_regex") or changes.get("time_window")):
        log.info("%s: --session-regex / --time-window given: sequences by them instead of by %s (the run's "
                 "--session-by)", where, options.session_by)
        options = replace(options, session_by=None)
    if changes.get("session_regex") or changes.get("session_field"):
        changes.update(window=None, step=None, time_window=None)
        changes.setdefault("session_regex", None)  # one source of session ids: the regex or the key
        changes.setdefault("session_field", None)
    elif changes.get("window") or changes.get("time_window"):
        changes.setdefault("session_regex", None)
        changes.setdefault("session_field", None)
        if options.family == "hdfs":
            options = replace(options, family="custom", label_rule=options.label_rule)
    if changes.get("window") and "step" not in changes:
        changes["step"] = None  # a new window size without a step: step = window, as in prepare
    options = replace(options, **changes).resolved()
    kind = options.sequence_kind
    if kind == "sessions":
        policy = SequencePolicy("session", session_pattern=options.session_regex, session_timeout=session_timeout,
                                session_field=options.session_field)
    elif kind == "windows":
        policy = SequencePolicy("window", window=int(options.window), step=int(options.step))
    elif kind == "time_windows":
        from logllm.data.options import parse_duration

        policy = SequencePolicy("time", time_window=parse_duration(options.time_window),
                                session_timeout=session_timeout)
    elif kind == "files":
        policy = SequencePolicy("files", window=options.window, step=options.step, session_by=options.session_by,
                                session_timeout=session_timeout)
    else:
        raise ConfigError(f"{where}: family {options.family!r} reads pre-built sequences from CSV; there are no "
                          "raw lines to detect on. Pass --format and --window or --session-regex")
    return RunPreprocessor(options), policy
