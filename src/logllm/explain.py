"""Line-level explanations: how much each message contributes to a sequence's anomaly score.

A message's contribution is the drop in the anomaly score when that message is left out of the
sequence: ``contribution[i] = score(seq) - score(seq without message i)``. By default that is the
one line (``by="position"``); ``by="text"`` leaves out every occurrence of the line's masked text at
once. A large positive value means the message pushed the sequence towards "anomalous";
a negative one, that it made the sequence look more normal.

A sequence longer than the model's ``max_messages`` is read as windows and scores as its highest
window (`logllm.scoring.WindowPlan`). A line is left out of the windows that hold it, the other
windows staying as they are, and the sequence's score is taken again over all windows: every line of
the sequence is explained, each by its effect on the windows that read it. Under the max rule only
the lines of the highest windows can change the score; the others get 0 (or less).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from logllm.scoring import WindowPlan

log = logging.getLogger(__name__)


class Scorer(Protocol):
    """What explanations need from a model: P(anomalous) for sequences of ids into a text table."""

    def score(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        ...


class LogitScorer(Scorer, Protocol):
    """A model that also gives its (N, 2) answer logits (normal, anomalous), as `LogLLM` does."""

    def answer_logits(self, texts: Sequence[str], sequences: Sequence[Sequence[int]],
                      batch_size: int = 64) -> Any:
        ...


LeaveOut = Literal["text", "position"]
ScoreFn = Callable[[Sequence[str], Sequence[Sequence[int]], int], np.ndarray]


def probability_fn(model: Scorer) -> ScoreFn:
    """P(anomalous) from the model's own ``score`` (what `evaluate` reports)."""
    return lambda texts, seqs, batch_size: np.asarray(model.score(texts, seqs, batch_size=batch_size), dtype=np.float64)


def log_odds_fn(model: Scorer | LogitScorer) -> ScoreFn:
    """log P(anomalous) - log P(normal) per sequence, in float64.

    Probabilities near 0 or 1 lose their differences in float32 (a window full of alert lines
    scores 1.0 with or without any one of them), so explanations rank by log-odds: the difference
    of the model's ``answer_logits`` (the computation behind its ``score``). A model without them (a
    stand-in in tests) falls back to the logit of its probability.
    """
    answer_logits = getattr(model, "answer_logits", None)
    if answer_logits is None:
        def from_probability(texts: Sequence[str], seqs: Sequence[Sequence[int]], batch_size: int) -> np.ndarray:
            p = np.clip(np.asarray(model.score(texts, seqs, batch_size=batch_size), dtype=np.float64), 1e-300, 1.0)
            q = np.clip(1.0 - p, 1e-300, 1.0)
            return np.log(p) - np.log(q)

        return from_probability

    def from_logits(texts: Sequence[str], seqs: Sequence[Sequence[int]], batch_size: int) -> np.ndarray:
        logits = answer_logits(texts, seqs, batch_size=batch_size).double().cpu().numpy()  # (N, 2)
        return logits[:, 1] - logits[:, 0]

    return from_logits


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class ScoreCache:
    """Values of a score function by sequence content (a tuple of message texts), bounded, least
    recently used out first.

    ``score_texts`` scores lists of message texts, computing only those not cached, deduplicated, in
    one call of ``fn(texts, sequences, batch_size)``; ``stats`` counts hits, computed and evicted
    entries. A model may be given instead of ``fn``: its ``score`` is used.

    ``windows``: how the model reads a long sequence (`WindowPlan.of(model)`); `leave_one_out` needs it
    to explain such sequences window by window (None: every sequence is read whole).
    """

    def __init__(self, fn: ScoreFn | Scorer, max_entries: int = 50_000, batch_size: int = 64,
                 windows: WindowPlan | None = None):
        self.fn: ScoreFn = fn if not hasattr(fn, "score") else probability_fn(fn)  # type: ignore[arg-type]
        self.max_entries = max_entries
        self.batch_size = batch_size
        self.windows = windows
        self._cache: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self.stats = {"hits": 0, "scored": 0, "evicted": 0}

    def score_texts(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        keys = [tuple(s) for s in sequences]
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
            scores = np.asarray(self.fn(list(table), seqs, self.batch_size), dtype=np.float64)
            self.stats["scored"] += len(seqs)
            for (key, where), value in zip(todo.items(), scores):
                out[where] = value
                self._cache[key] = float(value)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
                self.stats["evicted"] += 1
        return out


@dataclass
class Contributions:
    """Leave-one-out contributions of one sequence's messages, aligned with its messages.

    ``probability``: P(anomalous) of the sequence minus that without the message; ``log_odds``: the
    same drop in log-odds (what messages are ranked by: it keeps its resolution near 0 and 1).
    """

    probability: np.ndarray
    log_odds: np.ndarray


def leave_one_out(cache: ScoreCache, sequences: Sequence[Sequence[str]],
                  by: LeaveOut = "position") -> list[Contributions]:
    """Contribution of every message of every sequence, all variants scored together.

    ``by="position"`` (default) leaves out one line at a time. ``by="text"`` leaves out every
    occurrence of a message's masked text at once and credits the drop to each of its lines (a burst
    of identical alert lines explains a window together); it also removes many lines of a frequent
    normal text at once, which on the Thunderbird sample ranked alert lines lower (docs/detect.md). ``cache`` must hold log-odds (`log_odds_fn`). A sequence left
    with no message is compared with the empty sequence (the prompt without messages).

    With ``cache.windows``, a sequence longer than the window size is scored as the maximum of its
    windows' log-odds, and a line (or text) is left out of the windows that hold it only (module
    docstring); each window and each variant of a window is scored once (cached).
    """
    if by not in ("text", "position"):
        raise ValueError(f"by={by!r}: use 'text' or 'position'")
    plans = []  # per sequence: its windows, and per window the units (lines or texts) it holds
    variants: list[tuple[str, ...]] = []
    for seq in sequences:
        seq = tuple(seq)
        spans = cache.windows.spans(len(seq)) if cache.windows else [(0, len(seq))]
        if by == "text":
            unit_of = {t: j for j, t in enumerate(dict.fromkeys(seq))}
            units = [unit_of[t] for t in seq]
        else:
            units = list(range(len(seq)))
        per_window = []
        for a, b in spans:
            window = seq[a:b]
            held = list(dict.fromkeys(units[a:b]))
            first = len(variants)
            variants.append(window)
            variants.extend(tuple(t for t, u in zip(window, units[a:b]) if u != h) for h in held)
            per_window.append((first, held))
        plans.append((units, per_window))
    scores = cache.score_texts(variants) if variants else np.zeros(0)
    out = []
    for units, per_window in plans:
        n_units = max(units) + 1 if units else 0
        base = np.array([scores[first] for first, _ in per_window])  # (windows,)
        # without[u, w]: window w's log-odds with unit u left out (its own score when it lacks u)
        without = np.repeat(base[None, :], n_units, axis=0)  # (units, windows)
        for w, (first, held) in enumerate(per_window):
            without[held, w] = scores[first + 1: first + 1 + len(held)]
        b = base.max() if len(base) else 0.0
        v = without.max(axis=1) if n_units else np.zeros(0)  # (units,)
        at = np.asarray(units, dtype=np.int64)
        out.append(Contributions(probability=sigmoid(b) - sigmoid(v[at]), log_odds=b - v[at]))
    log.debug("explained %d sequences with %d variants (leaving out by %s)", len(sequences), len(variants), by)
    return out


def top_k(contributions: Contributions, k: int, keys: Sequence[Any] | None = None) -> list[tuple[int, float]]:
    """The k positions with the largest contribution (ranked by log-odds drop), largest first, ties
    by position; returned as ``(index, probability drop)``.

    With ``keys`` (the sequence's masked messages), a message already listed is not listed again:
    each of the k positions is the best-ranked line of a different message. A window of 100 lines
    often holds the same alert (or its companion lines) many times, and three copies of one message
    tell the reader one thing; the k distinct messages tell k.
    """
    if k <= 0 or len(contributions.log_odds) == 0:
        return []
    order = np.argsort(-contributions.log_odds, kind="stable")
    if keys is None:
        return [(int(i), float(contributions.probability[i])) for i in order[:k]]
    if len(keys) != len(order):
        raise ValueError(f"top_k: {len(keys)} keys for {len(order)} contributions")
    out: list[tuple[int, float]] = []
    seen: set[Any] = set()
    for i in order:
        if keys[i] in seen:
            continue
        seen.add(keys[i])
        out.append((int(i), float(contributions.probability[i])))
        if len(out) == k:
            break
    return out
