"""Benchmark the `small` preset: HDFS_2pct (random 80/20, per seed) and the Thunderbird slices (chronological).

Prints one line per (dataset, seed) with precision, recall, F1, ROC-AUC, train and test wall time,
then the mean and spread (sample standard deviation) per dataset, and writes everything to
``--out/results.json``. Calls the library API (logllm.data.prepare, logllm.training, logllm.evaluate).

    .venv/bin/python benchmarks/bench_model.py --datasets hdfs thunderbird --seeds 0 1 2 --out /tmp/bench_model

Prepared folders are made here from ``--data`` (the sample data) unless ``--hdfs-prepared`` /
``--thunderbird-prepared`` point at existing ones (their split seed must match: HDFS's random split
depends on the seed, so a given folder is used only for the seed it was prepared with).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def prepare_hdfs(data: Path, seed: int, out: Path) -> Path:
    from logllm.data.options import PrepareOptions
    from logllm.data.prepare import prepare

    if (out / "manifest.json").is_file():
        return out
    options = PrepareOptions(family="hdfs", inputs=(str(data / "HDFS_2pct" / "HDFS_2pct.log"),),
                             labels=str(data / "HDFS_2pct" / "anomaly_label.csv"), seed=seed, val_ratio=0.1)
    return prepare(options, out).out


def prepare_thunderbird(data: Path, out: Path) -> Path:
    from logllm.data.options import PrepareOptions
    from logllm.data.prepare import prepare

    if (out / "manifest.json").is_file():
        return out
    logs = sorted(str(p) for p in (data / "Thunderbird").glob("Thunderbird_slice_*.log"))  # 11-09 before 11-15
    options = PrepareOptions(family="thunderbird", inputs=tuple(logs), window=100, step=100, val_ratio=0.1)
    return prepare(options, out).out


def run_one(dataset: str, prepared: Path, seed: int, out: Path, threads: int | None, overrides: dict) -> dict:
    import shutil

    from logllm.config import apply_overrides, preset
    from logllm.evaluate import evaluate
    from logllm.training.trainer import train_run
    from logllm.versions import library_versions

    config = apply_overrides(preset("small"), {"seed": seed, "threads": threads, **overrides}).validate()
    run = out / f"{dataset}_seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    trainer = train_run(config, prepared, run, progress=False)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    metrics = evaluate(run, prepared, "test", model=trainer.model)
    test_s = time.perf_counter() - start
    # Validation figures, for choosing between variants without looking at the test split.
    val = evaluate(run, prepared, "val", model=trainer.model) if (Path(prepared) / "val.parquet").is_file() else None
    return {
        "dataset": dataset, "seed": seed,
        "val_f1": val.f1 if val else None, "val_roc_auc": val.roc_auc if val else None,
        "val_pr_auc": val.pr_auc if val else None,
        "score_seq_per_s": metrics.sequences / metrics.seconds if metrics.seconds else None, "precision": metrics.precision, "recall": metrics.recall,
        "f1": metrics.f1, "roc_auc": metrics.roc_auc, "pr_auc": metrics.pr_auc, "threshold": metrics.threshold,
        "threshold_source": metrics.threshold_source, "tp": metrics.tp, "fp": metrics.fp, "fn": metrics.fn,
        "tn": metrics.tn, "test_sequences": metrics.sequences, "train_s": train_s, "test_s": test_s,
        "score_s": metrics.seconds, "steps": trainer.state.global_step, "prepared": str(prepared),
        "threads": threads, "config": config.to_dict(), "versions": library_versions(),
    }


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in ("precision", "recall", "f1", "roc_auc", "val_f1", "val_roc_auc", "train_s", "test_s",
                "score_seq_per_s"):
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = {"mean": statistics.fmean(values) if values else None,
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["hdfs", "thunderbird"], choices=("hdfs", "thunderbird"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--hdfs-prepared", type=Path, default=None, help="prepared HDFS_2pct (for its seed only)")
    parser.add_argument("--thunderbird-prepared", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_model"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--set", default="{}", help="JSON overrides of the small preset (e.g. stage caps)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = json.loads(args.set)
    rows = []
    for dataset in args.datasets:
        for seed in args.seeds:
            if dataset == "hdfs":
                prepared = args.hdfs_prepared
                if prepared is None or json.loads((prepared / "manifest.json").read_text()).get("seed") != seed:
                    prepared = prepare_hdfs(args.data, seed, args.out / f"prepared_hdfs_seed{seed}")
            else:
                prepared = args.thunderbird_prepared or prepare_thunderbird(args.data, args.out / "prepared_thunderbird")
            row = run_one(dataset, prepared, seed, args.out, args.threads, overrides)
            rows.append(row)
            print(f"{dataset} seed {seed}: P {row['precision']:.4f} R {row['recall']:.4f} F1 {row['f1']:.4f} "
                  f"ROC-AUC {row['roc_auc'] if row['roc_auc'] is None else round(row['roc_auc'], 4)} "
                  f"train {row['train_s']:.0f} s test {row['test_s']:.1f} s ({row['steps']} steps)", flush=True)
            (args.out / "results.json").write_text(json.dumps({"runs": rows}, indent=2) + "\n")
    summary = {d: summarise([r for r in rows if r["dataset"] == d]) for d in args.datasets}
    for dataset, s in summary.items():
        print(f"{dataset} (seeds {args.seeds}): " + "  ".join(
            f"{k} {v['mean']:.4f}±{v['std']:.4f}" for k, v in s.items() if v["mean"] is not None))
    (args.out / "results.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
