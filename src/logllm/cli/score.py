"""`logllm score RUN INPUT ... --out DIR`: score whole log archives (in-process or on Ray), as parquet."""

from __future__ import annotations

import argparse
import sys

from logllm.cli._shared import add_preprocessing_overrides, preprocessing_overrides


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score many log files (plain or .gz; globs, folders) with a trained run; parquet out, on Ray or not",
        description="Read raw log files (files, globs or folders; plain or gzip), apply the run's own "
        "preprocessing (as `logllm detect`: windows per file; key sessions joined across the files by their key), "
        "score every sequence, and write OUT/detections/*.parquet (part-NNNNN: one per input file; "
        "sessions-NNNNN for joined sessions; the columns of detect's JSON without 'top') and OUT/summary.json. --engine ray runs the files as CPU tasks and the scoring in a pool of actors "
        "on Ray Data (pip install 'logllm[scale]'); the output is the same. A file that cannot be read is "
        "named in the summary, the others are scored, and the exit code is 1.",
    )
    p.add_argument("run", help="the run folder written by `logllm train`")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="log files, globs ('logs/*.gz') or folders")
    p.add_argument("--out", required=True, help="output folder (detections/ and summary.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result in --out")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: Ray Data, CPU tasks per file and scoring actors")
    p.add_argument("--workers", type=int, default=2,
                   help="scoring actors with --engine ray, each loading the run once (1 GPU each where the "
                   "cluster has GPUs; default 2)")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (e.g. 'ray://head:10001'); default: start a local one and shut it down")
    p.add_argument("--threshold", type=float, default=None,
                   help="decision threshold on P(anomalous) (default: the run's threshold.json)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per model call (speed only)")
    p.add_argument("--max-line-bytes", type=int, default=1 << 20, help="longer lines are cut (counted)")
    p.add_argument("--max-open-sessions", type=int, default=100_000,
                   help="bound on open sessions (in-process: all files; Ray: per file, where it only splits a "
                   "file's session parts); the least recently active is scored early (counted)")
    p.add_argument("--per-file-sessions", action="store_true",
                   help="key sessions (--session-regex, HDFS blk_ ids) per file; default: one session per key "
                   "across all the files, as `logllm detect` builds it")
    add_preprocessing_overrides(p, "preprocessing overrides (default: the run's, from its data manifest; as in detect)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logllm.score import ScoreOptions, score_archives

    overrides = preprocessing_overrides(args)
    options = ScoreOptions(engine=args.engine, workers=args.workers, address=args.address, threshold=args.threshold,
                           batch_size=args.batch_size, overrides={k: v for k, v in overrides.items() if v is not None},
                           max_line_bytes=args.max_line_bytes, max_open_sessions=args.max_open_sessions,
                           overwrite=args.overwrite, per_file_sessions=args.per_file_sessions)
    s = score_archives(args.run, args.inputs, args.out, options)
    t = s.totals
    print(f"logllm score: {s.files_scored}/{s.files} files, {t['lines_read']:,} lines "
          f"({s.lines_per_second:,.0f} lines/s, {s.engine}), {t['sequences']:,} sequences, {s.flagged:,} flagged "
          f"(threshold {s.threshold:.4g})"
          + (f", {s.sessions_across_files:,} sessions across files" if s.session_scope == "across-files" else "")
          + f" -> {args.out}", file=sys.stderr)
    for failed in s.files_failed:
        from logllm.follow import printable

        print(f"logllm score: failed: {printable(failed['path'])}: {printable(failed['error'])}", file=sys.stderr)
    return 1 if s.files_failed else 0
