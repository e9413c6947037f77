"""`logllm score` throughput: lines/s in-process against Ray Data with N scoring actors.

    .venv/bin/python benchmarks/bench_score.py --run out/run_small \
        --log ../shared/data/HDFS_2pct/HDFS_2pct.log --repeat 10 --workers 2

The log is copied ``--repeat`` times into a temporary folder (copies, not links: `score` reads a file
named twice once), so there are that many files, the units Ray spreads over its CPU tasks. Each engine
scores the copies into its own output folder; the script prints lines, seconds and lines/s per engine
(Ray's start-up and model loading are inside the totals), whether both wrote the same sequences
and labels, the largest score difference, and the load average before and after. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from logllm.score import ScoreOptions, score_archives


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run folder (`logllm train`)")
    ap.add_argument("--log", required=True, help="a raw log the run reads")
    ap.add_argument("--repeat", type=int, default=10, help="copies of the log (files to score)")
    ap.add_argument("--workers", type=int, default=2, help="Ray scoring actors")
    ap.add_argument("--engines", default="local,ray", help="comma-separated: local, ray")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--tmp", default=None, help="folder for the copies and outputs (default: a temporary one)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        root = Path(tmp)
        files = []
        for i in range(args.repeat):
            dst = root / "logs" / f"copy{i:02d}_{Path(args.log).name}"
            dst.parent.mkdir(exist_ok=True)
            shutil.copyfile(args.log, dst)
            files.append(str(dst))
        print(f"{args.repeat} copies of {args.log}; run {args.run}; load average {os.getloadavg()}; "
              f"{os.cpu_count()} CPUs")
        outs = {}
        for engine in args.engines.split(","):
            # Copies of one log are not a rotated log: their sessions are kept per file, as when measured.
            options = ScoreOptions(engine=engine, workers=args.workers, batch_size=args.batch_size,  # type: ignore[arg-type]
                                   per_file_sessions=True)
            t = time.perf_counter()
            s = score_archives(args.run, files, root / engine, options)
            wall = time.perf_counter() - t
            lines = s.totals["lines_read"]
            print(f"{engine:>5} ({s.workers} scorer{'s' if s.workers > 1 else ''}): {lines:,} lines, "
                  f"{s.totals['sequences']:,} sequences, {s.flagged:,} flagged in {wall:.1f} s "
                  f"(incl. start-up and model loading) -> {lines / wall:,.0f} lines/s; "
                  f"load average {os.getloadavg()}")
            outs[engine] = pl.read_parquet(root / engine / "detections" / "*.parquet")
        if len(outs) == 2:
            a, b = outs.values()
            rows = a.drop("score").equals(b.drop("score"))
            diff = float((a["score"] - b["score"]).abs().max()) if rows else float("nan")
            print(f"same sequences, line numbers and labels in both engines: {rows}; "
                  f"largest score difference {diff:.2e}")


if __name__ == "__main__":
    main()
