"""`logllm detect` against `evaluate` on a run's test split, explanation quality, speed, follow latency.

    .venv/bin/python benchmarks/bench_detect.py --run RUN --data /tmp/logllm-shared/thunderbird

What it measures (issue 4, "How it will be checked"):

1. Agreement: the test split's windows as `evaluate` scores them (from the prepared folder, same model and
   threshold; RUN/eval/test/scores.parquet when present) against `Detector` over the *raw lines* of the
   test part (read from the original log files, line range of the test split): same windows (source
   file, first and last line), same flags, largest score difference.
2. Explanations: share of true-positive windows (flagged, label 1) whose top-3 leave-one-out lines hold
   an alert line (first token not ``-``), for windowed families with first-token labels.
3. Throughput of batch detection (lines/s) with explanations of flagged windows.
4. Follow mode: a writer thread appends the test lines to a file (rotating it midway) at --rate lines/s;
   latency from writing a window's last line to its detection (median, max), and windows missed/repeated.

Prints figures only; nothing is asserted. Windowed families whose test part lies in one input file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl


def test_part(data) -> tuple[int, int, int]:
    """(file index, first line, last line) of the test split's lines (must be one file)."""
    table = data.split("test")
    files = set(table["file_index"].explode().to_list())
    if len(files) != 1:
        raise SystemExit(f"the test split spans files {sorted(files)}; this benchmark needs one file")
    lines = table["line_numbers"].explode()
    return files.pop(), int(lines.min()), int(lines.max())


def evaluate_scores(run: Path, data, model, threshold: float) -> pl.DataFrame:
    path = run / "eval" / "test" / "scores.parquet"
    table = data.split("test")
    if path.is_file():
        scores = pl.read_parquet(path)
        source = str(path)
    else:  # what `logllm evaluate` computes, without writing into the run folder
        seqs = data.sequences("test")
        s = model.score(data.messages, [m.tolist() for m in seqs.message_ids])
        scores = pl.DataFrame({"sequence_id": seqs.ids, "label": seqs.labels, "score": s,
                               "pred": (s >= threshold).astype(np.int8)})
        source = "model.score on the prepared test split (as evaluate does)"
    print(f"evaluate scores: {source}")
    return scores.with_columns(
        first=table["line_numbers"].list.first().cast(pl.Int64), last=table["line_numbers"].list.last().cast(pl.Int64),
    )


def batch_detect(detector, path: str, first: int, last: int):
    from logllm.follow import LineReader

    reader = LineReader([path])
    dets = []
    start = time.perf_counter()
    for batch in reader.batches():
        kept = [line for line in batch if first <= line.line_number <= last]
        if kept:
            dets += detector.feed(kept)
        if batch[-1].line_number >= last:
            reader.stop.set()
    dets += detector.finish()
    return dets, time.perf_counter() - start


def follow_latency(detector_factory, lines: list[str], window: int, rate: float) -> dict:
    """Write ``lines`` to a followed file at ``rate`` lines/s, rotating at the middle; time each window."""
    from logllm.follow import LineReader

    tmp = Path(tempfile.mkdtemp())
    live = tmp / "live.log"
    live.write_text("")
    detector = detector_factory()
    reader = LineReader([live], follow=True, poll_interval=0.1)
    got: list[tuple[str, int, int, float]] = []

    def consume():
        for d in detector.run(reader):
            got.append((d.sequence_id, d.first_line, d.last_line, time.monotonic()))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    rotate_at = (len(lines) // 2 // window) * window  # rotate between two windows
    written: dict[tuple[int, int], float] = {}
    fh = open(live, "a")
    for i, line in enumerate(lines):
        if i == rotate_at:
            fh.close()
            live.rename(tmp / "live.log.1")
            fh = open(live, "a")
        fh.write(line + "\n")
        fh.flush()
        gen = int(i >= rotate_at)
        n = i - rotate_at * gen + 1  # line number in the current file
        if n % window == 0:
            written[(gen, n)] = time.monotonic()
        time.sleep(1.0 / rate)
    fh.close()
    deadline = time.monotonic() + 30
    while len([g for g in got if g[2] - g[1] + 1 == window]) < len(written) and time.monotonic() < deadline:
        time.sleep(0.05)
    reader.stop.set()
    thread.join(timeout=60)
    full = [g for g in got if g[2] - g[1] + 1 == window]
    keys = [(int("@1:" in sid), last) for sid, _, last, _ in full]
    lat = [t - written[k] for k, (_, _, _, t) in zip(keys, full) if k in written]
    return {
        "windows_expected": len(written), "windows_reported": len(full),
        "missing": len(set(written) - set(keys)), "repeated": len(keys) - len(set(keys)),
        "latency_median_s": statistics.median(lat) if lat else None, "latency_max_s": max(lat) if lat else None,
        "rate_lines_per_s": rate,
    }


def explanation_table(detector, data, raw: list[str], file_index: int, tp_ranges: set) -> None:
    """Share of true-positive windows with an alert line in the top 3, for each way of leaving out
    (one line / every line of a text) and of listing (distinct messages / repeats allowed)."""
    from logllm.explain import leave_one_out, top_k

    table = data.split("test")
    seqs, alerts = [], []
    for row in table.iter_rows(named=True):
        if (row["line_numbers"][0], row["line_numbers"][-1]) not in tp_ranges:
            continue
        seqs.append([data.messages[i] for i in row["message_ids"]])
        alerts.append([raw[n - 1].split(" ", 1)[0] != "-" for f, n in zip(row["file_index"], row["line_numbers"])
                       if f == file_index])
    for by in ("position", "text"):
        contributions = leave_one_out(detector.explain_cache, seqs, by=by)
        for distinct in (True, False):
            hits = sum(any(a[i] for i, _ in top_k(c, 3, s if distinct else None))
                       for c, s, a in zip(contributions, seqs, alerts))
            print(f"  leave out by {by:8s} {'distinct messages' if distinct else 'repeats allowed  '}: "
                  f"{hits}/{len(seqs)} = {hits / max(1, len(seqs)):.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path, help="the prepared folder the run was trained on")
    ap.add_argument("--top-k", type=int, default=3)
    ap.add_argument("--rate", type=float, default=500.0, help="follow test: lines written per second")
    ap.add_argument("--follow-lines", type=int, default=1000, help="follow test: lines written (0: skip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--explain-by", choices=["position", "text"], default="position")
    args = ap.parse_args()

    import torch

    from logllm.data.dataset import PreparedData
    from logllm.detect import Detector
    from logllm.model.logllm import LogLLM
    from logllm.report import run_threshold
    from logllm.versions import library_versions

    if args.threads:
        torch.set_num_threads(args.threads)
    data = PreparedData(args.data)
    run_manifest = json.loads((args.run / "data_manifest.json").read_text())
    if run_manifest.get("options") != data.manifest.get("options"):
        print("WARNING: the run's data manifest options differ from --data's")
    threshold = run_threshold(args.run)
    t0 = time.perf_counter()
    model = LogLLM.from_pretrained(args.run)
    print(f"model loaded in {time.perf_counter() - t0:.1f}s; threshold {threshold:.6g}")
    file_index, first, last = test_part(data)
    path = data.inputs[file_index]["path"]
    print(f"test part: {path} lines {first}-{last} ({last - first + 1} lines)")

    ev = evaluate_scores(args.run, data, model, threshold)
    detector = Detector(model, *_pre(args.run), threshold=threshold, top_k=args.top_k, explain="flagged",
                        explain_by=args.explain_by)
    dets, seconds = batch_detect(detector, path, first, last)
    got = {(d.first_line, d.last_line): d for d in dets}
    exp = {(r["first"], r["last"]): r for r in ev.iter_rows(named=True)}
    same_windows = got.keys() == exp.keys()
    both = sorted(got.keys() & exp.keys())
    flag_agree = sum(got[k].anomalous == bool(exp[k]["pred"]) for k in both)
    max_diff = max(abs(got[k].score - exp[k]["score"]) for k in both) if both else float("nan")
    print(f"windows: evaluate {len(exp)}, detect {len(got)}, identical line ranges: {same_windows}")
    print(f"flags agree on {flag_agree}/{len(both)} windows; evaluate positives {int(ev['pred'].sum())}, "
          f"detect positives {sum(d.anomalous for d in dets)}; max |score difference| {max_diff:.2e}")

    raw = Path(path).read_text(errors="replace").splitlines()
    tp = [k for k in both if got[k].anomalous and exp[k]["label"] == 1]
    with_alert = 0
    for k in tp:
        lines = [t["line"] for t in got[k].top[:3]]
        if any(raw[n - 1].split(" ", 1)[0] != "-" for n in lines):
            with_alert += 1
    share = with_alert / len(tp) if tp else float("nan")
    print(f"true-positive windows: {len(tp)}; with an alert line in the top 3 (detect's default: by position, "
          f"distinct messages): {with_alert} ({share:.1%})")
    explanation_table(detector, data, raw, file_index, {k for k in tp})
    lines_n = last - first + 1
    print(f"batch detection: {lines_n} lines in {seconds:.2f}s = {lines_n / seconds:,.0f} lines/s "
          f"({len(dets)} windows, {sum(d.anomalous for d in dets)} explained; "
          f"score cache {detector.cache.stats})")

    plain = Detector(model, *_pre(args.run), threshold=threshold, top_k=args.top_k, explain="none")
    plain_dets, plain_s = batch_detect(plain, path, first, last)
    print(f"batch detection without explanations: {lines_n / plain_s:,.0f} lines/s ({len(plain_dets)} windows "
          f"in {plain_s:.2f}s)")

    if args.follow_lines > 0:
        text = raw[first - 1 : min(last, first - 1 + args.follow_lines)]
        window = detector.policy.window
        for explain in ("none", "flagged"):
            res = follow_latency(lambda e=explain: Detector(model, *_pre(args.run), threshold=threshold,
                                                            top_k=args.top_k, explain=e, wall_clock_timeout=True),
                                 text, window, args.rate)
            print(f"follow (explain={explain}): {json.dumps(res)}")
    v = library_versions()
    print("versions:", json.dumps({k: v[k] for k in ("python", "torch", "transformers", "polars", "logllm") if k in v}))
    print(f"torch threads: {torch.get_num_threads()}")


def _pre(run: Path):
    from logllm.detect import preprocessor_from_manifest

    return preprocessor_from_manifest(json.loads((run / "data_manifest.json").read_text()))


if __name__ == "__main__":
    main()
