"""An early estimate of how long training will take, from the first optimiser steps of each stage.

Stages differ in cost: stages whose encoder is frozen (1, 2a) read cached message vectors, while the
stages that train the encoder (2b, 3) encode every message of every step. So the rule is per stage:

- each stage is timed from its first step in this process (a resumed run times its own steps, never
  those of the session before it); after ``after_steps`` of its steps or ``after_seconds``, whichever
  comes first, one estimate is made (and again at the start of every later stage);
- the stage's seconds per step so far cost its own remaining steps; each later stage is costed at the
  rate of the latest stage already timed of the same kind (encoder frozen or trained), else at the
  current rate. A later stage that trains the encoder, costed at the rate of a frozen-encoder stage,
  is slower than that: the estimate is then a lower bound, and says so.

The clock is a parameter (``clock``), so the arithmetic is tested with a fake one::

    est = DurationEstimator([("1", 100, False), ("2b", 50, True)], clock=fake_clock)
    est.stage_begins(0, steps_done=0)
    ... est.step_done(0, stage_step) -> Estimate | None after each step
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DurationEstimator", "Estimate", "StageCost"]

HOW_TO_SHORTEN = ("to shorten it, lower [[stages]] max_samples or epochs, or model.max_messages / the window "
                  "(docs/model.md)")


@dataclass(frozen=True)
class StageCost:
    """A stage as the estimate sees it: its name, all its optimiser steps (0 if skipped), and whether
    it trains the encoder (then no cached vectors: slower steps)."""

    name: str
    steps: int
    encoder_trained: bool


@dataclass(frozen=True)
class Estimate:
    """One estimate: made during ``stage`` after global step ``step``."""

    stage: str
    step: int
    seconds_per_step: float
    remaining_steps: int
    remaining_seconds: float
    #: how each stage with steps left was costed: "measured", "like stage X", or "as stage X (lower bound)"
    basis: dict[str, str]

    @property
    def lower_bound(self) -> bool:
        return any("lower bound" in b for b in self.basis.values())

    def text(self) -> str:
        minutes = self.remaining_seconds / 60
        shown = f"{minutes:.1f}" if minutes < 10 else f"{minutes:,.0f}"
        slower = [name for name, b in self.basis.items() if "lower bound" in b]
        caveat = (f"; at least: stage(s) {', '.join(slower)} train the encoder and are slower per step "
                  "(re-estimated when they start)" if slower else "")
        return (f"estimated training time: ~{shown} min for {self.remaining_steps:,} remaining steps "
                f"({self.seconds_per_step:.3g} s/step so far in stage {self.stage}){caveat}; {HOW_TO_SHORTEN}")

    def record(self) -> dict[str, Any]:
        """The ``estimate`` event of train_log.jsonl."""
        return {"event": "estimate", "stage": self.stage, "step": self.step,
                "seconds_per_step": round(self.seconds_per_step, 6), "remaining_steps": self.remaining_steps,
                "estimated_seconds": round(self.remaining_seconds, 3), "lower_bound": self.lower_bound,
                "basis": self.basis}


class DurationEstimator:
    """Times the optimiser steps of each stage and makes one :class:`Estimate` per stage (rule above).

    ``stages``: every stage of the config in order (:class:`StageCost` or ``(name, steps, encoder_trained)``).
    """

    def __init__(self, stages: Sequence[StageCost | tuple[str, int, bool]], *,
                 clock: Callable[[], float] = time.perf_counter, after_steps: int = 5, after_seconds: float = 60.0):
        self.stages = [s if isinstance(s, StageCost) else StageCost(*s) for s in stages]
        self.clock = clock
        self.after_steps = after_steps
        self.after_seconds = after_seconds
        self.rates: dict[int, float] = {}  # seconds per step of each stage timed in this process
        self._stage: int | None = None
        self._t0 = 0.0
        self._first = 0  # the stage's steps done before timing started (a resumed run)
        self._done = False  # this stage's estimate is made

    def stage_begins(self, stage_index: int, steps_done: int = 0) -> None:
        """Start timing ``stage_index``, of which ``steps_done`` steps were done before (resumed)."""
        self._stage, self._t0, self._first, self._done = stage_index, self.clock(), steps_done, False

    def step_done(self, stage_step: int, global_step: int) -> Estimate | None:
        """After an optimiser step (``stage_step`` steps of the current stage done): the stage's
        estimate when it is due, else None."""
        if self._stage is None:
            return None
        timed = stage_step - self._first
        elapsed = self.clock() - self._t0
        if timed < 1:
            return None
        self.rates[self._stage] = elapsed / timed
        if self._done or (timed < self.after_steps and elapsed < self.after_seconds):
            return None
        self._done = True
        return self.estimate(stage_step, global_step)

    def estimate(self, stage_step: int, global_step: int) -> Estimate | None:
        """The estimate now, from the rates measured so far (None when no step is left)."""
        i = self._stage
        assert i is not None and i in self.rates
        rate = self.rates[i]
        current = self.stages[i]
        left = [(i, current.steps - stage_step)] + [(k, s.steps) for k, s in enumerate(self.stages) if k > i]
        left = [(k, n) for k, n in left if n > 0]
        if not left:
            return None
        seconds, basis = 0.0, {}
        for k, n in left:
            k_rate, basis[self.stages[k].name] = self._rate_of(k, i)
            seconds += n * k_rate
        return Estimate(current.name, global_step, rate, sum(n for _, n in left), seconds, basis)

    def _rate_of(self, k: int, current: int) -> tuple[float, str]:
        """Seconds per step of stage ``k`` and how it was found, while stage ``current`` runs."""
        if k == current:
            return self.rates[k], "measured"
        stage = self.stages[k]
        alike = [j for j in self.rates if self.stages[j].encoder_trained == stage.encoder_trained]
        if alike:
            j = max(alike)
            return self.rates[j], f"like stage {self.stages[j].name}"
        now = self.stages[current]
        slower = stage.encoder_trained and not now.encoder_trained
        return self.rates[current], f"as stage {now.name}" + (" (lower bound)" if slower else "")
