"""`logllm bench`: the baselines (and a trained LogLLM run) on one prepared folder, side by side."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from logllm.cli._shared import comma_list, method_params
from logllm.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="run the baselines on a prepared folder and write a comparison table",
        description="Run baseline detectors (KNN, DT, LogRobust, CNN, NeuralLog, RAPID, DeepLog, ...) on "
                    "the same prepared folder and splits; write runs.csv, runs.parquet, table.csv, table.md and "
                    "bench.json, updated as each method x seed finishes (--resume finishes a stopped bench).",
    )
    p.add_argument("--data", required=True, type=Path, help="prepared folder (from `logllm prepare`)")
    p.add_argument("--methods", default="all", help="comma list of methods, or `all` (default)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: bench_<data folder name>); "
                   "its files are rewritten after each method x seed, so a stopped bench keeps what finished")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already in --out and run only the missing method x seed cells "
                        "(refused when that folder's data or options differ from this command's)")
    p.add_argument("--set", dest="params", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a method parameter, e.g. logrobust.epochs=10 (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per method (default 1)")
    p.add_argument("--semi-val", choices=["labeled", "normal", "none"], default="labeled",
                   help="what semi-supervised and training-free methods get of the validation split "
                        "(for their threshold): labeled (default), normal sequences only, or none")
    p.add_argument("--pooling", choices=["mean", "pooler", "cls"], default="mean",
                   help="how MiniLM message vectors are pooled for LogRobust/NeuralLog (default mean)")
    p.add_argument("--drain-sim-th", type=float, default=0.4, help="Drain similarity threshold (default 0.4)")
    p.add_argument("--drain-depth", type=int, default=4, help="Drain tree depth (default 4)")
    p.add_argument("--logllm-run", dest="logllm_runs", action="append", default=[], type=Path, metavar="RUN",
                   help="a trained LogLLM run folder to add as the `logllm` row (one, or one per seed)")
    p.add_argument("--allow-other-data", action="store_true",
                   help="accept --data that is not the folder a --logllm-run was trained on (refused otherwise; "
                        "the flag is recorded in the command of bench.json and table.md)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from logllm.baselines.harness import run_bench, to_markdown
    from logllm.baselines.templates import DrainConfig

    if args.threads < 1:
        raise ConfigError(f"--threads {args.threads}: must be at least 1")
    if args.logllm_runs:
        from logllm.data.dataset import PreparedData
        from logllm.data.manifest import check_run_data

        data = PreparedData(args.data)
        for run in args.logllm_runs:
            check_run_data(run, data, allow_other_data=args.allow_other_data, command="bench")
    out = args.out or Path(f"bench_{args.data.resolve().name}")
    table = run_bench(
        args.data, methods=args.methods, seeds=list(comma_list(args.seeds, "--seeds", int)), out=out,
        params=method_params(args.params),
        threads=args.threads, semi_val=args.semi_val,
        drain=DrainConfig(depth=args.drain_depth, sim_th=args.drain_sim_th),
        logllm_runs=args.logllm_runs, pooling=args.pooling, command="logllm " + shlex.join(sys.argv[1:]),
        resume=args.resume,
    )
    print(to_markdown(table), end="")
    print(f"written to {out}/ (table.md, table.csv, runs.csv, runs.parquet, bench.json)")
    return 0
