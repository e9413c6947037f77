"""The `small` preset, trained briefly on a slice of HDFS_2pct prepared here, beats chance on its test part."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_small_preset_learns_hdfs_slice(shared_data: Path, tmp_path: Path):
    from logllm.config import apply_overrides, preset
    from logllm.data.options import PrepareOptions
    from logllm.data.prepare import prepare
    from logllm.evaluate import evaluate
    from logllm.training.trainer import train_run

    hdfs = shared_data / "HDFS_2pct"
    options = PrepareOptions(family="hdfs", inputs=(str(hdfs / "HDFS_2pct.log"),),
                             labels=str(hdfs / "anomaly_label.csv"), seed=0, val_ratio=0.1, end_line=60_000)
    prepared = prepare(options, tmp_path / "prepared").out
    # The real small preset (pretrained MiniLM encoder, SmolLM2 decoder with LoRA, distinct pairs), with
    # no stage 2b and two stage-3 epochs instead of three: minutes on the 2-core CI machine.
    config = apply_overrides(preset("small"), {
        "checkpoint_every": 0,
        "stages": [{"name": "2b", "skip": True}, {"name": "3", "epochs": 2}],
    })
    trainer = train_run(config, prepared, tmp_path / "run", progress=False)
    metrics = evaluate(tmp_path / "run", prepared, "test", model=trainer.model)
    assert metrics.anomalous > 0 and metrics.sequences > 200
    # Chance is 0.5. With 27 anomalous and 538 normal test sessions the ROC-AUC of random scores has a
    # standard deviation of about 0.057, so 0.8 is 5 of them above chance.
    assert metrics.roc_auc > 0.8, metrics.summary()
