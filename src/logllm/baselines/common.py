"""Helpers shared by the baseline methods; each method's own module holds only that method.

- `distinct` sequences: logs repeat (HDFS_2pct's 11,501 sessions hold only ~1,500 distinct masked
  sessions), so methods score each distinct sequence once and train on distinct (sequence, label)
  pairs weighted by how often they occur, which gives the same loss as the full list at a
  fraction of the cost;
- thresholds chosen on labelled validation data (`f1_threshold`, `threshold_on_val`), by the rules
  of `logllm.metrics`, the same for every method and for LogLLM;
- `CountClassifier` (KNN, DT on template counts) and `TorchClassifier` with its trainer (LogRobust,
  CNN, NeuralLog) for the supervised methods;
- log keys for the semi-supervised methods (DeepLog, LogAnomaly, LogBERT, FastLogAD): `KeyVocab`,
  and the key transformer that LogBERT and FastLogAD share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from logllm.baselines.base import Method, MethodInput, load_module, module_arrays, param
from logllm.errors import ConfigError
from logllm.metrics import best_f1_threshold, predict, quantile_threshold

log = logging.getLogger(__name__)

C = TypeVar("C")

PAD = 0  # key index of padding; known keys are 1..K; K+1 is "unseen in training"


# --------------------------------------------------------------------------- progress


class EpochProgress:
    """One log line per training epoch: loss, seconds so far and an estimate of the seconds left.

    Neural baselines can train for many minutes on long sequences; a line per epoch tells the user
    the bench is moving and when it will be done (``logllm bench`` logs at INFO by default).
    """

    def __init__(self, name: str, epochs: int, what: str = "loss") -> None:
        self.name = name
        self.epochs = epochs
        self.what = what
        self.start = time.perf_counter()

    def epoch(self, done: int, loss: float) -> None:
        """Log the end of epoch ``done`` (1-based) with its ``loss``."""
        elapsed = time.perf_counter() - self.start
        left = elapsed / max(done, 1) * (self.epochs - done)
        log.info("%s epoch %d/%d: %s %.4f (%.1fs, about %.0fs left)", self.name, done, self.epochs, self.what,
                 loss, elapsed, left)


# --------------------------------------------------------------------------- distinct sequences


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
        key = (np.asarray(s, dtype=np.int64).tobytes(), None if labels is None else int(labels[i]))
        j = index.get(key)
        if j is None:
            j = index[key] = len(out)
            out.append(np.asarray(s, dtype=np.int64))
            if labels is not None:
                out_labels.append(int(labels[i]))
        inverse[i] = j
    counts = np.bincount(inverse, minlength=len(out)).astype(np.float64)
    return Distinct(out, inverse, counts), (None if labels is None else np.asarray(out_labels, dtype=np.int64))


# --------------------------------------------------------------------------- thresholds


def f1_threshold(scores: np.ndarray, labels: np.ndarray, source: str = "validation data") -> float:
    """The F1-best threshold (`logllm.metrics.best_f1_threshold`) on the labelled sequences (label
    -1 is left out); when none of them is anomalous, the smallest threshold above every score, so
    that nothing seen here is flagged."""
    labels = np.asarray(labels)
    known = labels >= 0
    scores = np.asarray(scores, dtype=np.float64)[known]
    labels = labels[known]
    if not (labels == 1).any():
        threshold = quantile_threshold(scores, 1.0)
        log.info("threshold %.4g above every score on %s (no anomalous sequence among %d)", threshold, source,
                 len(labels))
        return threshold
    threshold, f1 = best_f1_threshold(labels, scores)
    log.info("threshold %.4g chosen on %s (F1 %.3f on %d sequences)", threshold, source, f1, len(labels))
    return threshold


def val_labels(val: MethodInput | None) -> np.ndarray | None:
    """Validation labels if given and holding both classes, else None."""
    if val is None or val.labels is None:
        return None
    y = np.asarray(val.labels)
    if (y == 1).sum() == 0 or (y == 0).sum() == 0:
        return None
    return y


def threshold_on_val(method: Any, val: MethodInput | None) -> float | None:
    """The F1-best threshold of ``method.score`` on the validation split; None without a labelled
    validation split holding both classes (the semi-supervised methods then keep their own rule)."""
    y = val_labels(val)
    if y is None:
        return None
    assert val is not None
    return f1_threshold(method.score(val), y)


# --------------------------------------------------------------------------- torch and supervised classifiers


def torch_setup(seed: int, threads: int) -> torch.Generator:
    """Seed torch and return a generator; ``threads`` > 0 sets torch's intra-op thread count."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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
    rng = np.random.default_rng(seed)
    weights = torch.tensor(data.counts, dtype=torch.float32)
    y = torch.tensor(labels, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    total = float(weights.sum())
    lengths = np.asarray([len(x) for x in data.seqs])
    progress = EpochProgress(name, epochs)
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
        progress.epoch(epoch + 1, losses[-1])
    log.info("%s: %d epochs on %d distinct (sequence, label) pairs (%d sequences); final loss %.4f",
             name, epochs, len(data.seqs), int(total), losses[-1] if losses else float("nan"))
    return losses


def classifier_scores(model, make_batch: Callable[[list[np.ndarray]], tuple], inp: MethodInput,
                      use: str = "messages", batch_size: int = 256) -> np.ndarray:
    """Anomalous-class probability per sequence, each distinct sequence computed once."""
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
    template ids) and ``defaults``, and implement ``architecture`` (the module's sizes as JSON values,
    given the training input), ``module`` (the torch module of an architecture) and ``make_batch``
    (distinct sequences -> the module's arguments; message vectors are ``self.vectors``, the
    vectors of the input being scored, z-scored with the training statistics).

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
    explanation = "leave-one-out"
    explanation_note = "leave-one-out: the drop of the classifier's probability without the line"

    @property
    def param_names(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset(self.defaults) | {"weighting", "threshold", "threads"}

    def architecture(self, train: MethodInput) -> dict:
        raise NotImplementedError

    def module(self, arch: dict):  # -> torch.nn.Module
        raise NotImplementedError

    def make_batch(self, seqs: list[np.ndarray]) -> tuple:
        raise NotImplementedError

    def p(self, name: str, kind: type = float):
        return param(self.params, name, self.defaults[name], kind)

    def _seqs(self, inp: MethodInput) -> list[np.ndarray]:
        return inp.messages if self.use == "messages" else inp.templates

    def _bind(self, inp: MethodInput) -> None:
        """Point ``self.vectors`` at the standardized message vectors of ``inp``'s resources."""
        if self.use != "messages" or getattr(self, "_bound", None) is inp.resources:
            return
        mean, std = self.vector_stats
        self.vectors = torch.tensor(standardize(inp.resources.message_vectors(), mean, std))
        self._bound = inp.resources

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        if train.labels is None:
            raise ConfigError(f"{self.name} is supervised and needs training labels")
        weighting = str(self.params.get("weighting", "distinct"))
        if weighting not in ("distinct", "count"):
            raise ConfigError(f"{self.name}: weighting={weighting!r}; expected `distinct` or `count`")
        torch_setup(self.seed, param(self.params, "threads", 1, int))
        if self.use == "messages":
            self.vector_stats = vector_stats(train)
            self._bind(train)
        self.arch = self.architecture(train)
        self.model = self.module(self.arch)
        data, labels = distinct(self._seqs(train), np.asarray(train.labels))
        if weighting == "distinct":
            data.counts = np.ones_like(data.counts)
        self.losses = train_classifier(self.model, self.make_batch, data, labels, self.p("epochs", int),
                                       self.p("batch_size", int), self.p("lr"), self.seed, self.name)
        labeled_val = val is not None and val.labels is not None and len(val) > 0
        choice = str(self.params.get("threshold", "val" if weighting == "distinct" else "0.5"))
        if choice == "val" and labeled_val:
            self.threshold = f1_threshold(self.score(val), val.labels, f"{self.name}'s validation split")
        elif choice == "val":
            # No validation split: the same rule on the training sequences (all of them, so the
            # real class prior counts), which a flexible network fits closely but never sees test.
            self.threshold = f1_threshold(self.score(train), train.labels,
                                          f"{self.name}'s training split (no labeled validation split)")
        else:
            self.threshold = param(self.params, "threshold", 0.5, float)

    def score(self, data: MethodInput) -> np.ndarray:
        self._bind(data)
        return classifier_scores(self.model, self.make_batch, data, self.use)

    def predict(self, data: MethodInput) -> np.ndarray:
        return predict(self.score(data), self.threshold)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = module_arrays(self.model, "model.")
        if self.use == "messages":
            arrays["vector_mean"], arrays["vector_std"] = self.vector_stats
        return arrays, {"architecture": self.arch, "threshold": float(self.threshold)}

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.arch = dict(info["architecture"])
        self.threshold = float(info["threshold"])
        if self.use == "messages":
            self.vector_stats = (arrays["vector_mean"], arrays["vector_std"])
        self.model = self.module(self.arch)
        load_module(self.model, arrays, "model.", self.name)


def count_vectors(inp: MethodInput) -> np.ndarray:
    """(n_sequences, n_templates) template counts; template 0 counts messages unknown to training."""
    out = np.zeros((len(inp), inp.resources.n_templates), dtype=np.float64)
    for i, t in enumerate(inp.templates):
        out[i] = np.bincount(t, minlength=inp.resources.n_templates)
    return out


class CountClassifier(Method):
    """A scikit-learn classifier on template counts (Yu et al., ICSE'24); subclasses set ``self.model``
    in ``fit``. Score: the classifier's probability of the anomalous class; prediction: its class."""

    supervision = "supervised"
    uses_vectors: ClassVar[bool] = False  # template counts/ids only: the harness skips the encoder
    paper: ClassVar[str] = "Yu et al., ICSE 2024 (Deep Learning or Classical Machine Learning?)"
    model: Any
    explanation = "leave-one-out"
    explanation_note = "leave-one-out: the drop of the classifier's probability without the line"

    def score(self, data: MethodInput) -> np.ndarray:
        proba = self.model.predict_proba(count_vectors(data))
        classes = list(self.model.classes_)
        return proba[:, classes.index(1)].astype(np.float64) if 1 in classes else np.zeros(len(data))

    def predict(self, data: MethodInput) -> np.ndarray:
        return self.model.predict(count_vectors(data)).astype(bool)


def vector_stats(train: MethodInput) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of the message vectors of the training messages.

    Sentence-encoder vectors of masked log messages are close together (HDFS_2pct: per-dimension
    spread ~0.03 for MiniLM's pooler output); standardizing lets a freshly initialised network see
    their differences from the first step. Only messages that occur in training set the statistics.
    """
    vectors = np.asarray(train.resources.message_vectors(), dtype=np.float32)
    seen = np.unique(np.concatenate([np.asarray(s, dtype=np.int64) for s in train.messages])) \
        if len(train) else np.arange(len(vectors))
    return vectors[seen].mean(0), vectors[seen].std(0)


def standardize(vectors: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Message vectors z-scored with training statistics (`vector_stats`)."""
    return (np.asarray(vectors, dtype=np.float32) - mean) / np.maximum(std, 1e-6)


# --------------------------------------------------------------------------- log keys (semi-supervised methods)


@dataclass(frozen=True)
class KeyVocab:
    """Log keys seen in training: template id -> key index 1..K (PAD=0, unseen=K+1)."""

    key_of_template: np.ndarray  # (n_templates,) int64
    n_keys: int  # K

    @property
    def unseen(self) -> int:
        return self.n_keys + 1

    @property
    def size(self) -> int:
        """Number of input symbols: PAD, K keys, unseen."""
        return self.n_keys + 2

    @classmethod
    def fit(cls, templates: Sequence[np.ndarray], n_templates: int, extra: int = 0) -> KeyVocab:
        """Keys for the templates that occur; ``extra`` keys (e.g. end of sequence) follow them."""
        seen = np.zeros(n_templates, dtype=bool)
        for t in templates:
            seen[t] = True
        ids = np.flatnonzero(seen)
        key = np.full(n_templates, -1, dtype=np.int64)
        key[ids] = np.arange(1, len(ids) + 1)
        key[key < 0] = len(ids) + extra + 1
        return cls(key_of_template=key, n_keys=len(ids) + extra)

    def keys(self, templates: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self.key_of_template[t] for t in templates]

    def arrays(self) -> dict[str, np.ndarray]:
        """The vocabulary as named arrays (a method's saved state)."""
        return {"key_of_template": self.key_of_template, "n_keys": np.asarray([self.n_keys], dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> KeyVocab:
        return cls(np.asarray(arrays["key_of_template"], dtype=np.int64), int(arrays["n_keys"][0]))


def key_vocab_of(train: MethodInput, extra: int = 0) -> KeyVocab:
    """The key vocabulary of a training input (all templates that occur in it, then ``extra`` keys)."""
    vocab = KeyVocab.fit(train.templates, train.resources.n_templates, extra)
    log.info("key vocabulary: %d of %d templates occur in %d training sequences",
             vocab.n_keys, train.resources.n_templates, len(train))
    return vocab


class KeyTransformer(nn.Module):
    """Transformer encoder over key ids with learned positions; returns hidden states (B, L, W)."""

    def __init__(self, n_symbols: int, width: int, layers: int, heads: int, ff: int, max_len: int,
                 dropout: float = 0.1):
        super().__init__()
        self.embed = nn.Embedding(n_symbols, width, padding_idx=0)
        self.pos = nn.Embedding(max_len, width)
        layer = nn.TransformerEncoderLayer(width, heads, ff, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.embed(x) + self.pos(positions)[None]  # (B, L, W)
        h = self.encoder(h, src_key_padding_mask=x == 0)  # (B, L, W)
        return self.norm(h)


@dataclass(frozen=True)
class Symbols:
    """Input symbols of the BERT-style models: PAD 0, keys 1..K, unseen K+1, MASK K+2, DIST K+3."""

    vocab: KeyVocab

    @property
    def mask(self) -> int:
        return self.vocab.n_keys + 2

    @property
    def dist(self) -> int:
        return self.vocab.n_keys + 3

    @property
    def size(self) -> int:
        return self.vocab.n_keys + 4


def pad_batch(seqs: Sequence[np.ndarray], first: int) -> torch.Tensor:
    """[first] + keys, right-padded with 0: (B, 1 + longest)."""
    width = 1 + max((len(s) for s in seqs), default=0)
    out = np.zeros((len(seqs), width), dtype=np.int64)
    out[:, 0] = first
    for i, s in enumerate(seqs):
        out[i, 1 : 1 + len(s)] = s
    return torch.from_numpy(out)


def truncate(seqs: list[np.ndarray], max_keys: int, name: str, split: str) -> list[np.ndarray]:
    cut = sum(len(s) > max_keys for s in seqs)
    if cut:
        log.warning("%s: %d of %d %s sequences longer than %d keys were cut to their first %d keys",
                    name, cut, len(seqs), split, max_keys, max_keys)
    return [s[:max_keys] for s in seqs]


def sample_batches(counts: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Indices of distinct sequences, drawn in proportion to how often each occurs."""
    p = counts / counts.sum()
    for _ in range(steps):
        yield rng.choice(len(counts), size=batch_size, p=p)


def key_sequences(method: Any, data: MethodInput, split: str) -> list[np.ndarray]:
    """Key ids per sequence (with the end key when ``config.end_key``), cut to leave room for [DIST];
    shared by LogBERT and FastLogAD, whose ``config`` and ``vocab`` have the same fields."""
    keys = method.vocab.keys(data.templates)
    if method.config.end_key:
        keys = [np.append(k, method.vocab.n_keys) for k in keys]  # the last known key is the end key
    return truncate(keys, method.config.max_len - 1, method.name, split)
