"""Validation: early stopping on the validation loss (``early_stopping_patience``), and the threshold.

The validation loss is checked every ``eval_every`` optimiser steps (or at each epoch end); a check
that improves on the best so far keeps a CPU copy of the trained parameters, and after
``early_stopping_patience`` checks without improvement the stage stops and those parameters are
loaded back. The bookkeeping lives in ``TrainState`` (saved with every checkpoint) and the copy in
the checkpoint's ``best_weights.safetensors``, so a resumed run stops where an uninterrupted one would.
After training, ``threshold_on_val`` picks the decision threshold on the validation split.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from logllm.config import TrainConfig
from logllm.data.dataset import SequenceSet
from logllm.errors import ConfigError
from logllm.evaluate import DEFAULT_THRESHOLD, choose_threshold
from logllm.training.checkpoint import TrainState

log = logging.getLogger(__name__)


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


def restore_best(model: Any, kept: dict[str, torch.Tensor] | None, state: TrainState) -> dict[str, Any] | None:
    """Load the parameters kept at the best validation loss into the model; returns the train-log record,
    or None when none were kept (logged as a warning when there was a best check)."""
    st = state
    if kept is None:
        if st.best_val_loss is not None:
            log.warning("the best validation weights (validation loss %.5f) were not kept (a checkpoint from "
                        "before they were); the model keeps its last weights", st.best_val_loss)
        return None
    load_parameters(model, kept)
    return {"event": "restore_best", "step": st.global_step, "best_step": st.best_step,
            "best_val_loss": st.best_val_loss}


def threshold_on_val(model: Any, texts: list[str], val: SequenceSet | None, batch_size: int) -> dict[str, Any]:
    """The decision threshold chosen on the validation split (max F1), or 0.5 without one (saying why)."""
    if val is None:
        return {"threshold": DEFAULT_THRESHOLD, "source": "default",
                "reason": "the prepared folder has no val split; 0.5 is used (prepare with a validation split "
                          "to choose it by F1)"}
    known = val.labels >= 0
    labels = val.labels[known]
    if labels.sum() == 0:
        return {"threshold": DEFAULT_THRESHOLD, "source": "default",
                "reason": "the val split has no anomalous sequence, so F1 cannot choose; 0.5 is used"}
    seqs = [m.tolist() for m, k in zip(val.message_ids, known) if k]
    scores = np.asarray(model.score(texts, seqs, batch_size=batch_size))
    threshold, f1 = choose_threshold(labels, scores)
    return {"threshold": threshold, "source": "val", "val_f1": f1, "val_sequences": int(known.sum()),
            "val_anomalous": int(labels.sum())}
