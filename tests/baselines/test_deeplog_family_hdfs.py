"""The semi-supervised log-key baselines (DeepLog, LogAnomaly, LogBERT, PLELog, FastLogAD) on a slice
of HDFS_2pct, prepared in the test through the public data and bench APIs.

One file for the five methods so that the slice is prepared once (module-scoped fixture). Semantic
vectors come from a bag-of-words stand-in so that no encoder is loaded; settings are shortened for
speed, so the bar is "clearly better than chance" (about 3% of the sessions are anomalous), not the
full-data figures (see docs/baselines.md).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from logllm.baselines.base import REGISTRY
from logllm.baselines.harness import build_inputs, load_methods, metrics
from logllm.baselines.templates import build_resources
from logllm.data.dataset import PreparedData
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare

from .conftest import bag_of_words

pytestmark = pytest.mark.integration

SMALL = {"width": 32, "ff": 64, "batch_size": 16}
FAST = {
    "deeplog": {"epochs": 5, "batch_size": 512, "lr": 0.01},
    "loganomaly": {"epochs": 5, "batch_size": 512, "lr": 0.01},
    "logbert": {"steps": 200, **SMALL},
    "plelog": {"epochs": 10, "lr": 0.01},
    "fastlogad": {"gen_steps": 100, "disc_steps": 150, **SMALL},
}


@pytest.fixture(scope="module")
def hdfs_slice(shared_data: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = shared_data / "HDFS_2pct"
    options = PrepareOptions(family="hdfs", inputs=(str(folder / "HDFS_2pct.log"),),
                             labels=str(folder / "anomaly_label.csv"), end_line=80_000, val_ratio=0.1, seed=0)
    out = tmp_path_factory.mktemp("hdfs_slice") / "prepared"
    prepare(options, out)
    data = PreparedData(out)
    resources = build_resources(data, vector_fn=partial(bag_of_words, width=64), store=False)
    inputs = build_inputs(data, resources, "semi-supervised")
    assert 2000 <= len(inputs.train) + len(inputs.test) <= 6000
    assert inputs.train.labels is None and inputs.test_labels.sum() >= 10
    return inputs


@pytest.mark.parametrize("name", sorted(FAST))
def test_method_beats_chance_on_hdfs_slice(hdfs_slice, name: str):
    load_methods()
    method = REGISTRY[name](seed=0, threads=1, **FAST[name])
    method.fit(hdfs_slice.train, hdfs_slice.val)
    pred = method.predict(hdfs_slice.test)
    m = metrics(hdfs_slice.test_labels, pred, method.score(hdfs_slice.test))
    # Chance: F1 about 0.14 at this slice's anomaly rate (7%), ROC-AUC 0.5. PLELog's bar is lower (a
    # known weakness, reported): its labels are estimated from only ~330 unlabelled sequences here,
    # many of those it estimates anomalous are rare normal patterns, and its GRU learns "rare" from them.
    weak = name == "plelog"
    assert m["f1"] >= (0.2 if weak else 0.5), m
    assert m["roc_auc"] >= (0.6 if weak else 0.75), m
