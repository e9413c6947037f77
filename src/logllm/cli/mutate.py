"""`logllm mutate`: a new prepared folder with an unstable test split (LogRobust-style mutations) and/or
a template-holdout split; see logllm.data.mutate."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mutate", help="copy a prepared folder with its test split mutated (unstable logs) or templates held out",
        description="Write a NEW prepared folder from PREPARED: the test split's sequences are mutated at "
                    "--ratio (message rewrites and/or event duplication, removal and swaps), seeded; train "
                    "and val are copied byte for byte (unless --holdout-templates re-splits). A run trained "
                    "on PREPARED evaluates on the new folder without --allow-other-data.",
    )
    p.add_argument("prepared", type=Path, metavar="PREPARED", help="prepared folder (from `logllm prepare`)")
    p.add_argument("--out", required=True, type=Path, help="new prepared folder to write")
    p.add_argument("--ratio", type=float, default=0.0,
                   help="share of test sequences mutated per kind, 0..1 (default 0: a copy)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    p.add_argument("--kinds", default="message,sequence",
                   help="comma list of mutation kinds: message, sequence (default both)")
    p.add_argument("--holdout-templates", type=int, default=0, metavar="K",
                   help="hold K message ids (half normal, half anomalous-only) out of train/val: their "
                        "sequences move to test (default 0: no re-split)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing prepared folder at --out")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from logllm.data.mutate import MutateOptions, mutate_prepared

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    options = MutateOptions(ratio=args.ratio, seed=args.seed, kinds=kinds,  # type: ignore[arg-type]
                            holdout_templates=args.holdout_templates)
    manifest = mutate_prepared(args.prepared, args.out, options, overwrite=args.overwrite)
    record = manifest["mutation"]
    for kind, counts in record["counts"].items():
        print(f"{kind}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if record["holdout"]:
        h = record["holdout"]
        print(f"held out {len(h['normal'])} normal and {len(h['anomalous'])} anomalous templates; moved to test: "
              + ", ".join(f"{k} {v}" for k, v in h["moved_to_test"].items()))
    print(f"wrote {args.out} ({record['new_messages']} new messages)")
    return 0
