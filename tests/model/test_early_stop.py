"""Early stopping ends training with the weights of the best validation check, also across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from logllm.training.checkpoint import BEST_FILE
from logllm.training.trainer import Trainer, train_run

from . import test_training
from .test_training import tiny_config, weights

tiny_encoder = test_training.tiny_encoder  # the fixture: a random 1-layer width-16 BERT


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _config(encoder: Path, patience: int, epochs: int):
    # lr 1.0 makes the validation loss jump around, so the last check is rarely the best one (the decaying
    # lr can still make the last checks improve steadily: seed 2 is one where they do not, with either patience,
    # on every oversampled sample; distinct_samples is pinned so a preset change does not move the steps)
    return tiny_config(encoder, seed=2, early_stopping_patience=patience, eval_every=1, checkpoint_every=1,
                       distinct_samples=False,
                       stages=[{"name": n, "skip": True} for n in ("1", "2a", "2b")]
                       + [{"name": "3", "max_samples": 24, "epochs": epochs, "lr": 1.0}])


def _assert_best_restored(trainer: Trainer, run: Path) -> dict:
    checks = [r for r in _records(run) if r.get("event") == "validation"]
    best = min(checks, key=lambda r: r["val_loss"])
    assert best["step"] < checks[-1]["step"] and checks[-1]["val_loss"] > best["val_loss"]  # the test means something
    restored = [r for r in _records(run) if r.get("event") == "restore_best"]
    assert restored and restored[-1]["best_step"] == best["step"] == trainer.state.best_step
    assert restored[-1]["best_val_loss"] == best["val_loss"]
    # the model (in memory and in RUN/model) has the best check's weights: its validation loss is the best one
    assert trainer.validation_loss() == pytest.approx(best["val_loss"], rel=1e-5)
    saved = Trainer(trainer.config, trainer.data_dir, run, progress=False)
    saved.data, saved.texts, saved.val = trainer.data, trainer.texts, trainer.val
    saved.model = trainer.model_cls.from_pretrained(run / "model")
    assert saved.validation_loss() == pytest.approx(best["val_loss"], rel=1e-5)
    return best


def test_stopping_early_restores_the_best_weights(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path, caplog):
    run = tmp_path / "run"
    with caplog.at_level("INFO", logger="logllm.training.trainer"):
        trainer = train_run(_config(tiny_encoder, patience=2, epochs=20), tiny_prepared, run, progress=False)
    assert trainer.state.stopped_early
    best = _assert_best_restored(trainer, run)
    assert any(f"restored the weights of step {best['step']}" in r.getMessage() for r in caplog.records)


def test_best_weights_are_restored_at_the_end_without_a_stop(tiny_prepared: Path, tiny_encoder: Path,
                                                              tmp_path: Path):
    run = tmp_path / "run"
    trainer = train_run(_config(tiny_encoder, patience=100, epochs=8), tiny_prepared, run, progress=False)
    assert not trainer.state.stopped_early
    _assert_best_restored(trainer, run)


def test_best_weights_survive_a_resume(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = _config(tiny_encoder, patience=2, epochs=20)
    full = train_run(config, tiny_prepared, tmp_path / "full", progress=False)
    best_step = full.state.best_step
    assert full.state.stopped_early and best_step + 1 < full.state.global_step
    run = tmp_path / "run"
    interrupted = Trainer(config, tiny_prepared, run, progress=False)
    interrupted.setup()
    # killed one step after the best check: the newest checkpoint holds that step's weights and the best ones
    assert interrupted.train(max_steps=best_step + 1) is False
    assert (run / "checkpoints" / f"step-{best_step + 1:07d}" / BEST_FILE).is_file()
    resumed = train_run(config, tiny_prepared, run, resume=True, progress=False)
    assert resumed.state.best_step == best_step
    expected, got = weights(full.model), weights(resumed.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    _assert_best_restored(resumed, run)
