"""`logllm report RUN [--data DIR]`: one self-contained HTML page about a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML report of a run (timeline, flagged sequences, curves, confusion matrix, training loss)",
        description="Write one self-contained HTML file (figures embedded) about a trained and evaluated run: "
        "a timeline of scores per sequence with the threshold, the flagged sequences with the lines that explain "
        "them (with --data), precision-recall and ROC curves, score histograms per class, the confusion matrix, "
        "training loss per stage, the masked messages most associated with anomalies (with --data), the bench "
        "table when one is found, and the run's configuration and library versions. A split where every "
        "sequence gets the same prediction is marked with a warning.",
    )
    p.add_argument("run", help="the run folder written by `logllm train` and `logllm evaluate`")
    p.add_argument("--data", default=None,
                   help="the prepared folder the run used: adds the timeline by line number, the flagged sequences' "
                   "lines and explanations, the message/anomaly association, and lets the report score a split that "
                   "was not evaluated")
    p.add_argument("--split", action="append", default=None,
                   help="split(s) to show (repeatable; default: every RUN/eval/<split> found, test first)")
    p.add_argument("--allow-other-data", action="store_true",
                   help="accept a --data folder other than the one the run was trained on (refused otherwise)")
    p.add_argument("--out", default=None, help="output HTML file (default: RUN/report.html)")
    p.add_argument("--top-messages", type=int, default=20, help="rows in the message association table (default 20)")
    p.add_argument("--flagged-rows", type=int, default=20,
                   help="flagged sequences listed per split, highest score first (default 20)")
    p.add_argument("--explain-top", type=int, default=5,
                   help="explain the N highest-scoring flagged sequences line by line with the run's model "
                   "(leave-one-out; one scoring per line of each); 0 disables and does not load the model (default 5)")
    p.add_argument("--top-lines", type=int, default=3, help="lines listed per explained sequence (default 3)")
    p.add_argument("--bench", type=Path, default=None,
                   help="a `logllm bench` output folder to show (default: RUN/bench, DATA/bench or bench_<DATA name> "
                   "beside DATA or in the working folder, when one holds table.csv)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per model call while explaining (speed only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logllm.report import ReportOptions, build_report

    options = ReportOptions(top_messages=args.top_messages, flagged_rows=args.flagged_rows,
                            explain_top=args.explain_top, top_lines=args.top_lines, bench=args.bench,
                            batch_size=args.batch_size)
    if args.data is not None:
        from logllm.data.dataset import PreparedData
        from logllm.data.manifest import check_run_data

        check_run_data(args.run, PreparedData(args.data), allow_other_data=args.allow_other_data, command="report")
    path = build_report(args.run, data_dir=args.data, splits=args.split, out=args.out, options=options)
    print(path, file=sys.stdout)
    return 0
