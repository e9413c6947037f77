"""`logllm prepare FAMILY ...`: raw logs -> a prepared folder (thin wrapper over logllm.data.prepare)."""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from logllm.errors import ConfigError

if TYPE_CHECKING:
    from logllm.data.options import PrepareOptions

log = logging.getLogger(__name__)

FAMILY_HELP = ("hdfs (sessions by block id, labels from anomaly_label.csv), bgl / thunderbird / liberty / "
               "spirit (label = first token, fixed windows), custom (your own --format), logllm-csv "
               "(train/test CSVs of the paper's reference code)")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "prepare", help="parse, mask, window and split raw logs into a prepared folder",
        description="Parse, mask (METHOD.md section 2), group into sessions or windows, split, and write "
                    "a prepared folder (train/val/test parquet, messages.parquet, manifest.json). "
                    "Families: " + FAMILY_HELP + ". See docs/data.md.")
    p.add_argument("family", choices=["hdfs", "bgl", "thunderbird", "liberty", "spirit", "custom", "logllm-csv"])
    p.add_argument("--log", nargs="+", action="extend", default=[], metavar="FILE",
                   help="log file(s), plain or .gz, read in this order as one stream")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (written whole, then renamed into place)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing prepared folder at --out (the whole folder; without it, prepare refuses)")
    p.add_argument("--labels", metavar="CSV", help="labels file: id,label per session (hdfs: anomaly_label.csv)")
    p.add_argument("--format", help="Loghub-style format, e.g. '<Date> <Time> <Level> <Component>: <Content>'; "
                                    "json (JSON lines), logfmt, syslog (RFC 5424 / 3164); or auto (picked from "
                                    "the first 200 lines, logged, recorded in the manifest). Default: the family's")
    p.add_argument("--message-field", metavar="KEY",
                   help="json/logfmt: key of the message, dotted for nested keys (e.g. log.msg); default: the "
                        "first of message, msg, log, ... found in the first records")
    p.add_argument("--level-field", metavar="KEY",
                   help="json/logfmt/syslog: key of the severity, put in front of the message (default: not used)")
    p.add_argument("--mask", default="paper", metavar="paper|none|FILE.toml",
                   help="masking of variable parts: paper (default, METHOD.md section 2), none (raw content), or "
                        "a TOML file of [[mask]] entries (name, regex, replace), applied in order; see docs/data.md")
    p.add_argument("--on-unparsed", choices=["keep", "skip", "fail"], default=None,
                   help="a line that does not match --format: keep as content-only (default), skip (counted), or "
                        "stop. Given explicitly, keep also lifts the --max-unparsed limit")
    p.add_argument("--max-unparsed", type=float, default=None, metavar="SHARE",
                   help="stop when more than this share of the lines does not match the format (or the family's "
                        "logs) or is not valid UTF-8: a wrong family, format or file (default 0.2; 1: no limit)")
    p.add_argument("--missing-labels", choices=["fail", "drop", "keep"], default="fail",
                   help="sessions missing from --labels: stop (default), drop them (counted) or keep them unlabeled")
    p.add_argument("--label-field", help="header field (or json/logfmt/syslog key) holding the line label")
    p.add_argument("--normal-value", action="append", default=None, metavar="VALUE",
                   help="label value meaning normal (repeatable; default '-')")
    p.add_argument("--session-regex", help="custom: sessions = distinct matches of this regex in the content")
    p.add_argument("--session-field", metavar="KEY",
                   help="json/logfmt/syslog: sessions = the value at this key (dotted for nested keys, e.g. "
                        "ctx.request_id; syslog structured data as sd.ID.PARAM; a JSON array names several); "
                        "records without it are in no session (counted). --labels is keyed by these values")
    p.add_argument("--window", type=int, help="fixed windows of this many lines (default 100 for windowed families)")
    p.add_argument("--step", type=int, help="lines between window starts (default = --window)")
    p.add_argument("--time-window", help="custom: time windows, e.g. 60s, 5m, 1h")
    p.add_argument("--timestamp-field", "--time-field", dest="timestamp_field",
                   help="field(s) holding the time, several joined by ',' (e.g. Date,Time); json/logfmt/syslog: "
                        "its key (syslog default: timestamp)")
    p.add_argument("--timestamp-format", help="strftime format of the timestamp (e.g. '%%y%%m%%d %%H%%M%%S'), or "
                                              "epoch; json/logfmt/syslog default: numbers epoch, strings ISO 8601")
    p.add_argument("--split", choices=["random", "chronological"],
                   help="default: random for sessions, chronological for windows")
    p.add_argument("--train-ratio", type=float, default=0.8, help="share of sequences (or lines) for training (default 0.8)")
    p.add_argument("--val-ratio", type=float, default=0.0,
                   help="share of the training part held out as validation (end of train when chronological; default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    p.add_argument("--start-line", type=int, help="first line to use (1-based, over all --log files in order)")
    p.add_argument("--end-line", type=int, help="last line to use (inclusive)")
    p.add_argument("--max-line-chars", type=int, default=100_000, help="longer messages are truncated, counted (default 100000)")
    p.add_argument("--train", metavar="CSV", help="logllm-csv: the reference code's train CSV (leave it out "
                   "for a test-only folder to evaluate a trained run on)")
    p.add_argument("--test", metavar="CSV", help="logllm-csv: the reference code's test CSV")
    p.add_argument("--val", metavar="CSV", help="logllm-csv: an optional validation CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--session-by", choices=["file", "dir"],
                   help="sessions from the inputs' layout: each file is one (a --log folder stands for its files), "
                        "or each folder under the --log roots is one, its files read in name order. Session ids "
                        "(the --labels keys): the file's path relative to its --log folder (its name when given "
                        "directly), or the folder's name. --window N cuts windows inside each session")
    p.add_argument("--labels-format", choices=["csv", "loghub-hadoop"], default="csv",
                   help="how --labels is read: csv (id,label with a header; default) or loghub-hadoop (Loghub's "
                        "Hadoop abnormal_label.txt: 'Normal:' lists normal applications, other headings anomalous)")
    p.add_argument("--split-by", choices=["sequence", "file", "dir"], default="sequence",
                   help="what --split keeps whole: each sequence (default), or all sequences of one input file / "
                        "one folder, so that no file or folder has sequences in two splits")
    p.set_defaults(func=handler)


def options_from_args(args: argparse.Namespace) -> PrepareOptions:
    """The parsed command line as :class:`PrepareOptions` (checked later by ``resolved()``)."""
    from logllm.data.options import PrepareOptions

    inputs = list(args.log)
    csv_splits: tuple[str, ...] = ()
    if args.family == "logllm-csv":
        if inputs:
            raise ConfigError("logllm-csv takes --train CSV --test CSV [--val CSV], not --log")
        if not args.test:
            raise ConfigError("logllm-csv needs --test CSV, and --train CSV to train on (a folder of --test "
                              "only is scored by `logllm evaluate RUN --data DIR --allow-other-data`)")
        pairs = (([("train", args.train)] if args.train else []) + [("test", args.test)]
                 + ([("val", args.val)] if args.val else []))
        inputs = [p for _, p in pairs]
        csv_splits = tuple(s for s, _ in pairs)
    elif args.train or args.test or args.val:
        raise ConfigError("--train/--test/--val are for the logllm-csv family; use --log for raw logs")
    if args.family == "hdfs" and args.session_regex:
        raise ConfigError("--session-regex is for the custom family (hdfs sessions are block ids)")
    max_unparsed = args.max_unparsed
    if max_unparsed is None:  # an explicit "--on-unparsed keep" says such lines are expected
        max_unparsed = 1.0 if args.on_unparsed == "keep" else 0.2
    return PrepareOptions(
        family=args.family, inputs=tuple(inputs), labels=args.labels, format=args.format,
        message_field=args.message_field, level_field=args.level_field, mask=args.mask,
        on_unparsed=args.on_unparsed or "keep", max_unparsed=max_unparsed, missing_labels=args.missing_labels, label_field=args.label_field,
        normal_values=tuple(args.normal_value) if args.normal_value else ("-",),
        session_regex=args.session_regex, session_field=args.session_field, window=args.window, step=args.step,
        time_window=args.time_window,
        timestamp_field=args.timestamp_field, timestamp_format=args.timestamp_format, split=args.split,
        train_ratio=args.train_ratio, val_ratio=args.val_ratio, seed=args.seed, start_line=args.start_line,
        end_line=args.end_line, max_line_chars=args.max_line_chars, csv_splits=csv_splits,
        session_by=args.session_by, labels_format=args.labels_format, split_by=args.split_by)


def check_out_folder(out: str, what: str = "--out") -> None:
    """Fail before any work when ``out`` cannot become a folder we write: an existing file, a path
    under a file, or a place we cannot write (permissions, read-only file system). A probe file is
    created and removed in the nearest existing folder above ``out`` and in ``out`` if it exists."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {out} is an existing file, not a folder; pass a folder path "
                          "(it is created if missing)")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ConfigError(f"{what} {out}: {above} is a file, not a folder; pass a path under a folder")
    for folder in ([above, path] if path.is_dir() else [above]):
        try:
            fd, probe = tempfile.mkstemp(prefix=".logllm-write-check-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise ConfigError(f"{what} {out}: cannot write in {folder} ({err.strerror or err}); pass a folder "
                              "you can write to") from err


def handler(args: argparse.Namespace) -> int:
    from logllm.data.prepare import prepare

    options = options_from_args(args)
    options.resolved()  # option errors (e.g. --seed -1) before the folder check, both before any reading
    check_out_folder(args.out)
    result = prepare(options, args.out, progress=not (args.no_progress or args.quiet), overwrite=args.overwrite)
    from logllm.data.file_sessions import layout_summary

    print("\n".join([result.summary(), *layout_summary(result.manifest)]))
    return 0
