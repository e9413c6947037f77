"""The early estimate of the training time (logllm.training.estimate), on a fake clock: no timed assertions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from logllm.training.estimate import DurationEstimator
from logllm.training.trainer import Trainer

from . import test_training
from .test_training import tiny_config

tiny_encoder = test_training.tiny_encoder  # the fixture: a random 1-layer width-16 BERT


class FakeClock:
    """A clock that reads ``now``; the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_steps(est: DurationEstimator, clock: FakeClock, first: int, n: int, seconds: float, global_start: int = 0):
    """``n`` steps of ``seconds`` each after stage step ``first``; the estimates made, by stage step."""
    out = {}
    for k in range(first + 1, first + n + 1):
        clock.now += seconds
        e = est.step_done(k, global_start + k)
        if e is not None:
            out[k] = e
    return out


def test_each_stage_is_estimated_from_its_own_first_steps() -> None:
    clock = FakeClock()
    est = DurationEstimator([("1", 20, False), ("2a", 10, False), ("2b", 10, True), ("3", 0, True)], clock=clock)
    est.stage_begins(0)
    got = run_steps(est, clock, 0, 20, 2.0)
    assert list(got) == [5]  # after 5 steps, once per stage
    e = got[5]
    # 15 steps left of stage 1 at 2 s; 2a like stage 1; 2b (trains the encoder) at least as stage 1; 3 skipped.
    assert (e.stage, e.step, e.seconds_per_step, e.remaining_steps) == ("1", 5, 2.0, 35)
    assert e.remaining_seconds == pytest.approx(15 * 2 + 10 * 2 + 10 * 2)
    assert e.basis == {"1": "measured", "2a": "like stage 1", "2b": "as stage 1 (lower bound)"}
    assert e.lower_bound
    text = e.text()
    assert text.startswith("estimated training time: ~1.2 min for 35 remaining steps (2 s/step so far in stage 1)")
    assert "at least: stage(s) 2b train the encoder" in text and "lower [[stages]] max_samples or epochs" in text
    assert e.record() == {"event": "estimate", "stage": "1", "step": 5, "seconds_per_step": 2.0,
                          "remaining_steps": 35, "estimated_seconds": 70.0, "lower_bound": True, "basis": e.basis}
    # Stage 2a costs more per step than stage 1 did: its own estimate uses its own rate.
    est.stage_begins(1)
    e = run_steps(est, clock, 0, 10, 4.0, global_start=20)[5]
    assert (e.step, e.remaining_steps, e.remaining_seconds) == (25, 15, pytest.approx(5 * 4 + 10 * 4))
    assert e.basis == {"2a": "measured", "2b": "as stage 2a (lower bound)"}
    # Stage 2b is timed itself: no lower bound any more.
    est.stage_begins(2)
    e = run_steps(est, clock, 0, 10, 10.0, global_start=30)[5]
    assert (e.remaining_steps, e.remaining_seconds, e.lower_bound) == (5, pytest.approx(50.0), False)
    assert e.basis == {"2b": "measured"}


def test_a_slow_stage_is_estimated_after_60_seconds_and_a_resumed_one_from_its_own_steps() -> None:
    clock = FakeClock()
    est = DurationEstimator([("3", 100, True)], clock=clock)
    est.stage_begins(0)
    got = run_steps(est, clock, 0, 3, 40.0)
    assert list(got) == [2]  # 80 s after the stage began, before its 5th step
    assert (got[2].seconds_per_step, got[2].remaining_steps, got[2].remaining_seconds) == (40.0, 98, 98 * 40.0)
    assert "~65 min for 98 remaining steps" in got[2].text()
    # A resumed run (60 steps done before) is timed on its own steps only, and counts only what is left.
    clock = FakeClock()
    est = DurationEstimator([("3", 100, True)], clock=clock)
    clock.now = 5000.0
    est.stage_begins(0, steps_done=60)
    got = run_steps(est, clock, 60, 5, 3.0)
    assert list(got) == [65] and got[65].seconds_per_step == 3.0 and got[65].remaining_steps == 35
    # Nothing left after the last step: no estimate.
    est = DurationEstimator([("1", 5, False)], clock=clock)
    est.stage_begins(0)
    assert run_steps(est, clock, 0, 5, 1.0) == {}


def test_training_logs_and_records_the_estimate(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    ticks = iter(range(10_000))
    config = tiny_config(tiny_encoder, checkpoint_every=0,
                         stages=[{"name": "1", "max_samples": 24, "epochs": 2}, {"name": "2a", "skip": True},
                                 {"name": "2b", "max_samples": 24, "epochs": 2}, {"name": "3", "skip": True}])
    trainer = Trainer(config, tiny_prepared, tmp_path / "run", progress=False, clock=lambda: float(next(ticks)))
    trainer.setup()
    with caplog.at_level(logging.INFO, logger="logllm.training.trainer"):
        assert trainer.train()
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    events = [r for r in records if r.get("event") == "estimate"]
    # 6 steps per stage; the clock ticks once per call (1 s per step): each stage estimated after 5 steps.
    assert [(e["stage"], e["step"], e["remaining_steps"], e["estimated_seconds"]) for e in events] == [
        ("1", 5, 7, 7.0), ("2b", 11, 1, 1.0)]
    assert events[0]["basis"] == {"1": "measured", "2b": "as stage 1 (lower bound)"}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("estimated training time")]
    assert len(lines) == 2 and "for 7 remaining steps (1 s/step so far in stage 1)" in lines[0]
