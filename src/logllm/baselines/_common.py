"""Helpers shared by the baseline methods: distinct sequences, thresholds, a small torch trainer.

Logs repeat: HDFS_2pct's 11,501 sessions hold only ~1,500 distinct masked sessions. Methods score
each distinct sequence once and train on distinct (sequence, label) pairs weighted by how often
they occur, which gives the same loss as the full list at a fraction of the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from logllm.baselines.base import MethodInput
from logllm.errors import ConfigError
from logllm.evaluate import predict

log = logging.getLogger(__name__)


@dataclass
class Distinct:
    """Distinct sequences of a list: ``seqs[inverse[i]]`` equals sequence ``i``; ``counts`` per distinct one."""

    seqs: list[np.ndarray]
    inverse: np.ndarray
    counts: np.ndarray


def distinct(seqs: Sequence[np.ndarray], labels: np.ndarray | None = None) -> tuple[Distinct, np.ndarray | None]:
    """Distinct sequences (or distinct (sequence, label) pairs when labels are given), in first-seen order."""
    index: dict[tuple, int] = {}
    inverse = np.empty(len(seqs), dtype=np.int64)
    out: list[np.ndarray] = []
    out_labels: list[int] = []
    for i, s in enumerate(seqs):
        key = (tuple(np.asarray(s).tolist()), None if labels is None else int(labels[i]))
        j = index.get(key)
        if j is None:
            j = index[key] = len(out)
            out.append(np.asarray(s, dtype=np.int64))
            if labels is not None:
                out_labels.append(int(labels[i]))
        inverse[i] = j
    counts = np.bincount(inverse, minlength=len(out)).astype(np.float64)
    return Distinct(out, inverse, counts), (None if labels is None else np.asarray(out_labels, dtype=np.int64))


def param(params: dict, name: str, default, kind: type = float):
    """A method parameter (from `--set method.name=value`), converted to ``kind``, with a clear error."""
    value = params.get(name, default)
    if value is None:
        return None
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"parameter {name}={value!r}: expected {kind.__name__}") from err


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (anomalous when ``score >= threshold``, ``logllm.evaluate.predict``) that maximises
    F1 on labeled data.

    Candidate cuts lie halfway between consecutive distinct scores (the widest margin to both
    neighbours). When consecutive cuts reach the same best F1, the middle of that range is taken.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if not len(scores):
        return 0.0
    if labels.sum() == 0:
        return float(np.nextafter(scores.max(), np.inf))  # nothing in these data is anomalous
    values = np.unique(scores)
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2])
    f1s = np.empty(len(cuts))
    for k, t in enumerate(cuts):
        pred = predict(scores, t)
        tp = float((pred & labels).sum())
        fp = float((pred & ~labels).sum())
        fn = float((~pred & labels).sum())
        f1s[k] = 2 * tp / max(2 * tp + fp + fn, 1.0)
    best = f1s >= f1s.max() - 1e-12
    k = end = int(np.flatnonzero(best)[0])
    while end + 1 < len(cuts) and best[end + 1]:  # the first run of optimal cuts
        end += 1
    return float((cuts[k] + cuts[end]) / 2)


def normal_quantile_threshold(scores: np.ndarray, quantile: float) -> float:
    """A threshold from normal data only: the smallest one above the given quantile of the normal
    sequences' scores (so with ``score >= threshold`` a score equal to the quantile is normal)."""
    if not len(scores):
        return 0.0
    return float(np.nextafter(np.quantile(np.asarray(scores, dtype=np.float64), quantile), np.inf))


def setup_torch(seed: int, threads: int) -> None:
    import torch

    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)


def train_classifier(
    model,  # torch.nn.Module mapping a batch to (B, 2) logits
    make_batch: Callable[[list[np.ndarray]], tuple],
    data: Distinct,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    name: str,
) -> list[float]:
    """Train a two-class classifier with Adam and count-weighted cross-entropy; returns loss per epoch."""
    import torch

    rng = np.random.default_rng(seed)
    weights = torch.tensor(data.counts, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    total = float(weights.sum())
    lengths = np.asarray([len(x) for x in data.seqs])
    for epoch in range(epochs):
        model.train()
        # Batches of similar length (little padding), in random order; ties broken at random.
        order = np.lexsort((rng.random(len(lengths)), lengths))
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        running = 0.0
        for b in rng.permutation(len(batches)):
            idx = batches[b]
            logits = model(*make_batch([data.seqs[i] for i in idx]))  # (B, 2)
            per = torch.nn.functional.cross_entropy(logits, y[idx], reduction="none")
            # normalised by the whole set's weight so that one epoch is one pass of the full list
            loss = (per * weights[idx]).sum() / total * (len(order) / len(idx))
            opt.zero_grad()
            loss.backward()
            opt.step()
            running += float((per.detach() * weights[idx]).sum())
        losses.append(running / total)
        log.debug("%s epoch %d: loss %.4f", name, epoch + 1, losses[-1])
    log.info("%s: %d epochs on %d distinct (sequence, label) pairs (%d sequences); final loss %.4f",
             name, epochs, len(data.seqs), int(total), losses[-1] if losses else float("nan"))
    return losses


def classifier_scores(model, make_batch: Callable[[list[np.ndarray]], tuple], inp: MethodInput,
                      use: str = "messages", batch_size: int = 256) -> np.ndarray:
    """Anomalous-class probability per sequence, each distinct sequence computed once."""
    import torch

    seqs = inp.messages if use == "messages" else inp.templates
    d, _ = distinct(seqs)
    out = np.empty(len(d.seqs), dtype=np.float64)
    order = np.argsort([len(x) for x in d.seqs], kind="stable")  # similar lengths together: less padding
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            logits = model(*make_batch([d.seqs[i] for i in idx]))
            out[idx] = torch.softmax(logits, dim=-1)[:, 1].double().numpy()
    return out[d.inverse]


def pad(seqs: list[np.ndarray], min_len: int = 1, value: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded id matrix (B, T) and boolean mask (B, T) of real positions."""
    width = max(min_len, max((len(s) for s in seqs), default=0))
    ids = np.full((len(seqs), width), value, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = True
    return ids, mask


class TorchClassifier:
    """Mixin for the supervised neural baselines: training on distinct sequences, a decision threshold.

    Subclasses (also `Method`s) set ``use`` ("messages" for semantic vectors, "templates" for
    template ids) and ``defaults``, and implement ``build`` (the torch module, given the training
    input) and ``make_batch`` (distinct sequences -> the module's arguments).

    Common parameters: ``epochs``, ``batch_size``, ``lr``, ``threads`` (torch CPU threads),
    ``weighting`` and ``threshold``. ``weighting="distinct"`` (default) trains on each distinct
    (sequence, label) pair once: HDFS_2pct's 8,280 training sessions are 1,235 distinct pairs, so an
    epoch is 6.5x cheaper, and rare anomalous patterns are not drowned by the few normal patterns
    that repeat thousands of times; it also moves the class prior (3% anomalous -> ~20%), so the
    decision threshold is then chosen on the validation split (``threshold="val"``, best F1 there)
    when the harness hands one, else by the same rule on the training split. ``weighting="count"`` weights each
    pair by its count, which is the plain loss over all sequences. ``threshold`` may also be a
    number (a fixed probability).
    """

    use: str = "messages"
    defaults: dict = {}
    seed: int
    params: dict
    name: str

    def build(self, train: MethodInput):  # -> torch.nn.Module
        raise NotImplementedError

    def make_batch(self, seqs: list[np.ndarray]) -> tuple:
        raise NotImplementedError

    def p(self, name: str, kind: type = float):
        return param(self.params, name, self.defaults[name], kind)

    def _seqs(self, inp: MethodInput) -> list[np.ndarray]:
        return inp.messages if self.use == "messages" else inp.templates

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        if train.labels is None:
            raise ConfigError(f"{self.name} is supervised and needs training labels")
        weighting = str(self.params.get("weighting", "distinct"))
        if weighting not in ("distinct", "count"):
            raise ConfigError(f"{self.name}: weighting={weighting!r}; expected `distinct` or `count`")
        setup_torch(self.seed, param(self.params, "threads", 1, int))
        self.model = self.build(train)
        data, labels = distinct(self._seqs(train), np.asarray(train.labels))
        if weighting == "distinct":
            data.counts = np.ones_like(data.counts)
        self.losses = train_classifier(self.model, self.make_batch, data, labels, self.p("epochs", int),
                                       self.p("batch_size", int), self.p("lr"), self.seed, self.name)
        labeled_val = val is not None and val.labels is not None and len(val) > 0
        choice = str(self.params.get("threshold", "val" if weighting == "distinct" else "0.5"))
        if choice == "val" and labeled_val:
            self.threshold = best_f1_threshold(self.score(val), val.labels)
            log.info("%s: threshold %.4f chosen on the validation split (%d sequences)",
                     self.name, self.threshold, len(val))
        elif choice == "val":
            # No validation split: the same rule on the training sequences (all of them, so the
            # real class prior counts), which a flexible network fits closely but never sees test.
            self.threshold = best_f1_threshold(self.score(train), train.labels)
            log.info("%s: no labeled validation split; threshold %.4f chosen on the training split",
                     self.name, self.threshold)
        else:
            self.threshold = param(self.params, "threshold", 0.5, float)

    def score(self, data: MethodInput) -> np.ndarray:
        return classifier_scores(self.model, self.make_batch, data, self.use)

    def predict(self, data: MethodInput) -> np.ndarray:
        return predict(self.score(data), self.threshold)


def standardized_vectors(train: MethodInput) -> np.ndarray:
    """The message vectors, z-scored per dimension with statistics of the training messages.

    Sentence-encoder vectors of masked log messages are close together (HDFS_2pct: per-dimension
    spread ~0.03 for MiniLM's pooler output); standardizing lets a freshly initialised network see
    their differences from the first step. Only messages that occur in training set the statistics.
    """
    vectors = np.asarray(train.resources.message_vectors(), dtype=np.float32)
    seen = np.unique(np.concatenate([np.asarray(s, dtype=np.int64) for s in train.messages])) \
        if len(train) else np.arange(len(vectors))
    mean = vectors[seen].mean(0)
    std = vectors[seen].std(0)
    return (vectors - mean) / np.maximum(std, 1e-6)
