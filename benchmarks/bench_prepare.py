"""Speed and peak memory of `logllm prepare` against a plain-Python version of the reference approach.

    .venv/bin/python benchmarks/bench_prepare.py [--data ../shared/data] [--repeat 3] [--reference-repeat 3]
                                                 [--reference-10x]

Implementations: logllm (with its C line scanner, as installed), logllm-numpy (the same code with
LOGLLM_NO_C=1: the numpy/polars path that stands in where the scanner could not be compiled), and the
plain-Python reference approach (below), spelled two ways.

Cases: HDFS_2pct; HDFS_2pct repeated 10 times (block ids made distinct per copy; generated under
/tmp, never in the repository); the two Thunderbird slices (100-line windows). Every run is a fresh
subprocess; its time is measured inside it around the prepare call (imports excluded, file cache warm),
its peak memory is the process's max RSS (getrusage). Each figure is the median over its runs, and
the runs of logllm and of the reference alternate (round 1 of each, then round 2, ...), so the ratio
is not skewed by the machine slowing down for a while. The reference approach is what the paper's code
does, in plain Python: per line a Loghub regex with named groups, masking with Python `re` (the same
mask classes as logllm), sessions as a dict of lists (windows as list slices), labels from the CSV,
a seeded shuffle split, CSV output with messages joined by ' ;-; '. It caches nothing (each parsed line
is masked once) and skips the paper code's pandas row loops and CSV round trips, so it is, if anything,
faster than the paper's code: the ratios it gives are conservative.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEN_DIR = Path(tempfile.gettempdir()) / "logllm-bench-prepare"


# ---- generated input ------------------------------------------------------------------------------
def make_hdfs_10x(data: Path) -> tuple[Path, Path]:
    """HDFS_2pct 10 times; copy k appends digit k to every block id (log and labels alike)."""
    GEN_DIR.mkdir(parents=True, exist_ok=True)
    log, labels = GEN_DIR / "HDFS_2pct_x10.log", GEN_DIR / "anomaly_label_x10.csv"
    if log.exists() and labels.exists():
        return log, labels
    raw = (data / "HDFS_2pct" / "HDFS_2pct.log").read_bytes()
    lab = (data / "HDFS_2pct" / "anomaly_label.csv").read_bytes().split(b"\n", 1)
    with open(log, "wb") as f, open(labels, "wb") as g:
        g.write(lab[0] + b"\n")
        for k in range(10):
            suffix = str(k).encode()
            f.write(re.sub(rb"(blk_-?\d+)", rb"\g<1>" + suffix, raw))
            g.write(re.sub(rb"(blk_-?\d+)", rb"\g<1>" + suffix, lab[1]))
    return log, labels


def cases(data: Path) -> dict[str, dict]:
    tb = data / "Thunderbird"
    log10, lab10 = make_hdfs_10x(data)
    return {
        "HDFS_2pct": {"family": "hdfs", "inputs": [str(data / "HDFS_2pct" / "HDFS_2pct.log")],
                      "labels": str(data / "HDFS_2pct" / "anomaly_label.csv")},
        "HDFS_2pct_x10": {"family": "hdfs", "inputs": [str(log10)], "labels": str(lab10)},
        "Thunderbird_slices": {"family": "thunderbird", "inputs": [
            str(tb / "Thunderbird_slice_20051109_10219.log"), str(tb / "Thunderbird_slice_20051115_19350.log")]},
    }


# ---- workers (run in a subprocess) ---------------------------------------------------------------------
def worker_logllm(case: dict, out: str) -> dict:
    from logllm.data import linescan
    from logllm.data.prepare import PrepareOptions, prepare

    if "LOGLLM_NO_C" not in os.environ and not linescan.available():
        raise SystemExit("the C line scanner is not built: run `pip install -e .` where a C compiler is present")

    opts = PrepareOptions(family=case["family"], inputs=tuple(case["inputs"]), labels=case.get("labels"), seed=0)
    t, c = time.perf_counter(), time.process_time()
    result = prepare(opts, out)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    m = result.manifest
    return {"seconds": seconds, "cpu_seconds": cpu, "lines": m["lines"], "sequences": m["sequences"],
            "distinct_messages": m["distinct_messages"]}


def reference_pattern(spelling: str) -> str:
    """The mask classes for Python ``re``: 'ascii' = exactly logllm's pattern; 'unicode' = the same
    classes spelled as the paper's code spells them (``\\b``, ``\\s``, ``\\d``, ``\\w``, Python's
    default Unicode semantics; same output on ASCII logs such as HDFS)."""
    from logllm.data.masking import PYTHON_PATTERN

    if spelling == "ascii":
        return PYTHON_PATTERN
    return (PYTHON_PATTERN.replace("(?a:\\b)", "\\b").replace("[ \\t\\n\\r\\f\\v]", "\\s")
            .replace("[0-9]", "\\d").replace("[A-Za-z0-9_.]", "[\\w.]"))


def worker_reference(case: dict, out: str, spelling: str = "unicode") -> dict:
    import csv
    import random

    from logllm.data.formats import FAMILY_FORMATS
    from logllm.data.masking import DOTS_PATTERN

    t, c = time.perf_counter(), time.process_time()
    # Loghub's generate_logformat_regex, re-stated: fields lazy, spaces -> \s+, anchored.
    pieces = re.split(r"(<[^<>]+>)", FAMILY_FORMATS[case["family"]])
    rx = "".join(f"(?P<{p[1:-1]}>.*?)" if i % 2 else r"\s+".join(re.escape(x) for x in re.split(" +", p))
                 for i, p in enumerate(pieces))
    line_rx = re.compile("^" + rx + "$")
    mask_rx, dots_rx = re.compile(reference_pattern(spelling)), re.compile(DOTS_PATTERN)
    rows = []
    for path in case["inputs"]:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = line_rx.match(line.rstrip("\n"))
                if m:
                    rows.append(m.groupdict())
    for r in rows:
        r["Masked"] = mask_rx.sub("<*>", dots_rx.sub(".. ", r["Content"]))
    sequences: list[tuple[str, list[str], int]] = []
    if case["family"] == "hdfs":
        with open(case["labels"]) as f:
            labels = {r["BlockId"]: int(r["Label"] == "Anomaly") for r in csv.DictReader(f)}
        blk_rx = re.compile(r"blk_-?\d+")
        sessions: dict[str, list[str]] = {}
        for r in rows:
            for b in set(blk_rx.findall(r["Content"])):
                sessions.setdefault(b, []).append(r["Masked"])
        sequences = [(b, msgs, labels[b]) for b, msgs in sessions.items()]
        random.Random(0).shuffle(sequences)
        n_train = int(len(sequences) * 0.8)
        splits = {"train": sequences[:n_train], "test": sequences[n_train:]}
    else:
        n_train = int(len(rows) * 0.8)
        splits = {}
        for name, part in (("train", rows[:n_train]), ("test", rows[n_train:])):
            splits[name] = [(f"w{i}", [r["Masked"] for r in part[i:i + 100]],
                             int(any(r["Label"] != "-" for r in part[i:i + 100]))) for i in range(0, len(part), 100)]
    os.makedirs(out, exist_ok=True)
    for name, seqs in splits.items():
        with open(Path(out) / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["Content", "Label"])
            for _, msgs, label in seqs:
                w.writerow([" ;-; ".join(msgs), label])
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    return {"seconds": seconds, "cpu_seconds": cpu, "lines": len(rows), "sequences": sum(len(s) for s in splits.values()),
            "distinct_messages": len({r["Masked"] for r in rows})}


def run_worker(kind: str, name: str, case: dict) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
        env.pop("LOGLLM_NO_C", None)
        if kind == "logllm-numpy":
            env["LOGLLM_NO_C"] = "1"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--worker", kind, "--case", json.dumps(case), "--out", out],
                              capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{kind} {name} failed:\n{proc.stderr}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=3, help="logllm runs per case (median time, max peak RSS)")
    ap.add_argument("--reference-repeat", type=int, default=3,
                    help="runs of each reference version per case (median time), interleaved with logllm's")
    ap.add_argument("--reference-10x", action="store_true", help="also run the reference on the 10x file (slow)")
    ap.add_argument("--only", nargs="*", help="case names to run")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        case = json.loads(args.case)
        if args.worker in ("logllm", "logllm-numpy"):
            res = worker_logllm(case, args.out)
        else:
            res = worker_reference(case, args.out, "ascii" if args.worker == "reference-ascii" else "unicode")
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    from logllm.versions import library_versions

    all_cases = cases(Path(args.data))
    names = args.only or list(all_cases)
    print(f"# bench_prepare  repeat={args.repeat}  reference_repeat={args.reference_repeat}  cpus={os.cpu_count()}  "
          f"load={os.getloadavg()[0]:.1f}")
    print(f"# versions: {json.dumps(library_versions())}")
    print("| case | impl | lines | sequences | messages | call s | CPU s | process s | lines/s | peak RSS MB "
          "| speed-up (call; CPU) vs reference / reference-ascii |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in names:
        case = all_cases[name]
        kinds = {"logllm": args.repeat, "logllm-numpy": args.repeat}
        if name != "HDFS_2pct_x10" or args.reference_10x:
            kinds.update({"reference": args.reference_repeat, "reference-ascii": args.reference_repeat})
        # Rounds interleave the implementations, so a slow spell of the machine hits both sides.
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for round_ in range(max(kinds.values())):
            for kind, count in kinds.items():
                if round_ < count:
                    runs[kind].append(run_worker(kind, name, case))
        results = {kind: {**rs[0], **{k: statistics.median(r[k] for r in rs)
                                      for k in ("seconds", "cpu_seconds", "process_seconds")},
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)} for kind, rs in runs.items()}
        for kind, r in results.items():
            ratio = ""
            if kind.startswith("logllm") and "reference" in results:
                ratio = " / ".join(f"{results[k]['seconds'] / r['seconds']:.1f}x; "
                                   f"{results[k]['cpu_seconds'] / r['cpu_seconds']:.1f}x"
                                   for k in ("reference", "reference-ascii"))
            print(f"| {name} | {kind} | {r['lines']:,} | {r['sequences']:,} | {r['distinct_messages']:,} | "
                  f"{r['seconds']:.3f} | {r['cpu_seconds']:.3f} | {r['process_seconds']:.2f} | "
                  f"{r['lines'] / r['seconds']:,.0f} | {r['peak_rss_mb']:.0f} | {ratio} |", flush=True)
    print(f"# load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
