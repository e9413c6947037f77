"""`logllm train --method NAME` on a prepared HDFS slice, then `evaluate` and `detect` on the same sessions.

The slice is the first 30,000 lines of HDFS_2pct (random split 60/20/20, seed 0), prepared here. The
raw lines of the test blocks are written to a file and given to `logllm detect`: each block's score
must equal the score `evaluate` wrote for it, for DeepLog (semi-supervised, no labels used in
training) and DT (supervised).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.cli import main

END_LINE = 30_000
TINY = {"deeplog": ["--set", "epochs=3", "--set", "hidden=16", "--set", "layers=1"], "dt": []}


@pytest.fixture(scope="module")
def hdfs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    from logllm.data.options import PrepareOptions
    from logllm.data.prepare import prepare

    folder = shared_data / "HDFS_2pct"
    root = tmp_path_factory.mktemp("deploy")
    prepared = root / "prepared"
    prepare(PrepareOptions(family="hdfs", inputs=(str(folder / "HDFS_2pct.log"),),
                           labels=str(folder / "anomaly_label.csv"), end_line=END_LINE,
                           train_ratio=0.6, val_ratio=0.2, seed=0), prepared)
    test_blocks = set(pl.read_parquet(prepared / "test.parquet")["sequence_id"].to_list())
    block = re.compile(r"blk_-?\d+")
    kept = []
    with open(folder / "HDFS_2pct.log", encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if number > END_LINE:
                break
            if test_blocks & set(block.findall(line)):
                kept.append(line)
    raw = root / "test_lines.log"
    raw.write_text("".join(kept))
    return {"root": root, "prepared": prepared, "raw": raw, "test_blocks": test_blocks}


@pytest.fixture(scope="module")
def runs(hdfs: dict) -> dict:
    """Both methods trained, evaluated on the test split and run by `detect` on the raw test lines."""
    return {method: _train_evaluate_detect(hdfs, method) for method in TINY}


def _train_evaluate_detect(hdfs: dict, method: str) -> tuple[dict, dict, list[dict]]:
    run = hdfs["root"] / f"run_{method}"
    assert main(["-q", "train", "--method", method, "--data", str(hdfs["prepared"]), "--out", str(run),
                 *TINY[method]]) == 0
    assert main(["-q", "evaluate", str(run), "--data", str(hdfs["prepared"])]) == 0
    scores = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    out = hdfs["root"] / f"detect_{method}.jsonl"
    assert main(["-q", "detect", str(run), str(hdfs["raw"]), "--out", str(out)]) == 0
    detections = [json.loads(x) for x in out.read_text().splitlines()]
    config = json.loads((run / "config.json").read_text())
    return config, dict(zip(scores["sequence_id"], scores["score"])), detections


@pytest.mark.parametrize("method", ["deeplog", "dt"])
def test_detect_gives_the_scores_of_evaluate(hdfs: dict, runs: dict, method: str) -> None:
    config, evaluated, detections = runs[method]
    assert config["method"] == method
    assert config["training"]["labels_used"] is (method == "dt")
    detected = {d["sequence_id"]: d for d in detections if d["sequence_id"] in hdfs["test_blocks"]}
    assert set(detected) == hdfs["test_blocks"] == set(evaluated)
    ids = sorted(detected)
    np.testing.assert_allclose([detected[i]["score"] for i in ids], [evaluated[i] for i in ids], rtol=0, atol=1e-9)
    threshold = json.loads((hdfs["root"] / f"run_{method}" / "threshold.json").read_text())
    assert threshold["source"] == "val"
    flagged = [d for d in detected.values() if d["anomalous"]]
    assert flagged and all(d["score"] >= threshold["threshold"] for d in flagged)
    metrics = json.loads((hdfs["root"] / f"run_{method}" / "eval" / "test" / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["f1"] >= 0.4, metrics  # the bench tests' bar on HDFS slices
    if method == "deeplog":  # missed next keys: every listed line's rank is at or above the threshold
        assert all(d["explained_by"].startswith("line-scores: missed next keys") for d in flagged)
        listed = [t for d in flagged for t in d["top"]]
        assert listed and all(t["contribution"] >= threshold["threshold"] for t in listed)
        assert all(t["text"].strip() and t["line"] >= 1 for t in listed)
    else:
        assert all(d["explained_by"] == "leave-one-out" for d in flagged)
        assert any(d["top"] for d in flagged)


def test_run_folder_contract(hdfs: dict, runs: dict) -> None:
    run = hdfs["root"] / "run_deeplog"
    for name in ("config.json", "data_manifest.json", "threshold.json", "train_log.jsonl", "method/method.json",
                 "method/state.safetensors", "features/drain.json"):
        assert (run / name).is_file(), name
    config = runs["deeplog"][0]
    assert config["params"]["epochs"] == "3" and config["seed"] == 0 and config["features"]["templates"]
    assert config["explanation"]["kind"] == "line-scores"
    assert json.loads((run / "train_log.jsonl").read_text().splitlines()[-1])["event"] == "finish"
    assert (hdfs["root"] / "run_dt" / "features" / "drain.json").is_file()  # dt reads templates too


def test_report_of_a_baseline_run(hdfs: dict, runs: dict) -> None:
    from logllm.report import build_report

    html = build_report(hdfs["root"] / "run_dt", hdfs["prepared"], splits=["test"]).read_text()
    # the report's own rule (report/flagged.py): no leave-one-out explanation of a non-LogLLM run, said so
    assert "line explanations need a LogLLM model" in html and "Flagged sequences" in html
    assert "timeline of scores, test" in html


def test_threshold_flag_follows_the_methods_scores(hdfs: dict, runs: dict, capsys) -> None:
    raw = str(hdfs["raw"])
    out = hdfs["root"] / "t.jsonl"
    # DeepLog scores are ranks: a threshold above 1 is fine; DT's are probabilities: refused in one line
    assert main(["-q", "detect", str(hdfs["root"] / "run_deeplog"), raw, "--threshold", "2", "--out", str(out)]) == 0
    assert all(json.loads(x)["threshold"] == 2 for x in out.read_text().splitlines())
    capsys.readouterr()
    assert main(["-q", "detect", str(hdfs["root"] / "run_dt"), raw, "--threshold", "2"]) == 2
    assert "--threshold must be in [0, 1]" in capsys.readouterr().err


def test_semi_supervised_without_labels_takes_training_as_normal(hdfs: dict, shared_data: Path, capsys) -> None:
    from logllm.data.options import PrepareOptions
    from logllm.data.prepare import prepare

    unlabelled = hdfs["root"] / "unlabelled"
    prepare(PrepareOptions(family="hdfs", inputs=(str(shared_data / "HDFS_2pct" / "HDFS_2pct.log"),),
                           end_line=5000, train_ratio=0.8, seed=0), unlabelled)
    run = hdfs["root"] / "run_unlabelled"
    assert main(["-q", "train", "--method", "deeplog", "--data", str(unlabelled), "--out", str(run),
                 *TINY["deeplog"], "--threshold-quantile", "0.95"]) == 0
    assert "all" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["assumed_normal"] is True and config["training"]["labels_used"] is False
    threshold = json.loads((run / "threshold.json").read_text())
    assert threshold["source"] == "train-normal-quantile" and threshold["quantile"] == 0.95
    assert main(["-q", "train", "--method", "dt", "--data", str(unlabelled), "--out", str(run)]) == 2
    assert "has no labels; a supervised method needs them" in capsys.readouterr().err


def test_bad_flags_are_refused_in_one_line(hdfs: dict, capsys) -> None:
    data, out = str(hdfs["prepared"]), str(hdfs["root"] / "bad")
    cases = [
        (["--method", "nope"], "unknown; choose logllm or one of cnn, deeplog, dt"),
        (["--method", "dt", "--preset", "small"], "--preset only apply to LogLLM training"),
        (["--method", "dt", "--set", "k"], "expected PARAM=VALUE"),
        (["--set", "epochs=3"], "--set: only applies with --method NAME"),
        (["--method", "dt", "--set", "nope=1"], "unknown parameter"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["-q", "train", "--data", data, "--out", out, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (extra, err)


@pytest.mark.parametrize("method,params", [("logrobust", {"epochs": 1, "hidden": 8, "layers": 1}),
                                           ("rapid", {"core_set": 50})])
def test_vector_methods_score_new_lines_like_evaluate(hdfs: dict, method: str, params: dict) -> None:
    """Methods reading encoder vectors (stand-in encoder here): detect recomputes them from the texts."""
    from tests.baselines.conftest import fake_token_vectors, fake_vectors

    from logllm.detect import Detector
    from logllm.evaluate import evaluate
    from logllm.methods import load_run
    from logllm.methods.train import MethodTrainOptions, train_method

    run = hdfs["root"] / f"run_{method}"
    fns = {"vector_fn": fake_vectors, "token_vector_fn": fake_token_vectors}
    train_method(MethodTrainOptions(method=method, params=params), hdfs["prepared"], run, **fns)
    config = json.loads((run / "config.json").read_text())
    assert not config["features"]["templates"] and not (run / "features").exists()
    metrics = evaluate(run, hdfs["prepared"], model=load_run(run, **fns))
    scores = pl.read_parquet(run / "eval" / "test" / "scores.parquet")
    evaluated = dict(zip(scores["sequence_id"], scores["score"]))
    detector = Detector.from_run(run, model=load_run(run, **fns), explain="none")
    detected = {d.sequence_id: d.score for d in detector.process(hdfs["raw"].read_bytes().splitlines())}
    ids = sorted(hdfs["test_blocks"])
    np.testing.assert_allclose([detected[i] for i in ids], [evaluated[i] for i in ids], rtol=1e-5, atol=1e-6)
    assert metrics.method == method and metrics.roc_auc is not None and metrics.roc_auc > 0.5


def test_follow_a_growing_file_with_a_baseline_run(hdfs: dict, runs: dict, tmp_path: Path) -> None:
    """`detect --follow`'s path (a followed file read as it grows) gives the scores of `evaluate`."""
    from logllm.detect import Detector
    from logllm.follow import LineReader

    lines = hdfs["raw"].read_bytes().splitlines(keepends=True)
    path = tmp_path / "growing.log"
    path.write_bytes(b"".join(lines[: len(lines) // 2]))
    detector = Detector.from_run(hdfs["root"] / "run_deeplog")
    batches = LineReader([path], follow=True, poll_interval=0.01).batches()
    found = []

    def read_all() -> None:
        while (batch := next(batches)) != []:
            found.extend(detector.feed(batch))

    read_all()
    with open(path, "ab") as fh:
        fh.write(b"".join(lines[len(lines) // 2 :]))
    read_all()
    found.extend(detector.finish())
    evaluated = runs["deeplog"][1]
    scores = {d.sequence_id: d.score for d in found}
    ids = sorted(hdfs["test_blocks"])
    np.testing.assert_allclose([scores[i] for i in ids], [evaluated[i] for i in ids], rtol=0, atol=1e-9)


def test_detector_explain_by_the_methods_own_rule(hdfs: dict, runs: dict) -> None:
    from logllm.data.dataset import PreparedData
    from logllm.detect import Detector

    data = PreparedData(hdfs["prepared"])
    known = data.messages[int(data.sequences("train").message_ids[0][0])]  # its template is a training key
    seq = [known, "a line no training session ever held", known]
    deeplog = Detector.from_run(hdfs["root"] / "run_deeplog")
    ranks = deeplog.explain(seq)
    assert ranks[0][0] == 1 and ranks[0][1] >= deeplog.threshold  # the unseen key: beyond every rank
    assert sorted(i for i, _ in ranks) == [0, 1, 2]
    dt = Detector.from_run(hdfs["root"] / "run_dt")
    assert dt.explanation == "leave-one-out" and len(dt.explain(seq, k=2)) == 2
