"""`logllm report RUN [--data DIR]`: one self-contained HTML page about a run."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="write an HTML report of a run (curves, histograms, confusion matrix, training loss)",
        description="Write one self-contained HTML file (figures embedded) about a trained and evaluated run: "
        "precision-recall and ROC curves, score histograms per class with the threshold, the confusion matrix, "
        "training loss per stage, the masked messages most associated with anomalies (with --data), and the "
        "run's configuration and library versions.",
    )
    p.add_argument("run", help="the run folder written by `logllm train` and `logllm evaluate`")
    p.add_argument("--data", default=None,
                   help="the prepared folder the run used: adds the message/anomaly association and lets the "
                   "report score a split that was not evaluated")
    p.add_argument("--split", action="append", default=None,
                   help="split(s) to show (repeatable; default: every RUN/eval/<split> found, test first)")
    p.add_argument("--allow-other-data", action="store_true",
                   help="accept a --data folder other than the one the run was trained on (refused otherwise)")
    p.add_argument("--out", default=None, help="output HTML file (default: RUN/report.html)")
    p.add_argument("--top-messages", type=int, default=20, help="rows in the message association table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logllm.report import build_report

    if args.data is not None:
        from logllm.data.dataset import PreparedData
        from logllm.data.manifest import check_run_data

        check_run_data(args.run, PreparedData(args.data), allow_other_data=args.allow_other_data, command="report")
    path = build_report(args.run, data_dir=args.data, splits=args.split, out=args.out,
                        top_messages=args.top_messages)
    print(path, file=sys.stdout)
    return 0
