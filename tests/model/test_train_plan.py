"""`train` logs its planned optimiser steps per stage before the first step (no model is built)."""

from __future__ import annotations

from pathlib import Path

from logllm.config import apply_overrides, preset
from logllm.training.trainer import Trainer


def test_plan_counts_the_steps_of_each_stage(tmp_path: Path) -> None:
    config = apply_overrides(preset("small"), {
        "model": {"decoder": "tiny-llama", "device": "cpu"}, "micro_batch": 4, "grad_accum": 2,
        "stages": [{"name": "1", "max_samples": 24, "epochs": 2}, {"name": "2a", "epochs": 1},
                   {"name": "2b", "skip": True}, {"name": "3", "epochs": 3}],
    }).validate()
    trainer = Trainer(config, tmp_path / "data", tmp_path / "run", progress=False)
    trainer.samples = list(range(100))  # what setup() takes from the prepared folder
    # stage 1: 24 samples -> 6 micro-batches -> 3 steps, x 2 epochs; 2a: 100 -> 25 -> 13; 3: 13 x 3
    assert trainer.plan_text().startswith(
        "training plan: 58 optimiser steps (stage 1 6, stage 2a 13, stage 2b 0, stage 3 39) over 100 samples, "
        "4 x 2 per step;")
