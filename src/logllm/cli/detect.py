"""`logllm detect RUN [FILE ...|-]`: score raw log lines with a trained run, one JSON object per sequence."""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any

from logllm.cli._shared import add_preprocessing_overrides, preprocessing_overrides


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "detect",
        help="score raw log lines (files, stdin, or --follow a growing file) with a trained run",
        description="Read raw log lines, apply the run's own preprocessing (format, masking, windows or sessions; "
        "recorded in RUN/data_manifest.json, and overridable with the same options as `prepare`), score each "
        "sequence when it completes, and write one JSON object per scored sequence: source file, first and last "
        "line numbers, sequence id, score, label at the threshold, and the top-k lines behind the score "
        "(leave-one-out contributions). A summary goes to stderr at the end.",
    )
    p.add_argument("run", help="run folder written by `logllm train`")
    p.add_argument("files", nargs="*", default=[], metavar="FILE",
                   help="log files to read in order ('-' or nothing: standard input)")
    out = p.add_argument_group("output")
    out.add_argument("--out", default=None, help="write detections here instead of stdout")
    out.add_argument("--format", dest="output_format", choices=["json", "table"], default="json",
                     help="json: one object per line (default); table: a readable line per sequence")
    out.add_argument("--only-anomalies", action="store_true", help="write flagged sequences only")
    out.add_argument("--threshold", type=float, default=None,
                     help="decision threshold on the run's score: P(anomalous) for LogLLM and the classifiers, "
                          "in [0, 1] (default: the run's threshold.json)")
    out.add_argument("--top-k", type=int, default=3, help="explanation lines per sequence (0: none)")
    out.add_argument("--explain", choices=["flagged", "all", "none"], default="flagged",
                     help="which sequences get explanations (each costs one scoring per line)")
    out.add_argument("--explain-by", choices=["position", "text"], default="position",
                     help="leave out one line at a time (position, default) or every line of a masked "
                          "message at once (text)")
    out.add_argument("--explain-repeats", action="store_true",
                     help="let the top-k list the same masked message more than once (default: each "
                          "listed line is the best-ranked line of a different message)")
    out.add_argument("--batch-size", type=int, default=64, help="sequences per model call (speed only)")
    rd = p.add_argument_group("reading")
    rd.add_argument("--follow", "-f", action="store_true",
                    help="keep reading the files as they grow, like `tail -F` (survives rotation and truncation); "
                    "stop with Ctrl-C or SIGTERM")
    rd.add_argument("--from-end", action="store_true", help="with --follow: skip what the files hold already")
    rd.add_argument("--poll-interval", type=float, default=0.25, help="seconds between checks in --follow mode")
    rd.add_argument("--session-timeout", type=float, default=None,
                    help="score a session after this many idle seconds (log time from --timestamp-field, and "
                    "wall-clock time while following; default: at end of input, or 300 s with --follow)")
    rd.add_argument("--start-line", type=int, default=None, help="skip lines before this one (1-based, per file)")
    rd.add_argument("--end-line", type=int, default=None, help="stop after this line (inclusive, per file)")
    rd.add_argument("--max-line-bytes", type=int, default=1 << 20, help="longer lines are cut (counted)")
    rd.add_argument("--max-open-sessions", type=int, default=100_000,
                    help="bound on open sessions; the least recently active is scored early (counted)")
    rd.add_argument("--per-file-sessions", action="store_true",
                    help="key sessions (--session-regex, HDFS blk_ ids) per file; default: one session per key "
                    "across all the files, its lines in file order (spans name each file's range)")
    add_preprocessing_overrides(p, "preprocessing overrides (default: the run's, from its data manifest)")
    p.set_defaults(func=run)


def _table_row(d: dict[str, Any]) -> str:
    """A detection for a terminal: control characters of the log line (and path) are escaped."""
    from logllm.follow import printable

    flag = "ANOMALY" if d["anomalous"] else "normal "
    spans = d.get("spans") or [{"source": d["source"], "first_line": d["first_line"], "last_line": d["last_line"]}]
    where = " + ".join(f"{printable(s['source'])}:{s['first_line']}-{s['last_line']}" for s in spans[:3])
    if len(spans) > 3:
        where += f" + {len(spans) - 3} more"
    head = f"{flag} {d['score']:.4f}  {where}  ({d['lines']} lines, {d['reason']})"
    rows = [head]
    several = len({s["source"] for s in spans}) > 1
    for t in d["top"]:
        line = f"{printable(t['source'])}:{t['line']}" if several and "source" in t else str(t["line"])
        rows.append(f"    {line:>8}  {t['contribution']:+.4f}  {printable(t['text'][:160])}")
    return "\n".join(rows)


def _check_args(args: argparse.Namespace) -> None:
    """Options a user can get wrong, checked before the model loads (one clear line, exit 2)."""
    import math

    from logllm.errors import ConfigError

    if args.threshold is not None and not math.isfinite(args.threshold):  # [0, 1] checked once the run's method is known
        raise ConfigError(f"--threshold must be a finite number, got {args.threshold}")
    positive = {"--top-k": (args.top_k, 0), "--batch-size": (args.batch_size, 1),
                "--max-line-bytes": (args.max_line_bytes, 1), "--max-open-sessions": (args.max_open_sessions, 1),
                "--start-line": (args.start_line, 1), "--end-line": (args.end_line, 1)}
    for name, (value, least) in positive.items():
        if value is not None and value < least:
            raise ConfigError(f"{name} must be >= {least}, got {value}")
    if args.start_line and args.end_line and args.end_line < args.start_line:
        raise ConfigError(f"--end-line {args.end_line} is before --start-line {args.start_line}")
    for name, value in (("--poll-interval", args.poll_interval), ("--session-timeout", args.session_timeout)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name} must be > 0 seconds, got {value}")
    if args.out is not None:
        from pathlib import Path

        out = Path(args.out)
        if out.is_dir() or not out.parent.is_dir():
            raise ConfigError(f"--out {args.out}: " + ("is a folder" if out.is_dir() else "its folder does not exist")
                              + "; give a file path for the detections")
    if args.from_end and not args.follow:
        raise ConfigError("--from-end only applies with --follow (it skips what a followed file holds already)")


def _in_range(start: int | None, end: int | None):
    def keep(line) -> bool:
        return (start is None or line.line_number >= start) and (end is None or line.line_number <= end)

    return keep


def run(args: argparse.Namespace) -> int:
    import logging
    import threading

    from logllm.detect import Detector
    from logllm.errors import ConfigError
    from logllm.follow import LineReader, stop_on_signals

    log = logging.getLogger("logllm.detect")
    _check_args(args)
    stop = threading.Event()
    # Built first: it checks the files (and --follow with stdin) before the model loads.
    reader = LineReader(args.files or ["-"], follow=args.follow, poll_interval=args.poll_interval,
                        max_line_bytes=args.max_line_bytes, from_end=args.from_end, stop=stop)
    overrides = preprocessing_overrides(args)
    timeout = args.session_timeout
    if timeout is None and args.follow:
        timeout = 300.0
    # Standard input may be a live pipe (`tail -f x | logllm detect RUN -`): an explicit
    # --session-timeout then also counts wall-clock silence, as in follow mode.
    wall_clock = args.follow or ("-" in reader.paths and args.session_timeout is not None)
    detector = Detector.from_run(
        args.run, threshold=args.threshold, overrides=overrides, session_timeout=timeout,
        top_k=args.top_k, explain=args.explain, explain_by=args.explain_by,
        explain_repeats=args.explain_repeats, batch_size=args.batch_size,
        max_open_sessions=args.max_open_sessions, wall_clock_timeout=wall_clock,
        per_file_sessions=args.per_file_sessions,
    )
    keep = _in_range(args.start_line, args.end_line)
    try:
        sink: IO[str] = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
    except OSError as err:
        raise ConfigError(f"--out {args.out}: cannot write there ({err.strerror}); give a writable file path") from err
    written = 0
    try:
        with stop_on_signals(stop):
            detector.stats.started = __import__("time").monotonic()
            for det in _run(detector, reader, keep, args.end_line, stop):
                if args.only_anomalies and not det.anomalous:
                    continue
                d = det.to_dict()
                sink.write((_table_row(d) if args.output_format == "table" else json.dumps(d, ensure_ascii=False))
                           + "\n")
                sink.flush()  # a follower (or a pipe) sees each detection as soon as it is made
                written += 1
    except BrokenPipeError:  # e.g. `| head`: stop quietly
        sys.stderr.close()
        return 0
    finally:
        if args.out:
            sink.close()
    summary = detector.stats.summary()
    summary.update(written=written, rotations=reader.stats.rotations, truncations=reader.stats.truncations,
                   cut_lines=reader.stats.cut_lines)
    skipped = {k: summary[k] for k in ("empty", "binary", "invalid_utf8", "unparsed", "unparsed_skipped",
                                         "no_session_key", "evicted_sessions", "cut_lines") if summary.get(k)}
    print(f"logllm detect: {summary['lines_read']:,} lines read ({summary['lines_per_second']:,.0f} lines/s), "
          f"{summary['sequences_scored']:,} sequences scored, {summary['flagged']:,} flagged "
          f"(threshold {detector.threshold:.4g}), {written:,} written"
          + (f", {summary['sessions_across_files']:,} sessions across files" if summary["sessions_across_files"] else "")
          + (f"; odd lines: {json.dumps(skipped)}" if skipped else ""), file=sys.stderr)
    log.debug("summary: %s", summary)
    return 0


def _run(detector, reader, keep, end_line, stop):
    """Feed the reader's batches, restricted to the line range, to the detector."""
    for batch in reader.batches():
        if not batch:
            yield from detector.tick()
            continue
        kept = [line for line in batch if keep(line)]
        if kept:
            yield from detector.feed(kept)
        if end_line is not None and not reader.follow and len(reader.paths) == 1 and batch[-1].line_number >= end_line:
            stop.set()  # past the range of the only file: the rest need not be read
    yield from detector.finish()
