"""Options of `logllm prepare`, as one typed dataclass that round-trips through the manifest.

``PrepareOptions.from_dict(manifest["options"])`` rebuilds exactly the preprocessing a prepared
folder was made with (format, label rule, masking, unparsed policy, windowing), which is what
streaming detection needs to treat new lines like the training data.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from logllm.data.formats import FAMILY_FORMATS, LogFormat
from logllm.data.masking import Masking, MaskSpec, masking_from_options, resolve_masking
from logllm.data.structured import STRUCTURED_FORMATS
from logllm.errors import ConfigError

Family = Literal["hdfs", "bgl", "thunderbird", "liberty", "spirit", "custom", "logllm-csv"]
FAMILIES: tuple[str, ...] = ("hdfs", "bgl", "thunderbird", "liberty", "spirit", "custom", "logllm-csv")
WINDOWED_FAMILIES: tuple[str, ...] = ("bgl", "thunderbird", "liberty", "spirit")
OnUnparsed = Literal["keep", "skip", "fail"]
MissingLabels = Literal["fail", "drop", "keep"]
SplitMode = Literal["random", "chronological"]
LabelRule = Literal["first_token", "field", "none"]
SessionBy = Literal["file", "dir"]
SESSION_BY: tuple[str, ...] = ("file", "dir")
LabelsFormat = Literal["csv", "loghub-hadoop"]
LABELS_FORMATS: tuple[str, ...] = ("csv", "loghub-hadoop")
SplitBy = Literal["sequence", "file", "dir"]
SPLIT_BY: tuple[str, ...] = ("sequence", "file", "dir")

HDFS_SESSION_REGEX = r"blk_-?\d+"
#: ``--format auto``: `prepare` picks the format from the first lines (see logllm.data.autodetect)
AUTO = "auto"
DEFAULT_MAX_LINE_CHARS = 100_000


def parse_duration(text: str) -> float:
    """``'60s'``, ``'5m'``, ``'1h'``, ``'250ms'`` or a bare number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", str(text))
    if not m:
        raise ConfigError(f"--time-window {text!r} is not a duration; use e.g. 60s, 5m, 1h")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2) or "s"]
    if value <= 0:
        raise ConfigError(f"--time-window {text!r} must be positive")
    return value


def _structured_updates(o: PrepareOptions) -> dict[str, Any]:
    """Defaults and checks of the options of structured formats (json, logfmt, syslog)."""
    if not (o.is_structured or o.format == AUTO):
        for name, value in (("--message-field", o.message_field), ("--level-field", o.level_field),
                            ("--session-field", o.session_field)):
            if value is not None:
                raise ConfigError(f"{name} {value!r} names a key of structured lines; it needs --format "
                                  f"json, logfmt, syslog or auto (not {o.format or 'the family format'!r})")
        return {}
    for name, value in (("--message-field", o.message_field), ("--level-field", o.level_field),
                        ("--label-field", o.label_field), ("--timestamp-field", o.timestamp_field),
                        ("--session-field", o.session_field)):
        if value is not None and (not value.strip() or any(not part for part in value.split("."))):
            raise ConfigError(f"{name} {value!r} is not a key: use a key, or a dotted path such as log.msg")
    if o.format == "syslog":
        return {"message_field": o.message_field or "message",
                "timestamp_field": o.timestamp_field or ("timestamp" if o.time_window else None)}
    return {}


def _check_session_by(o: PrepareOptions) -> None:
    """The options that ``--session-by file|dir`` cannot be combined with (ConfigError naming them)."""
    if o.session_by is None:
        return
    if o.session_by not in SESSION_BY:
        raise ConfigError(f"--session-by {o.session_by!r}: choose one of {', '.join(SESSION_BY)}")
    if o.family == "hdfs":
        raise ConfigError("--session-by is for custom and the windowed families; hdfs sessions are block ids")
    if o.session_regex or o.time_window or o.session_field:
        raise ConfigError(f"--session-by {o.session_by} makes the sessions: drop --session-regex / --session-field / "
                          "--time-window (use --window N for windows inside each session)")
    if o.start_line is not None or o.end_line is not None:
        raise ConfigError(f"--start-line/--end-line count lines over one stream; with --session-by {o.session_by} "
                          "choose the files or folders to read instead")


@dataclass(frozen=True)
class PrepareOptions:
    """Everything that defines a prepared dataset (except where it is written).

    Fields left ``None`` take the family's default when :meth:`resolved` is called; the manifest
    stores the resolved options.
    """

    family: Family
    #: log files read in this order as one stream (for logllm-csv: the CSV files, see ``csv_splits``)
    inputs: tuple[str, ...] = ()
    #: labels file (``BlockId,Label`` for hdfs; ``<id>,<label>`` for custom sessions)
    labels: str | None = None
    #: Loghub-style format string; json, logfmt or syslog (structured lines, see
    #: :mod:`logllm.data.structured`); auto (`prepare` picks one from the first lines and records it,
    #: see :mod:`logllm.data.autodetect`); None = the family's format
    format: str | None = None
    #: json / logfmt: the key of the message (a dotted path reads nested objects, e.g. ``log.msg``);
    #: None = the first of ``message``, ``msg``, ``log``, ... that the first records hold (found by
    #: `prepare`, recorded resolved). syslog: ``message`` (the MSG part)
    message_field: str | None = None
    #: json / logfmt / syslog: the key of the severity; its value is put in front of the message
    #: (``ERROR connection refused``). None = the level is not part of the message (as Loghub's <Level>)
    level_field: str | None = None
    #: masking: "paper", "none", a TOML file of [[mask]] entries, or a Masking; resolved() makes it the
    #: Masking (the manifest records its name as ``mask`` and its list as ``mask_instructions``)
    mask: MaskSpec = "paper"
    #: a line that does not match the format: keep it as content-only, skip it (counted) or stop
    on_unparsed: OnUnparsed = "keep"
    #: `prepare` stops when more than this share of the lines does not match the format (or does not
    #: look like the family's logs) or is not valid UTF-8: a wrong family, format or file. 1.0: no limit
    max_unparsed: float = 0.2
    #: sequences without an entry in the labels file: stop, drop them (counted), or keep unlabeled
    missing_labels: MissingLabels = "fail"
    #: how a line gets its label: first token ('-' normal), a format field, or none
    label_rule: LabelRule | None = None
    label_field: str | None = None
    #: label values that mean "normal" (anything else is anomalous)
    normal_values: tuple[str, ...] = ("-",)
    #: sessions: a regex over the content; each distinct match in a line is a session id
    session_regex: str | None = None
    #: json / logfmt / syslog: sessions by the value at this key (a dotted path reads nested objects);
    #: a JSON array names several sessions (each distinct item), as a line matching a regex twice does
    session_field: str | None = None
    #: fixed windows of ``window`` lines, every ``step`` lines
    window: int | None = None
    step: int | None = None
    #: time windows (e.g. '60s') over ``timestamp_field`` (several fields joined by ',')
    time_window: str | None = None
    timestamp_field: str | None = None
    #: strftime format of the timestamp, or 'epoch' (seconds since 1970)
    timestamp_format: str | None = None
    split: SplitMode | None = None
    train_ratio: float = 0.8
    #: share of the training part held out for validation (end of train, or random for sessions)
    val_ratio: float = 0.0
    seed: int = 0
    #: 1-based inclusive line range over the concatenated inputs
    start_line: int | None = None
    end_line: int | None = None
    #: longer contents are truncated (counted) before masking
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS
    #: logllm-csv: the split of each input file
    csv_splits: tuple[str, ...] = field(default=())
    #: sequences from the layout of the inputs: each file is one ("file"), or each folder under the
    #: ``inputs`` roots is one, its files read in name order ("dir"); None: regex sessions or windows
    session_by: SessionBy | None = None
    #: how ``labels`` is read: a CSV ``id,label`` with a header, or Loghub's Hadoop abnormal_label.txt
    labels_format: LabelsFormat = "csv"
    #: what a split keeps whole: each sequence, or all sequences of an input file / of a folder
    split_by: SplitBy = "sequence"

    # ---- derived -------------------------------------------------------------------------------
    @property
    def sequence_kind(self) -> Literal["sessions", "files", "windows", "time_windows", "csv"]:
        if self.family == "logllm-csv":
            return "csv"
        if self.session_by:
            return "files"
        if self.family == "hdfs" or self.session_regex or self.session_field:
            return "sessions"
        if self.time_window:
            return "time_windows"
        return "windows"

    @property
    def is_structured(self) -> bool:
        """The lines are structured records (json, logfmt, syslog), not text read by a format string."""
        return self.format in STRUCTURED_FORMATS

    @property
    def log_format(self) -> LogFormat:
        if self.is_structured or self.format == AUTO:
            raise ConfigError(f"--format {self.format} is not a Loghub format string; its lines are read by "
                              "logllm.data.records.line_parser(options)")
        return LogFormat.parse(self.format or FAMILY_FORMATS.get(self.family, "<Content>"))

    def resolved(self) -> PrepareOptions:
        """Fill family defaults and check every option; raises ConfigError naming the option."""
        o = self
        if o.family not in FAMILIES:
            raise ConfigError(f"family {o.family!r} is unknown; choose one of {', '.join(FAMILIES)}")
        o = replace(o, mask=resolve_masking(o.mask))
        if o.on_unparsed not in ("keep", "skip", "fail"):
            raise ConfigError(f"--on-unparsed {o.on_unparsed!r}: choose keep, skip or fail")
        if o.missing_labels not in ("fail", "drop", "keep"):
            raise ConfigError(f"--missing-labels {o.missing_labels!r}: choose fail, drop or keep")
        if not 0 <= o.max_unparsed <= 1:
            raise ConfigError(f"--max-unparsed {o.max_unparsed} must be a share between 0 and 1 (1: no limit)")
        if o.seed < 0:
            raise ConfigError(f"--seed {o.seed} must be 0 or a positive integer")
        if not o.inputs:
            raise ConfigError("no input files given; pass --log FILE (several allowed, read in order)")
        if not 0 < o.train_ratio < 1:
            raise ConfigError(f"--train-ratio {o.train_ratio} must be between 0 and 1 (exclusive)")
        if not 0 <= o.val_ratio < 1:
            raise ConfigError(f"--val-ratio {o.val_ratio} must be in [0, 1): the share of the training part")
        if o.start_line is not None and o.start_line < 1:
            raise ConfigError(f"--start-line {o.start_line} must be >= 1 (lines are numbered from 1)")
        if o.end_line is not None and o.end_line < (o.start_line or 1):
            raise ConfigError(f"--end-line {o.end_line} is before --start-line {o.start_line or 1}")
        if o.max_line_chars < 1:
            raise ConfigError(f"--max-line-chars {o.max_line_chars} must be positive")
        if o.labels_format not in LABELS_FORMATS:
            raise ConfigError(f"--labels-format {o.labels_format!r}: choose one of {', '.join(LABELS_FORMATS)}")
        if o.labels_format != "csv" and not o.labels:
            raise ConfigError(f"--labels-format {o.labels_format} needs --labels FILE (e.g. abnormal_label.txt)")
        if o.split_by not in SPLIT_BY:
            raise ConfigError(f"--split-by {o.split_by!r}: choose one of {', '.join(SPLIT_BY)}")
        if o.family == "logllm-csv":
            if o.session_by or o.split_by != "sequence":
                raise ConfigError("logllm-csv keeps the sequences and the split of its CSVs: drop --session-by "
                                  "and --split-by")
            return replace(o, split=None, format=None, label_rule="none")
        _check_session_by(o)
        # Text read by a format string has header fields to check names against; structured records
        # (and auto, resolved by prepare from the first lines) have keys known only from the data.
        text = not (o.is_structured or o.format == AUTO)
        fmt = o.log_format if text else None  # validates the format string
        updates: dict[str, Any] = {"format": fmt.text if fmt else o.format}
        updates.update(_structured_updates(o))
        if o.session_field and o.session_regex:
            raise ConfigError(f"--session-field {o.session_field!r} and --session-regex {o.session_regex!r} both name "
                              "the sessions; pass one of them")
        if o.family == "hdfs":
            updates.update(session_regex=None if o.session_field else (o.session_regex or HDFS_SESSION_REGEX),
                           label_rule=o.label_rule or "none")
        elif o.family in WINDOWED_FAMILIES and text:
            updates.update(label_rule=o.label_rule or "first_token")
        elif o.family in WINDOWED_FAMILIES and o.format == AUTO:
            pass  # the label rule follows the format `prepare` picks
        elif o.family in WINDOWED_FAMILIES and not o.label_field and o.label_rule != "none":
            raise ConfigError(f"{o.family} with --format {o.format} needs --label-field KEY (the key that holds "
                              "each line's label; '-' or --normal-value means normal)")
        elif o.label_rule is None:
            updates["label_rule"] = "field" if o.label_field else "none"
        label_rule = updates.get("label_rule", o.label_rule)
        if label_rule == "first_token" and not text:
            raise ConfigError(f"--format {o.format}: a record has no first token to read a label from; "
                              "name the label's key with --label-field")
        if label_rule == "field":
            if not o.label_field:
                raise ConfigError("--label-rule field needs --label-field NAME (a field of --format)")
            if fmt and o.label_field not in fmt.header_fields:
                raise ConfigError(f"--label-field {o.label_field!r} is not a header field of --format "
                                  f"{fmt.text!r} (fields: {', '.join(fmt.header_fields)})")
        if updates.get("session_regex", o.session_regex):
            rx = updates.get("session_regex", o.session_regex)
            try:
                re.compile(rx)
            except re.error as err:
                raise ConfigError(f"--session-regex {rx!r} is not a valid regex: {err}") from err
        if o.session_regex or o.family == "hdfs" or o.session_field:
            if o.window or o.time_window:
                raise ConfigError("sessions (--session-regex / --session-field / hdfs) cannot be combined with "
                                  "--window or --time-window")
        if o.time_window:
            parse_duration(o.time_window)
            if o.window:
                raise ConfigError("use either --window (lines) or --time-window (time), not both")
            ts_field = updates.get("timestamp_field", o.timestamp_field)
            if text and (not ts_field or not o.timestamp_format):
                raise ConfigError("--time-window needs --timestamp-field (a field of --format, or several "
                                  "joined by ',') and --timestamp-format (strftime, or 'epoch')")
            if not ts_field:
                raise ConfigError(f"--time-window with --format {o.format} needs --time-field KEY (or --timestamp-field: the "
                                  "key of the time; --timestamp-format optional: without it a number is "
                                  "seconds since 1970 and a string ISO 8601)")
            for name in ts_field.split(",") if fmt else ():
                if name not in fmt.header_fields:
                    raise ConfigError(f"--timestamp-field {name!r} is not a header field of --format "
                                      f"{fmt.text!r} (fields: {', '.join(fmt.header_fields)})")
        is_windows = (not (updates.get("session_regex") or o.session_regex or o.session_field) and not o.time_window
                      and not o.session_by)
        for name, value in (("--window", o.window), ("--step", o.step)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} {value} must be a positive number of lines")
        if is_windows:
            window = o.window or 100
            step = o.step or window
            if window < 1 or step < 1:
                raise ConfigError(f"--window {window} and --step {step} must be positive")
            updates.update(window=window, step=step)
        elif o.session_by and o.window:
            updates.update(step=o.step or o.window)
        elif o.session_by and o.step:
            raise ConfigError(f"--step {o.step} needs --window (windows inside each --session-by {o.session_by} session)")
        sessions = bool(updates.get("session_regex") or o.session_regex or o.session_field or o.session_by)
        if o.labels and not sessions:
            raise ConfigError(f"--labels {o.labels} labels sessions; windows take their labels from the lines "
                              "(first token, or --label-field). Drop --labels or use --session-regex / --session-field / "
                              "--session-by")
        default_split = "random" if sessions else "chronological"
        updates["split"] = o.split or default_split
        if updates["split"] not in ("random", "chronological"):
            raise ConfigError(f"--split {updates['split']!r}: choose random or chronological")
        windowed = is_windows or bool(o.session_by and o.window)
        if (windowed and updates["split"] == "random" and o.split_by == "sequence"
                and updates.get("step", o.step) < updates.get("window", o.window)):
            raise ConfigError(f"--split random with --step {updates['step']} < --window {updates['window']}: the "
                              "windows overlap, so a random split would put the same lines in train and test. "
                              "Use --split chronological (windows are built inside each part), --split-by "
                              f"file|dir (whole files or folders per split), or --step {updates.get('window', o.window)} "
                              "(windows that do not overlap)")
        return replace(o, **updates)

    # ---- (de)serialisation ---------------------------------------------------------------------
    @property
    def masking(self) -> Masking:
        """The masking as a :class:`~logllm.data.masking.Masking` (a built-in name or a file read if needed)."""
        return self.mask if isinstance(self.mask, Masking) else resolve_masking(self.mask)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, mask=""))
        if isinstance(self.mask, Masking):  # resolved: its name, and its instructions in order
            d["mask"], d["mask_instructions"] = self.mask.name, self.mask.to_list()
        else:
            d["mask"] = self.mask
        d["inputs"] = list(self.inputs)
        d["normal_values"] = list(self.normal_values)
        d["csv_splits"] = list(self.csv_splits)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepareOptions:
        """Rebuild options from ``manifest["options"]`` (unknown keys are rejected by name)."""
        known = {f.name for f in fields(cls)} | {"mask_instructions"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown prepare option(s) {unknown}; was the folder made by a newer logllm?")
        d = dict(data)
        if d.pop("mask_instructions", None) is not None:
            d["mask"] = masking_from_options(data)
        for key in ("inputs", "normal_values", "csv_splits"):
            if key in d and d[key] is not None:
                d[key] = tuple(d[key])
        return cls(**d)
