"""What each optimiser step trains on: the training samples and their order in every epoch.

The order is a pure function of (seed, stage, epoch), so a checkpoint need only record the
sampler's position as (stage, epoch, optimiser step within the epoch) to resume exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from logllm.config import TrainConfig
from logllm.training.oversample import OversampleReport, distinct_samples, oversample

log = logging.getLogger(__name__)

LengthKey = Callable[[int], tuple[int, int, list[int]]]

#: ``TrainConfig.distinct_weight`` -> (what the log calls it, the pair weights from the pair counts)
PAIR_WEIGHTS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "count": ("its count", lambda counts: counts),
    "sqrt": ("the square root of its count", np.sqrt),
    "one": ("1", np.ones_like),
}


def training_samples(ids: list[list[int]], labels: np.ndarray,
                     config: TrainConfig) -> tuple[np.ndarray, np.ndarray | None, OversampleReport]:
    """The sample indices an epoch draws from (oversampled with ``beta``), the per-sequence loss weights
    with ``distinct_samples`` (else None), and the oversampling report.

    With ``distinct_samples`` each distinct (sequence, label) pair is one sample, weighted by how often
    it occurs among the oversampled samples (``distinct_weight``: that count, its square root, or 1;
    `PAIR_WEIGHTS`). Whole sequences are compared: a sequence longer than ``max_messages`` trains on one
    of its windows, chosen by the model at each step (`logllm.scoring.training_windows`), so two long
    sequences that share their first windows differ."""
    samples, report = oversample(labels, config.beta, config.seed)
    if not config.distinct_samples or len(samples) == 0:
        return samples, None, report
    keys = [(tuple(s), int(y)) for s, y in zip(ids, labels, strict=True)]
    samples, counts = distinct_samples(samples, keys)
    weight = np.zeros(len(ids))
    rule, weigh = PAIR_WEIGHTS[config.distinct_weight]
    weight[samples] = weigh(counts)
    log.info("distinct samples: the loss weight of a pair is %s (distinct_weight=%s)", rule, config.distinct_weight)
    return samples, weight, report


def length_key(ids: list[list[int]], labels: np.ndarray, max_messages: int) -> LengthKey:
    """The ``group_by_length`` sort key of a sample: (decoder length, label, messages). A sequence longer
    than ``max_messages`` trains on one window of ``max_messages`` messages, so that is its length."""
    def key(i: int) -> tuple[int, int, list[int]]:
        seq = ids[i]
        return min(len(seq), max_messages), int(labels[i]), seq

    return key


def epoch_order(samples: np.ndarray, config: TrainConfig, stage_index: int, epoch: int,
                key: LengthKey) -> np.ndarray:
    """Training-sample indices of one epoch: a seeded permutation, capped at the stage's max_samples.

    With ``group_by_length`` each window of that many micro-batches is sorted by ``key``, cut into
    micro-batches, and the epoch's micro-batches are shuffled (seeded).
    """
    stage = config.stages[stage_index]
    rng = np.random.default_rng([config.seed, stage_index, epoch])
    order = samples[rng.permutation(len(samples))]
    if stage.max_samples is not None:
        order = order[: stage.max_samples]
    if not config.group_by_length:
        return order
    window, mb = config.group_by_length * config.micro_batch, config.micro_batch
    batches = []
    for start in range(0, len(order), window):
        part = sorted(order[start: start + window].tolist(), key=key)
        batches += [part[i: i + mb] for i in range(0, len(part), mb)]
    # The last (possibly short) micro-batch stays last, so every group keeps micro_batch rows but one.
    head, tail = batches[:-1], batches[-1:]
    head = [head[i] for i in rng.permutation(len(head))]
    return np.asarray([i for b in head + tail for i in b], dtype=samples.dtype)


def step_groups(order: np.ndarray, config: TrainConfig) -> list[list[np.ndarray]]:
    """An epoch's order cut into micro-batches, ``grad_accum`` of them per optimiser step."""
    mb, ga = config.micro_batch, config.grad_accum
    batches = [order[i: i + mb] for i in range(0, len(order), mb)]
    return [batches[i: i + ga] for i in range(0, len(batches), ga)]


def steps_in_stage(n_samples: int, config: TrainConfig, stage_index: int) -> int:
    """Optimiser steps of a stage over ``n_samples`` training samples (all its epochs)."""
    stage = config.stages[stage_index]
    n = n_samples if stage.max_samples is None else min(stage.max_samples, n_samples)
    return math.ceil(math.ceil(n / config.micro_batch) / config.grad_accum) * stage.epochs
