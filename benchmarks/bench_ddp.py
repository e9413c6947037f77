"""Training steps per second with 1 and N processes at the same global batch (data-parallel, gloo on CPU).

Trains the `small` preset's stage 3 (encoder, projector and decoder all training; stages 1, 2a and 2b
skipped) for ``--steps`` optimiser steps of ``--micro-batch x --grad-accum`` sequences, once as one
process (``logllm train``) and once per other count in ``--processes`` through ``accelerate launch
--multi_gpu --num_processes N`` (torchrun underneath; logllm uses gloo without a GPU). The CPU threads
are shared out: one process gets ``--cores`` threads, N processes ``--cores / N`` each (``--threads``
sets the threads of every process instead: ``--processes 1 --threads 1`` is one process on one core). Steps/s is
measured from train_log.jsonl's per-step ``elapsed``, after ``--warmup`` steps, so start-up, the
stage-end checkpoint and the threshold are left out. Prints one row per process count, and the load
average before and after (the machine may be shared).

    .venv/bin/python benchmarks/bench_ddp.py --data out/hdfs_2pct --cores 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(args: argparse.Namespace, folder: Path) -> Path:
    from logllm.config import apply_overrides, preset

    skip = [{"name": n, "skip": True} for n in ("1", "2a", "2b")]
    config = apply_overrides(preset("small"), {
        "seed": args.seed, "micro_batch": args.micro_batch, "grad_accum": args.grad_accum, "checkpoint_every": 0,
        "stages": [*skip, {"name": "3", "epochs": 1, "max_samples": args.steps * args.micro_batch * args.grad_accum}],
    }).validate()
    return config.save(folder / "config.json")


def _threads(n: int, args: argparse.Namespace) -> int:
    return args.threads or max(1, args.cores // n)


def _run(n: int, args: argparse.Namespace, config: Path, run: Path) -> float:
    """Train with ``n`` processes; returns steps/s after the warm-up steps."""
    threads = _threads(n, args)
    train = ["-m", "logllm", "-q", "train", "--data", str(args.data), "--out", str(run), "--config", str(config),
             "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1"}
    if n == 1:
        cmd = [sys.executable, *train, "--threads", str(threads)]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), *train]
    subprocess.run(cmd, env=env, check=True)
    steps = [r for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    timed = steps[args.warmup - 1:] if args.warmup else [{"elapsed": 0.0}, *steps]
    return (len(timed) - 1) / (timed[-1]["elapsed"] - timed[0]["elapsed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="prepared folder (logllm prepare)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to time")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU cores shared by the processes")
    parser.add_argument("--threads", type=int, default=None, help="threads of every process (default: cores / N)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=2, help="global: micro-batches per step over all processes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.steps <= args.warmup:
        parser.error(f"--steps {args.steps} must exceed --warmup {args.warmup}")
    bad = [n for n in args.processes if n < 1 or args.grad_accum % n]
    if bad:
        parser.error(f"--processes {bad}: each count must divide --grad-accum {args.grad_accum} (the micro-batches "
                     "of a step are dealt out to the processes)")

    global_batch = args.micro_batch * args.grad_accum
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(args, Path(tmp))
        for n in args.processes:
            t0 = time.perf_counter()
            rate = _run(n, args, config, Path(tmp) / f"run{n}")
            rows.append((n, rate, time.perf_counter() - t0))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"small preset, stage 3, global batch {global_batch} ({args.micro_batch} x {args.grad_accum}), "
          f"{args.steps} steps ({args.warmup} warm-up), {args.cores} cores")
    print("| processes | threads each | steps/s | sequences/s | speed-up | wall s (with start-up) |")
    print("|---|---|---|---|---|---|")
    base = rows[0][1]
    for n, rate, wall in rows:
        print(f"| {n} | {_threads(n, args)} | {rate:.3f} | {rate * global_batch:.2f} | {rate / base:.2f}x "
              f"| {wall:.0f} |")


if __name__ == "__main__":
    main()
