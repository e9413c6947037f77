"""`logllm experiment`: the paper's tables (II, III, IV, V, Fig. 4, unstable logs) as resumable cells,
and their summary; see logllm.experiment."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from logllm.cli._shared import comma_list, method_params
from logllm.errors import ConfigError

#: `logllm.experiment.plan.TABLES` (repeated so that `logllm --help` stays light)
TABLES = ("baselines", "cost", "inputs", "stages", "beta", "unstable")


def _command(args: argparse.Namespace) -> str:
    """The command line as parsed (so the record is the same however the options were ordered)."""
    parts = ["logllm", "experiment", *args.tables, "--out", str(args.out)]
    for option in ("data", "raw_data", "params"):
        flag = "--set" if option == "params" else "--" + option.replace("_", "-")
        for value in getattr(args, option):
            parts += [flag, value]
    for option in ("seeds", "config", "methods", "inputs", "stages", "betas", "ratios", "holdout_templates", "threads"):
        value = getattr(args, option)
        if value is not None:
            parts += ["--" + option.replace("_", "-"), str(value)]
    return shlex.join(parts)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment", help="run the paper's tables (II-V, Fig. 4, unstable logs) as resumable cells",
        description="Run every missing cell (table, dataset, method, setting, seed) of the named tables into "
                    "--out, one JSON file per finished cell (a finished cell is never run again), then write "
                    "markdown, CSV and figures to OUT/summary/. `summarize` only writes the summary. "
                    "Tables: baselines (II), cost (III, the baselines cells' seconds), inputs (IV), stages (V), "
                    "beta (Fig. 4), unstable (mutated tests and a template holdout).",
    )
    p.add_argument("tables", nargs="+", metavar="TABLE", choices=(*TABLES, "all", "summarize"),
                   help="one or more of: " + ", ".join(TABLES) + ", all; or summarize")
    p.add_argument("--out", required=True, type=Path, metavar="EXPDIR", help="experiment folder (created; reused)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=FOLDER",
                   help="a dataset: prepared folder with {seed} for the seed, e.g. hdfs=prep/hdfs_s{seed} (repeatable)")
    p.add_argument("--raw-data", action="append", default=[], metavar="NAME=FOLDER",
                   help="the same data prepared with --mask none, for Table IV's raw input (else raw is left out)")
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="config file of every LogLLM training (as `logllm train --config`; default the small preset)")
    p.add_argument("--methods", default=None,
                   help="methods of baselines/cost/unstable (comma list; default all bench methods and logllm, "
                        "or logllm,dt,knn,deeplog,logrobust,neurallog for unstable)")
    p.add_argument("--inputs", default=None, help="Table IV input modes (default regex,raw,template,template-id)")
    p.add_argument("--stages", default=None, help="Table V variants (default full,no-1,no-2,no-1-2,no-3)")
    p.add_argument("--betas", default=None, help="Fig. 4 betas (default 0,0.1,0.2,0.3,0.4,0.5)")
    p.add_argument("--ratios", default=None, help="unstable injection ratios (default 0,0.05,0.1,0.2,0.3)")
    p.add_argument("--holdout-templates", type=int, default=4, metavar="K",
                   help="templates held out in the unstable table's holdout setting (default 4; 0 = none)")
    p.add_argument("--set", dest="params", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                   help="a bench method parameter, e.g. logrobust.epochs=10 (repeatable)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (bench methods default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logllm.experiment import ExperimentOptions, parse_data_specs, run_experiment, summarize_experiment

    tables = list(dict.fromkeys(TABLES if "all" in args.tables else args.tables))
    if "summarize" in tables:
        if len(tables) > 1:
            raise ConfigError("summarize: give it alone (`logllm experiment summarize --out EXPDIR`); "
                              "running tables summarizes too")
    else:
        defaults = ExperimentOptions(data={})
        options = ExperimentOptions(
            data=parse_data_specs(args.data), raw_data=parse_data_specs(args.raw_data, "--raw-data"),
            seeds=comma_list(args.seeds, "--seeds", int), config=args.config,
            methods=None if args.methods is None else comma_list(args.methods, "--methods"),
            inputs=defaults.inputs if args.inputs is None else comma_list(args.inputs, "--inputs"),
            stages=defaults.stages if args.stages is None else comma_list(args.stages, "--stages"),
            betas=defaults.betas if args.betas is None else comma_list(args.betas, "--betas", float),
            ratios=defaults.ratios if args.ratios is None else comma_list(args.ratios, "--ratios", float),
            holdout_templates=args.holdout_templates, params=method_params(args.params), threads=args.threads,
        )
        result = run_experiment(tables, options, args.out, command=_command(args))
        print(f"{result.planned} cells: {result.already_done} already finished, {result.ran} run now")
    written = summarize_experiment(args.out)
    for name in sorted(written):
        print(f"wrote {written[name]}")
    return 0
