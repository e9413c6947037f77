"""Line-level explanations: how much each message contributes to a sequence's anomaly score.

A message's contribution is the drop in the anomaly score when that one message is left out of the
sequence (leave-one-out): ``contribution[i] = score(seq) - score(seq without message i)``. A large
positive value means the message pushed the sequence towards "anomalous"; a negative one, that it
made the sequence look more normal.

Where the work is, and how it is saved:

- a sequence of n messages needs n extra scorings; they are sent to the model together, in batches,
  for all sequences being explained at once;
- variants are deduplicated: leaving out either of two equal neighbours gives the same sequence,
  and equal variants across sequences are scored once (messages with the same text at different
  positions give different variants, and are scored separately);
- a bounded cache of scores by sequence content reuses results across calls (repeated sessions,
  overlapping windows);
- the model encodes each distinct message text once (its own message cache).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What explanations need from a model: P(anomalous) for sequences of ids into a text table."""

    def score(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        ...


class ScoreCache:
    """Scores of sequences by content (a tuple of message texts), bounded, least recently used out first.

    ``score_texts`` scores lists of message texts, computing only those not cached, deduplicated, in
    one model call; ``stats`` counts hits, misses and evictions.
    """

    def __init__(self, scorer: Scorer, max_entries: int = 50_000, batch_size: int = 64, max_messages: int | None = None):
        self.scorer = scorer
        self.max_entries = max_entries
        self.batch_size = batch_size
        # The model keeps only the first max_messages messages; keys cut the same way share a score.
        self.max_messages = max_messages
        self._cache: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self.stats = {"hits": 0, "scored": 0, "evicted": 0}

    def _key(self, seq: Sequence[str]) -> tuple[str, ...]:
        return tuple(seq[: self.max_messages] if self.max_messages else seq)

    def score_texts(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        keys = [self._key(s) for s in sequences]
        out = np.empty(len(keys), dtype=np.float64)
        todo: dict[tuple[str, ...], list[int]] = {}
        for i, key in enumerate(keys):
            hit = self._cache.get(key)
            if hit is None:
                todo.setdefault(key, []).append(i)
            else:
                self._cache.move_to_end(key)
                out[i] = hit
                self.stats["hits"] += 1
        if todo:
            table: dict[str, int] = {}
            seqs = [[table.setdefault(t, len(table)) for t in key] for key in todo]
            scores = np.asarray(self.scorer.score(list(table), seqs, batch_size=self.batch_size), dtype=np.float64)
            self.stats["scored"] += len(seqs)
            for (key, where), value in zip(todo.items(), scores):
                out[where] = value
                self._cache[key] = float(value)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
                self.stats["evicted"] += 1
        return out


def leave_one_out(
    cache: ScoreCache,
    sequences: Sequence[Sequence[str]],
    base_scores: Sequence[float] | None = None,
) -> list[np.ndarray]:
    """Contribution of every message of every sequence (leave-one-out), all variants scored together.

    Returns one float array per sequence, aligned with its messages. A one-message sequence is
    compared with the empty sequence (the prompt without messages).
    """
    if base_scores is None:
        base_scores = cache.score_texts(sequences)
    variants: list[tuple[str, ...]] = []
    spans = []
    for seq in sequences:
        seq = tuple(seq)
        spans.append((len(variants), len(seq)))
        variants.extend(seq[:i] + seq[i + 1 :] for i in range(len(seq)))
    scores = cache.score_texts(variants) if variants else np.zeros(0)
    out = []
    for (start, n), base in zip(spans, base_scores):
        out.append(float(base) - scores[start : start + n])
    log.debug("explained %d sequences with %d variants", len(sequences), len(variants))
    return out


def top_k(contributions: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k positions with the largest contribution, largest first (ties: earlier position first)."""
    if k <= 0 or len(contributions) == 0:
        return []
    order = np.argsort(-np.asarray(contributions), kind="stable")[:k]
    return [(int(i), float(contributions[i])) for i in order]
