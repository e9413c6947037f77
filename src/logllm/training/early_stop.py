"""Early stopping on the validation loss, in the last trained stage (``early_stopping_patience``).

The validation loss is checked every ``eval_every`` optimiser steps (or at each epoch end); a check
that improves on the best so far keeps a CPU copy of the trained parameters, and after
``early_stopping_patience`` checks without improvement the stage stops and those parameters are
loaded back. The bookkeeping lives in ``TrainState`` (saved with every checkpoint) and the copy in
the checkpoint's ``best_weights.safetensors``, so a resumed run stops where an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch

from logllm.config import TrainConfig
from logllm.data.dataset import SequenceSet
from logllm.errors import ConfigError
from logllm.training.checkpoint import TrainState


def check_due(config: TrainConfig, state: TrainState, has_val: bool, epoch_end: bool) -> bool:
    """Whether a validation check follows the optimiser step just taken."""
    last_stage = max(i for i, s in enumerate(config.stages) if not s.skip)
    if config.early_stopping_patience is None or not has_val or state.stage_index != last_stage:
        return False
    return bool(state.global_step % config.eval_every == 0) if config.eval_every else epoch_end


def validation_batch_losses(model: torch.nn.Module, texts: list[str], val: SequenceSet, batch_size: int,
                            part: int = 0, parts: int = 1) -> dict[int, float]:
    """Summed loss (mean loss x rows) of the labeled validation batches ``part, part + parts, ...``, by
    batch index (no gradients, eval mode; train mode after). ``parts`` processes together cover every batch."""
    known = np.flatnonzero(val.labels >= 0)
    out: dict[int, float] = {}
    model.eval()
    try:
        with torch.no_grad():
            for b in range(part, -(-len(known) // batch_size), parts):
                idx = known[b * batch_size: (b + 1) * batch_size]
                seqs = [val.message_ids[j].tolist() for j in idx]
                labels = [int(val.labels[j]) for j in idx]
                out[b] = float(model.loss(texts, seqs, labels)) * len(idx)
    finally:
        model.train()
    return out


def combine_batch_losses(losses: dict[int, float], val: SequenceSet) -> float:
    """Mean validation loss from every batch's ``validation_batch_losses``, summed in batch order (so the
    value does not depend on how the batches were shared out)."""
    total = 0.0
    for b in sorted(losses):
        total += losses[b]
    return total / max(1, int((val.labels >= 0).sum()))


def validation_loss(model: torch.nn.Module, texts: list[str], val: SequenceSet, batch_size: int) -> float:
    """Mean loss on the labeled validation sequences (no gradients, eval mode; train mode after)."""
    return combine_batch_losses(validation_batch_losses(model, texts, val, batch_size), val)


def record_check(state: TrainState, val_loss: float, patience: int) -> bool:
    """Count a validation check in ``state`` (best loss and step, checks without improvement, whether to
    stop); returns whether it improved on the best so far."""
    improved = state.best_val_loss is None or val_loss < state.best_val_loss
    if improved:
        state.best_val_loss, state.best_step, state.bad_checks = val_loss, state.global_step, 0
    else:
        state.bad_checks += 1
    state.stopped_early = state.bad_checks >= patience
    return improved


def trained_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters being trained (those of the stage in progress), by name."""
    return {name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def load_parameters(model: torch.nn.Module, kept: dict[str, torch.Tensor]) -> None:
    """Copy ``kept`` (from ``trained_parameters``) into the model's parameters of those names."""
    params = dict(model.named_parameters())
    missing = sorted(set(kept) - set(params))
    if missing:
        raise ConfigError(f"the kept best validation weights name parameters the model does not have: "
                          f"{missing[:3]}; the checkpoint does not belong to this model")
    with torch.no_grad():
        for name, value in kept.items():
            params[name].copy_(value.to(params[name].device))
