from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.cli import main
from logllm.errors import DataError
from logllm.report import ReportOptions, build_report, message_association

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, n: int = 200, seed: int = 0) -> Path:
    """A run folder as `train` + `evaluate` write it, with made-up but plausible contents."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    (run / "eval" / "test").mkdir(parents=True)
    labels = (rng.random(n) < 0.2).astype(np.int8)
    scores = np.clip(np.where(labels == 1, rng.beta(5, 2, n), rng.beta(1, 6, n)), 0, 1)
    threshold = 0.5
    pl.DataFrame({
        "sequence_id": [f"w{i}" for i in range(n)], "label": labels, "score": scores,
        "pred": (scores >= threshold).astype(np.int8),
    }).write_parquet(run / "eval" / "test" / "scores.parquet")
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps({"threshold": threshold, "f1": 0.9}))
    (run / "threshold.json").write_text(json.dumps({"threshold": threshold, "source": "val"}))
    rows = []
    for stage, steps in (("1", 20), ("2a", 10), ("2b", 10), ("3", 30)):
        for step in range(steps):
            rows.append({"stage": stage, "step": step, "epoch": 0, "loss": float(2.0 / (1 + step) + 0.05),
                         "lr": 5e-4, "elapsed": step * 0.1})
    (run / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    (run / "config.json").write_text(json.dumps({"preset": "small", "seed": 0, "versions": {"torch": "x"}}))
    (run / "data_manifest.json").write_text(json.dumps({"family": "synthetic", "versions": {"polars": "y"}}))
    return run


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_has_every_figure_and_section(tmp_path, tiny_prepared):
    run = make_run(tmp_path)
    out = build_report(run, data_dir=tiny_prepared)
    page = out.read_text()
    images = _images(page)
    # timeline, PR, ROC, histogram, confusion, training loss, message association.
    assert len(images) == 7
    assert all(img.startswith(PNG_MAGIC) and len(img) > 2000 for img in images)
    for alt in ("timeline of scores", "precision-recall", "ROC curve", "score histograms", "confusion matrix",
                "training loss", "messages most associated"):
        assert alt in page
    # Self-contained: no external resource is referenced.
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    # The message that makes tiny_prepared's sequences anomalous ranks first.
    assert page.index("disk failure on &lt;*&gt;") < page.index("open file &lt;*&gt;")
    # Configuration and versions are tables, not JSON text.
    assert "<th>preset</th><td>small</td>" in page and "<th>scikit-learn</th>" in page
    assert "<pre>" not in page
    # Its sequence ids are not in tiny_prepared: the flagged rows say so instead of showing lines.
    assert "not in the prepared split" in page


def test_message_association_ranks_the_anomalous_message(tiny_prepared):
    assoc = message_association(tiny_prepared)
    assert assoc[0]["text"] == "disk failure on <*>"
    assert assoc[0]["p_anomalous"] == 1.0 and assoc[0]["p_normal"] == 0.0
    assert all(a["ratio"] >= b["ratio"] for a, b in zip(assoc, assoc[1:]))


def test_report_cli_and_errors(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--flagged-rows", "3"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert len(_images(page)) == 6  # no --data: no association figure
    assert "Not available" in page
    assert len(re.findall(r'<tr data-sequence="', page)) == 3
    assert "pass --data" in page  # flagged rows without lines say what would add them
    with pytest.raises(DataError, match="no eval"):
        build_report(tmp_path / "run" / "eval")  # a folder without eval results
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main(["report", str(run), "--explain-top", "-1"]) == 2
    assert "--explain-top must be a whole number >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(DataError, match="table.csv: missing"):
        build_report(run, options=ReportOptions(bench=tmp_path / "no_bench"))


def _set_scores(run: Path, scores: np.ndarray) -> None:
    path = run / "eval" / "test" / "scores.parquet"
    pl.read_parquet(path).with_columns(pl.Series("score", scores)).write_parquet(path)


def test_report_single_class_labels_still_render(tmp_path):
    run = make_run(tmp_path)
    path = run / "eval" / "test" / "scores.parquet"
    df = pl.read_parquet(path).with_columns(pl.lit(0, dtype=pl.Int8).alias("label"))
    df.write_parquet(path)
    page = build_report(run).read_text()
    assert len(_images(page)) == 6
    assert "<th>anomalous</th><td>0</td>" in page
    assert 'class="warning"' not in page  # predictions still differ: no one-class banner


@pytest.mark.parametrize(("score", "which"), [(0.1, "normal"), (0.9, "anomalous")])
def test_warning_banner_when_every_prediction_is_one_class(tmp_path, score, which):
    run = make_run(tmp_path)
    assert 'class="warning"' not in build_report(run).read_text()  # mixed predictions: no banner
    _set_scores(run, np.full(200, score))
    page = build_report(run).read_text()
    assert page.count('class="warning"') == 1
    assert f"every one of the 200 sequences of split <code>test</code> is predicted {which}" in page
    assert page.index('class="warning"') < page.index("Summary at the threshold")  # on top of the split


def test_metrics_data_and_versions_rows_are_tables(tmp_path):
    run = make_run(tmp_path)
    metrics = {"threshold": 0.5, "f1": 0.9,
               "data": {"path": "/d/prepared", "family": "bgl",
                        "inputs": [{"path": "/logs/BGL.log", "sha256": "abc123"}]},
               "versions": {"torch": "2.5.1", "polars": "1.20.0"}}
    (run / "eval" / "test" / "metrics.json").write_text(json.dumps(metrics))
    page = build_report(run).read_text()
    section = page[page.index("<h3>metrics.json</h3>"):]
    section = section[: section.index("<h2>")]
    assert "<th>data</th><td><table><tr><th>path</th><td>/d/prepared</td>" in section
    # a list of records is one table with a column per key
    assert "<th>inputs</th><td><table><tr><th>path</th><th>sha256</th></tr><tr><td>/logs/BGL.log</td>" in section
    assert "<th>versions</th><td><table><tr><th>torch</th><td>2.5.1</td>" in section
    assert "{&quot;" not in section  # no JSON blob left


# -- a prepared run on raw lines: timeline by line, flagged sequences with their lines -------------

ALERT_TAIL = ' see <img src="https://example.com/x.png">'  # must come out escaped, never as a tag


def write_tb(path: Path, n: int = 200) -> None:
    """Thunderbird lines; line i is an alert when i % 23 == 0 (the one at 115 carries HTML)."""
    rows = []
    for i in range(1, n + 1):
        head = f"{1131568278 + i} 2005.11.09 dn{i % 7} Nov 9 12:31:{i % 60:02d} dn{i % 7}/dn{i % 7}"
        if i % 23 == 0:
            rows.append(f"VAPI {head} kernel: disk failure on sda{i % 4}" + (ALERT_TAIL if i == 115 else ""))
        else:
            rows.append(f"- {head} sshd[{1000 + i}]: session opened for user root")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture
def tb_run(tmp_path, fake_model):
    """Windows of 20 lines, the second half is the test split (w000005..w000009, lines 101-200); the
    run's scores come from `evaluate` with the fake model (0.9 per alert line): w000007 (141-160) has no
    alert, the others have one each, at 115, 138, 161 and 184."""
    from logllm.data.dataset import PreparedData
    from logllm.data.prepare import PrepareOptions, prepare
    from logllm.evaluate import evaluate

    log = tmp_path / "tb.log"
    write_tb(log)
    prepared = tmp_path / "prepared"
    prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=20, train_ratio=0.5), prepared)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"seed": 0}))
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    (run / "data_manifest.json").write_text(json.dumps(PreparedData(prepared).manifest))
    evaluate(run, prepared, "test", model=fake_model)
    return {"run": run, "prepared": prepared, "log": log}


def _flagged_rows(page: str, split: str = "test") -> list[tuple[str, str]]:
    """(sequence id, row HTML) of the flagged table of ``split``, in page order."""
    table = page[page.index(f'<table id="flagged-{split}">'):]
    table = table[: table.index("</table>")]
    return re.findall(r'<tr data-sequence="([^"]+)">(.*?)</tr>', table, flags=re.S)


def test_flagged_sequences_listed_with_their_explaining_lines(tb_run, fake_model):
    run, prepared = tb_run["run"], tb_run["prepared"]
    page = build_report(run, data_dir=prepared, model=fake_model,
                        options=ReportOptions(explain_top=3, top_lines=1)).read_text()
    rows = _flagged_rows(page)
    assert sorted(sid for sid, _ in rows) == ["w000005", "w000006", "w000008", "w000009"]
    alert_of = {"w000005": 115, "w000006": 138, "w000008": 161, "w000009": 184}
    first_of = {"w000005": 101, "w000006": 121, "w000008": 161, "w000009": 181}
    for sid, html in rows[:3]:  # explained: the alert line, its raw text, its file
        assert re.findall(r'<span class="ln">tb\.log:(\d+)</span>', html) == [str(alert_of[sid])]
        assert f"kernel: disk failure on sda{alert_of[sid] % 4}" in html
        assert f"tb.log:{first_of[sid]}-{first_of[sid] + 19}" in html
    assert 'class="topline"' not in rows[3][1]  # past --explain-top
    assert "The first 3 rows are explained (--explain-top 3)." in page
    assert "w000007" not in dict(rows)
    assert "timeline of scores, test" in page
    # A raw line holding HTML is shown as text: no external URL appears in an attribute.
    assert "&lt;img src=&quot;https://example.com/x.png&quot;&gt;" in page
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)


def test_explanations_off_and_model_that_cannot_be_loaded(tb_run, fake_model):
    run, prepared = tb_run["run"], tb_run["prepared"]
    page = build_report(run, data_dir=prepared).read_text()  # the run has no model/ folder
    assert "No explanations: the model could not be loaded from" in page
    rows = dict(_flagged_rows(page))
    assert "tb.log:121-140" in rows["w000006"] and 'class="topline"' not in rows["w000006"]
    page = build_report(run, data_dir=prepared, model=fake_model, options=ReportOptions(explain_top=0)).read_text()
    assert "Explanations are off (--explain-top 0)." in page and 'class="topline"' not in page
    (run / "config.json").write_text(json.dumps({"method": "deeplog"}))
    page = build_report(run, data_dir=prepared).read_text()
    assert "this run&#x27;s method is &#x27;deeplog&#x27;; line explanations need a LogLLM model" in page


def test_a_changed_input_file_shows_masked_messages_instead(tb_run, fake_model):
    run, prepared, log = tb_run["run"], tb_run["prepared"], tb_run["log"]
    with open(log, "a") as fh:
        fh.write("one more line\n")
    page = build_report(run, data_dir=prepared, model=fake_model, options=ReportOptions(top_lines=1)).read_text()
    assert "the file changed since `logllm prepare`" in page
    rows = dict(_flagged_rows(page))
    assert "<code>kernel: disk failure on &lt;*&gt;</code>" in rows["w000006"]  # the masked message
    assert "sda2" not in rows["w000006"]


def test_a_long_sequence_is_explained_over_all_its_lines_window_by_window(tb_run, fake_model):
    import types

    fake_model.config = types.SimpleNamespace(max_messages=10)  # w000006 (121-140) is read as 2 windows
    page = build_report(tb_run["run"], data_dir=tb_run["prepared"], model=fake_model).read_text()
    html = dict(_flagged_rows(page))["w000006"]
    assert "read as 2 windows of 10 lines (stride 10)" in html
    shown = [int(n) for n in re.findall(r'<span class="ln">tb\.log:(\d+)</span>', html)]
    assert shown[0] == 138  # the alert in the second window explains it


def test_timeline_positions_follow_lines_across_files(tb_run, tmp_path):
    from logllm.data.dataset import PreparedData
    from logllm.data.prepare import PrepareOptions, prepare
    from logllm.report.sequences import SplitLines, timeline_positions

    data = PreparedData(tb_run["prepared"])
    lines = SplitLines.load(data, "test")
    x, label, bounds = timeline_positions(data, lines, ["w000006", "w000005", "w000009"])
    assert x.tolist() == [121, 101, 181] and "tb.log" in label and bounds == []
    x, label, _ = timeline_positions(data, lines, ["w000006", "nope"])  # not this data: order instead
    assert x.tolist() == [0, 1] and "order" in label
    # Two files: the second file's lines come after the first's 200.
    second = tmp_path / "b.log"
    write_tb(second, 60)
    prepare(PrepareOptions(family="thunderbird", inputs=(str(tb_run["log"]), str(second)), window=20,
                           train_ratio=0.5), tmp_path / "two")
    data = PreparedData(tmp_path / "two")
    lines = SplitLines.load(data, "test")
    ids = data.split("test")["sequence_id"].to_list()
    x, _, bounds = timeline_positions(data, lines, ids)
    table = data.split("test")
    expected = [200 * int(f[0]) + int(n[0]) for f, n in zip(table["file_index"], table["line_numbers"])]
    assert x.tolist() == expected and bounds == [(1.0, "tb.log"), (201.0, "b.log")]


def _bench_folder(folder: Path, data: str) -> None:
    folder.mkdir()
    pl.DataFrame({"method": ["knn", "dt"], "supervision": ["supervised"] * 2,
                  "f1_mean": [0.9, 0.75], "f1_std": [0.01, float("nan")], "train_s": [1.5, 0.2],
                  "seeds": [3, 1]}).write_csv(folder / "table.csv")
    (folder / "bench.json").write_text(json.dumps({"data": data, "command": "logllm bench --data x"}))


def test_bench_table_found_beside_the_data(tb_run):
    run, prepared = tb_run["run"], tb_run["prepared"]
    assert 'id="bench"' not in build_report(run, data_dir=prepared, options=ReportOptions(explain_top=0)).read_text()
    _bench_folder(prepared.parent / "bench_prepared", "/some/other/data")  # a bench of other data: not shown
    assert 'id="bench"' not in build_report(run, data_dir=prepared, options=ReportOptions(explain_top=0)).read_text()
    _bench_folder(run / "bench", str(prepared))
    page = build_report(run, data_dir=prepared, options=ReportOptions(explain_top=0)).read_text()
    bench = page[page.index('<table id="bench">'):]
    bench = bench[: bench.index("</table>")]
    assert "<th>f1</th>" in bench and "<th>f1_std</th>" not in bench
    assert "<td class=num>0.900 ± 0.010</td>" in bench and "<td class=num>0.750</td>" in bench
    assert bench.index("knn") < bench.index("dt")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected only into a copy for the test: counts images that the browser decoded, and the page's height.
PROBE = """<script>window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.figure');
  var ok = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) ok++; });
  var d = document.createElement('div'); d.id = 'probe';
  d.textContent = 'decoded=' + ok + ' total=' + imgs.length + ' height=' + document.documentElement.scrollHeight;
  document.body.appendChild(d);
});</script></body>"""


def _chromium(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             "--hide-scrollbars", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args],
            capture_output=True, text=True, timeout=120,
        )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tb_run, fake_model, tmp_path):
    from PIL import Image

    run, prepared = tb_run["run"], tb_run["prepared"]
    page = build_report(run, data_dir=prepared, model=fake_model).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE))
    res = _chromium(["--dump-dom", probe.as_uri()])
    m = re.search(r"decoded=(\d+) total=(\d+) height=(\d+)", res.stdout)
    assert m, res.stderr[-2000:]
    assert m.group(1) == m.group(2) == "7"  # timeline, PR, ROC, histogram, confusion, training, messages
    height = int(m.group(3))
    assert height > 3000, height  # figures, flagged table and tables below the header
    # A screenshot of the whole page: its PNG is as tall as asked, and its lower part is not blank.
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", f"--window-size=1280,{height}", (run / "report.html").as_uri()])
    assert shot.is_file() and shot.read_bytes().startswith(PNG_MAGIC), res.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.size == (1280, height)
        gray = np.asarray(im.convert("L"))
    lower = gray[height // 2:]
    assert (lower < 200).any(axis=1).mean() > 0.2  # ink on many rows of the lower half
