"""Model-free helpers of batched scoring: check the input, score each distinct sequence once, and plan
batches of similar lengths. `logllm.model.logllm.LogLLM.answer_logits` puts them together.

Where the work goes (METHOD.md section 6) and how it is avoided:

- masked messages repeat: each distinct text is encoded once per call, or not at all when the
  model's frozen-encoder cache already holds it, and projected once;
- sequences repeat: identical sequences (after the ``max_messages`` cut) are scored once
  (`deduplicate`);
- only the label position needs logits: the decoder runs to the head of the answer and returns the
  logits of the last position only, of which the two answer tokens are read.

Distinct sequences are batched longest first (`length_batches`) so a batch holds similar lengths
(little padding); results do not depend on the batch size, as rows are left-padded with explicit
position ids.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

from logllm.errors import DataError

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
