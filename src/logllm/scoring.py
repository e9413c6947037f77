"""One-pass batched scoring: P(anomalous answer) against P(normal answer) at the label position.

Where the work goes (METHOD.md section 6) and how it is avoided:

- masked messages repeat: each distinct text is encoded once per call, or not at all when the
  model's frozen-encoder cache already holds it, and projected once;
- sequences repeat: identical sequences (after the ``max_messages`` cut) are scored once;
- only the label position needs logits: the decoder runs to the head of the answer and returns the
  logits of the last position only, of which the two answer tokens are read.

Unique sequences are sorted by length so a batch holds similar lengths (little padding); results are
returned in input order and do not depend on ``batch_size`` (rows are left-padded with explicit
position ids).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from logllm.errors import DataError

if TYPE_CHECKING:
    from logllm.model.logllm import LogLLM

log = logging.getLogger(__name__)


def check_sequences(sequences: Sequence[Sequence[object]], what: str = "message ids") -> None:
    """Refuse input that would be scored as something else: a string where a sequence is expected
    (its characters would become messages) and sequences without messages (only the prompt)."""
    if isinstance(sequences, (str, bytes)):
        raise TypeError(f"expected a list of sequences of {what}, got one string {sequences[:40]!r}")
    for i, seq in enumerate(sequences):
        if isinstance(seq, (str, bytes)):
            raise TypeError(f"sequence {i} is a string ({seq[:40]!r}), not a sequence of {what}: "
                            "wrap each sequence in a list, e.g. [[message, ...], ...]")
        if len(seq) == 0:
            raise DataError(f"sequence {i} is empty: a sequence needs at least one message to be scored")


def score_sequences(model: LogLLM, texts: Sequence[str], sequences: Sequence[Sequence[int]],
                    batch_size: int = 64) -> np.ndarray:
    """P(anomalous) per sequence (float64, input order), from one decoder pass per batch, no grad.

    texts: the table of masked messages; sequences: message ids into it.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"texts must be a list of message texts, got one string {texts[:40]!r}")
    check_sequences(sequences)
    if not sequences:
        return np.zeros(0, dtype=np.float64)
    started = time.perf_counter()
    seqs = model._canonical(texts, sequences)
    unique: dict[tuple[int, ...], int] = {}
    inverse = np.array([unique.setdefault(s, len(unique)) for s in seqs], dtype=np.int64)
    distinct = list(unique)
    used = sorted({i for s in distinct for i in s})
    local = {g: j for j, g in enumerate(used)}
    rows = [[local[i] for i in s] for s in distinct]
    encoded_before = model.stats["encoder_texts"]
    was_training = model.training
    model.eval()
    scores = np.zeros(len(distinct), dtype=np.float64)
    with torch.no_grad():
        projected = model._project(texts, used)  # (m, H): each distinct message projected once
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            logits = model.label_logits(projected, [rows[i] for i in batch])  # (b, 2): normal, anomalous
            scores[batch] = torch.softmax(logits, dim=-1)[:, 1].double().cpu().numpy()
    model.train(was_training)
    log.info("scored %d sequences (%d distinct) over %d distinct messages (%d encoded now) in %.2fs",
             len(seqs), len(distinct), len(used), model.stats["encoder_texts"] - encoded_before,
             time.perf_counter() - started)
    return scores[inverse]
