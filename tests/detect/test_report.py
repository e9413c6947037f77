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
from logllm.report import build_report, message_association

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
    # PR, ROC, histogram, confusion, training loss, message association.
    assert len(images) == 6
    assert all(img.startswith(PNG_MAGIC) and len(img) > 2000 for img in images)
    for alt in ("precision-recall", "ROC curve", "score histograms", "confusion matrix", "training loss",
                "messages most associated"):
        assert alt in page
    # Self-contained: no external resource is referenced.
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    # The message that makes tiny_prepared's sequences anomalous ranks first.
    assert page.index("disk failure on &lt;*&gt;") < page.index("open file &lt;*&gt;")
    assert "&quot;preset&quot;: &quot;small&quot;" in page and "scikit-learn" in page


def test_message_association_ranks_the_anomalous_message(tiny_prepared):
    assoc = message_association(tiny_prepared)
    assert assoc[0]["text"] == "disk failure on <*>"
    assert assoc[0]["p_anomalous"] == 1.0 and assoc[0]["p_normal"] == 0.0
    assert all(a["ratio"] >= b["ratio"] for a, b in zip(assoc, assoc[1:]))


def test_report_cli_and_errors(tmp_path, capsys):
    run = make_run(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert len(_images(page)) == 5  # no --data: no association figure
    assert "Not available" in page
    with pytest.raises(DataError, match="no eval"):
        build_report(tmp_path / "run" / "eval")  # a folder without eval results
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_report_single_class_still_renders(tmp_path):
    run = make_run(tmp_path)
    path = run / "eval" / "test" / "scores.parquet"
    df = pl.read_parquet(path).with_columns(pl.lit(0, dtype=pl.Int8).alias("label"))
    df.write_parquet(path)
    page = build_report(run).read_text()
    assert len(_images(page)) == 5
    assert "<th>anomalous</th><td>0</td>" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected only into a copy for the test: counts images that the browser decoded.
PROBE = """<script>window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.figure');
  var ok = 0;
  imgs.forEach(function (i) { if (i.complete && i.naturalWidth > 0) ok++; });
  var d = document.createElement('div'); d.id = 'probe';
  d.textContent = 'decoded=' + ok + ' total=' + imgs.length;
  document.body.appendChild(d);
});</script></body>"""


def _chromium(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args],
            capture_output=True, text=True, timeout=120,
        )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path, tiny_prepared):
    run = make_run(tmp_path)
    page = build_report(run, data_dir=tiny_prepared).read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE))
    res = _chromium(["--dump-dom", probe.as_uri()])
    m = re.search(r"decoded=(\d+) total=(\d+)", res.stdout)
    assert m, res.stderr[-2000:]
    assert m.group(1) == m.group(2) == "6"
    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,2400", (run / "report.html").as_uri()])
    assert shot.is_file() and shot.read_bytes().startswith(PNG_MAGIC), res.stderr[-2000:]
