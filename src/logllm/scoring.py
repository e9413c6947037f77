"""Model-free helpers of batched scoring: check the input, score each distinct sequence once, and plan
batches of similar lengths. `logllm.model.logllm.LogLLM.answer_logits` puts them together.

Where the work goes (METHOD.md section 6) and how it is avoided:

- masked messages repeat: each distinct text is encoded once per call, or not at all when the
  model's frozen-encoder cache already holds it, and projected once;
- sequences repeat: identical windows are scored once (`deduplicate`), within a sequence and
  across sequences;
- only the label position needs logits: the decoder runs to the head of the answer and returns the
  logits of the last position only, of which the two answer tokens are read.

Distinct sequences are batched longest first (`length_batches`) so a batch holds similar lengths
(little padding); results do not depend on the batch size, as rows are left-padded with explicit
position ids.

Long sequences (`WindowPlan`): a sequence longer than the model's ``max_messages`` is read as
windows of ``max_messages`` messages starting every ``long_stride`` messages, the last one ending at
its last message, and its score is that of its highest-scoring window (`best_windows`). Scoring,
evaluation, detection, explanations and the report all go through this rule (the model's
``answer_logits``), so no message of a sequence is left unread. Training reads a long sequence as its
highest-scoring window under the current model (`training_windows`): the window whose score is the
sequence's score, so the loss is that of the sequence's score (multiple-instance learning with max
pooling).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from logllm.errors import ConfigError, DataError

K = TypeVar("K", bound=Hashable)


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


def deduplicate(keys: Sequence[K]) -> tuple[list[K], np.ndarray]:
    """The distinct keys in order of first appearance, and for each input key the index of its
    distinct key (int64): ``[distinct[i] for i in inverse] == list(keys)``."""
    first: dict[K, int] = {}
    inverse = np.array([first.setdefault(k, len(first)) for k in keys], dtype=np.int64)
    return list(first), inverse


def local_rows(sequences: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """The message ids the sequences use (sorted), and each sequence as indices into that list: a
    batch then needs the vectors of those messages only, each computed once."""
    used = sorted({int(i) for s in sequences for i in s})
    local = {g: j for j, g in enumerate(used)}
    return used, [[local[int(i)] for i in s] for s in sequences]


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into ``lengths`` in batches of at most ``batch_size``, longest first (ties in input
    order), so that each batch pads its rows little."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


@dataclass(frozen=True)
class WindowPlan:
    """How a sequence longer than the model reads at once is read: windows of ``size`` messages
    starting every ``stride`` messages, the last one ending at the sequence's last message (so it may
    overlap the one before). A sequence of at most ``size`` messages is its own single window."""

    size: int
    stride: int

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and self.size > 0):
            raise ConfigError(f"max_messages must be a positive integer, got {self.size!r}")
        if not (isinstance(self.stride, int) and 0 < self.stride <= self.size):
            raise ConfigError(f"model.long_stride must be an integer in [1, max_messages={self.size}] (a larger "
                              f"stride would leave messages unread), got {self.stride!r}")

    @classmethod
    def of(cls, model_or_config: Any) -> WindowPlan | None:
        """The plan of a model (its ``config``) or of a ModelConfig: ``max_messages`` and ``long_stride``
        (None: ``max_messages``, windows that do not overlap); None when it has no ``max_messages``."""
        config = getattr(model_or_config, "config", model_or_config)
        size = getattr(config, "max_messages", None)
        if size is None:
            return None
        return cls(int(size), int(getattr(config, "long_stride", None) or size))

    def spans(self, n: int) -> list[tuple[int, int]]:
        """``(start, end)`` of the windows of a sequence of ``n`` messages, in order."""
        if n <= self.size:
            return [(0, n)]
        starts = [*range(0, n - self.size, self.stride), n - self.size]
        return [(s, s + self.size) for s in starts]

    def expand(self, sequences: Sequence[Sequence[K]]) -> tuple[list[tuple[K, ...]], np.ndarray]:
        """Every sequence's windows (tuples), sequence after sequence, and for each window the index of
        its sequence (int64)."""
        windows: list[tuple[K, ...]] = []
        owner: list[int] = []
        for i, seq in enumerate(sequences):
            seq = tuple(seq)
            spans = self.spans(len(seq))
            windows.extend(seq[a:b] for a, b in spans)
            owner.extend([i] * len(spans))
        return windows, np.asarray(owner, dtype=np.int64)


def best_windows(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """For each of ``n`` sequences, the index of its highest-valued window (the first on ties).

    ``values``: one value per window (e.g. the anomaly log-odds); ``owner``: each window's sequence, in
    the order `WindowPlan.expand` gives (a sequence's windows together, every sequence with one at least).
    """
    values = np.asarray(values, dtype=np.float64)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    counts = np.bincount(owner, minlength=n)
    if len(counts) != n or (counts == 0).any():
        raise ValueError("best_windows: every sequence needs at least one window")
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    top = np.maximum.reduceat(values, starts)
    hits = np.flatnonzero(values >= top[owner])
    return hits[np.searchsorted(owner[hits], np.arange(n))]


def training_windows(sequences: Sequence[Sequence[K]], plan: WindowPlan,
                     log_odds: Callable[[list[tuple[K, ...]]], np.ndarray]) -> tuple[list[tuple[K, ...]], int]:
    """What each sequence trains on: itself when it fits in one window, else its highest-scoring window
    by ``log_odds`` (the current model's anomaly log-odds of a list of windows, computed without
    gradients), which is the window behind the sequence's score. Also returns how many were long."""
    out = [tuple(s) for s in sequences]
    long = [i for i, s in enumerate(out) if len(s) > plan.size]
    if not long:
        return out, 0
    windows, owner = plan.expand([out[i] for i in long])
    distinct, inverse = deduplicate(windows)
    values = np.asarray(log_odds(distinct), dtype=np.float64)[inverse]
    for i, w in zip(long, best_windows(values, owner, len(long))):
        out[i] = windows[int(w)]
    return out, len(long)
