"""`logllm evaluate`: score one split of a prepared folder with a trained run and write its metrics."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="metrics of a trained run on one split (precision, recall, F1, ROC-AUC, ...)",
        description="Score every sequence of a split with the run's model and its decision threshold "
                    "(chosen on validation data at training time, never on the evaluated split). Writes "
                    "RUN/eval/<split>/metrics.json and scores.parquet.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run folder written by `logllm train`")
    p.add_argument("--data", required=True, type=Path, help="prepared folder (from `logllm prepare`)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to evaluate")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per scoring batch (speed only)")
    p.add_argument("--allow-other-data", action="store_true",
                   help="evaluate on a prepared folder other than the one the run was trained on (refused "
                        "otherwise; recorded in metrics.json as other_data)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logllm.evaluate import evaluate

    metrics = evaluate(args.run, args.data, args.split, batch_size=args.batch_size,
                       allow_other_data=args.allow_other_data)
    print(metrics.summary())
    print(f"wrote {args.run / 'eval' / args.split / 'metrics.json'} and scores.parquet")
    return 0
