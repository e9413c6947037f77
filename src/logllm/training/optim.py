"""The parameters a stage trains (``unfreeze_stage``), and its optimizer and learning-rate schedule,
built from the names in ``TrainConfig``.

``TrainConfig.optimizer`` names the optimizer (``"adamw"``: AdamW with ``weight_decay``) and
``TrainConfig.scheduler`` the schedule (``"step"``: start at the stage's ``lr`` and multiply it by
``lr_decay`` after every ``ceil(steps / lr_decays)`` optimiser steps, i.e. ``lr_decays`` times per
stage, without warm-up, as the reference). Each stage gets a fresh pair from ``build_optimizer``.
To add one, add a builder to ``OPTIMIZERS`` or ``SCHEDULERS`` and its name to the matching tuple in
``logllm.config``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from logllm.config import StageConfig, TrainConfig
from logllm.errors import ConfigError

log = logging.getLogger(__name__)

Optimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler


def make_adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where torch has one for these tensors (CPU and CUDA floats).

    The fused step is the same update rule as the per-tensor loop (equal up to float rounding, and
    deterministic); on the `small` preset's 45M trained parameters it takes about 0.04 s per step on
    2 CPU cores against 0.2-0.3 s for the loop. Falls back to torch's default elsewhere.
    """
    devices = {p.device.type for p in params}
    dtypes = {p.dtype for p in params}
    if len(devices) == 1 and devices <= {"cpu", "cuda"} and dtypes <= {torch.float32, torch.bfloat16, torch.float16}:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError) as err:  # an older torch, or tensors it cannot fuse
            log.debug("fused AdamW unavailable (%s); using the per-tensor loop", err)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def step_scheduler(config: TrainConfig, optimizer: Optimizer, steps: int) -> Scheduler:
    """Multiply the lr by ``lr_decay`` every ``ceil(steps / lr_decays)`` steps (never with ``lr_decays = 0``)."""
    interval = max(1, math.ceil(steps / config.lr_decays)) if config.lr_decays else steps + 1
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=interval, gamma=config.lr_decay)


OPTIMIZERS: dict[str, Callable[[TrainConfig, list[torch.nn.Parameter], float], Optimizer]] = {
    "adamw": lambda config, params, lr: make_adamw(params, lr=lr, weight_decay=config.weight_decay),
}
SCHEDULERS: dict[str, Callable[[TrainConfig, Optimizer, int], Scheduler]] = {
    "step": step_scheduler,
}


def build_optimizer(config: TrainConfig, params: list[torch.nn.Parameter], lr: float,
                    steps: int) -> tuple[Optimizer, Scheduler]:
    """The optimizer (over ``params``, starting at ``lr``) and lr scheduler (over ``steps`` optimiser
    steps) that ``config`` names. Raises ConfigError for a name it does not know."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer={config.optimizer!r} is not known; use one of {sorted(OPTIMIZERS)}")
    if config.scheduler not in SCHEDULERS:
        raise ConfigError(f"scheduler={config.scheduler!r} is not known; use one of {sorted(SCHEDULERS)}")
    optimizer = OPTIMIZERS[config.optimizer](config, params, lr)
    return optimizer, SCHEDULERS[config.scheduler](config, optimizer, steps)


def unfreeze_stage(model: Any, stage: StageConfig) -> list[torch.nn.Parameter]:
    """Freeze every parameter of ``model`` but those of the stage's parts (``model.parts()``) and return
    those, each once; ConfigError when a part is missing or has no parameters."""
    parts = model.parts()
    missing = [p for p in stage.trainable if p not in parts]
    if missing:
        raise ConfigError(f"stage {stage.name}: the model has no part(s) {missing} (has {sorted(parts)})")
    for p in model.parameters():
        p.requires_grad_(False)
    params, seen = [], set()
    for name in stage.trainable:
        for p in parts[name]:
            if id(p) not in seen:
                seen.add(id(p))
                params.append(p)
                p.requires_grad_(True)
    if not params:
        raise ConfigError(f"stage {stage.name}: parts {stage.trainable} have no parameters to train")
    return params
