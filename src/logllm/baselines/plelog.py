"""PLELog: probabilistic labels from HDBSCAN clusters, then an attention GRU classifier.

Yang, Chen, Wang, Zhang, Liu, Zhou, Sun, "Semi-supervised Log-based Anomaly Detection via
Probabilistic Label Estimation", ICSE 2021.

Design as in the paper: each log sequence is represented by the semantic vectors of its events;
sequence vectors (mean of event vectors, reduced by PCA) of the *labelled normal* and the
*unlabelled* sequences are clustered together with HDBSCAN. An unlabelled sequence in a cluster that
holds labelled normal sequences gets a probabilistic "normal" label, any other unlabelled sequence
(including HDBSCAN's noise points) a probabilistic "anomalous" label; the confidence is HDBSCAN's
membership strength (0.5 + 0.5 * probability, noise points: 1). An unlabelled sequence identical to
a labelled normal one counts as in that one's cluster (normal, confidence 1) even where HDBSCAN calls
the rare pattern noise; without this rule the identical copies get contradictory labels. An attention-based GRU over the
event vectors is then trained on labelled normals (hard labels) and unlabelled sequences (soft
labels). The paper flags a sequence when the classifier's anomaly probability is >= 0.5 (argmax);
we instead take the threshold that best reproduces the estimated labels on the training pool (no
true label is read), because with soft targets the anomalies' probabilities settle just under 0.5
(see ``fit``).

What this project's protocol changes, exactly: PLELog needs unlabelled data, which may contain
anomalies, but the harness hands a semi-supervised method only normal training sequences. We use
the validation split as the unlabelled pool when the harness hands one, and **ignore its labels**
(they are never read by this method). Without a validation split there is no unlabelled data and
the classifier cannot be trained (likewise when no unlabelled sequence is estimated anomalous, e.g.
with ``--semi-val normal``); PLELog then degrades to its clustering step: the score is the
distance of a sequence's vector to the nearest normal training vector, with the threshold at the
0.99 quantile of leave-one-out distances of the training vectors (logged as a warning).

Event vectors are ``Resources.message_vectors()`` (the `small` preset's encoder) per message instead
of the paper's GloVe + TF-IDF template vectors; HDBSCAN is sklearn's (min_cluster_size and
min_samples as parameters); the GRU is scaled down (1 bidirectional layer, 64 units, additive
attention), trained with Adam (lr 1e-3) on distinct sequences weighted by their count, with the two
estimated classes balanced (each class's weights sum to the same total): the estimated anomalies
are a few percent of the sequences and, unbalanced, the classifier stays at "normal" for everything
(HDFS_2pct seed 0: F1 0.0, ROC-AUC 0.85).

Saved state: the GRU's weights and threshold (or, for the fallback, the normal reference vectors);
the vectors of the messages being scored come from the scored input's resources (the run's encoder).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from logllm.baselines.base import Method, MethodInput, load_module, make_config, module_arrays, register
from logllm.baselines.common import (
    EpochProgress,
    distinct,
    f1_threshold,
    torch_setup,
)
from logllm.metrics import predict, quantile_threshold

log = logging.getLogger(__name__)


@dataclass
class PLELogConfig:
    pca_dims: int = 10
    """Dimensions of the sequence vectors given to HDBSCAN."""
    min_cluster_size: int = 100
    min_samples: int = 100
    hidden: int = 64
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    max_len: int = 256
    """Longest sequence given to the GRU; longer ones are cut to their first messages (logged)."""
    threads: int = 0
    """torch intra-op threads (0 = leave torch's setting)."""


class AttentionGRU(nn.Module):
    """Bidirectional GRU over event vectors with additive attention pooling -> 2 logits."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gru = nn.GRU(width, hidden, batch_first=True, bidirectional=True)
        self.att = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        self.out = nn.Linear(2 * hidden, 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)  # (B, L, 2H)
        a = self.att(h)[..., 0].masked_fill(~mask, float("-inf")).softmax(-1)  # (B, L)
        return self.out((a[..., None] * h).sum(1))  # (B, 2)


def _batch(vectors: np.ndarray, seqs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(max((len(s) for s in seqs), default=1), 1)
    x = np.zeros((len(seqs), width, vectors.shape[1]), dtype=np.float32)
    mask = np.zeros((len(seqs), width), dtype=bool)
    for i, s in enumerate(seqs):
        if len(s):
            x[i, : len(s)] = vectors[s]
            mask[i, : len(s)] = True
        else:
            mask[i, 0] = True  # an empty sequence attends to one zero vector
    return torch.from_numpy(x), torch.from_numpy(mask)


@register
class PLELog(Method):
    """PLELog (Yang et al., ICSE'21): HDBSCAN probabilistic labels + attention GRU."""

    name = "plelog"
    supervision = "semi-supervised"
    uses_templates = False  # message vectors only
    paper = "Yang et al., PLELog, ICSE 2021"

    def __init__(self, seed: int = 0, **params: object):
        super().__init__(seed, **params)
        self.config = make_config(PLELogConfig, dict(params), self.name)
        self.threshold = 0.5

    def _seqs(self, data: MethodInput, split: str) -> list[np.ndarray]:
        seqs = [np.asarray(m, dtype=np.int64) for m in data.messages]
        cut = sum(len(s) > self.config.max_len for s in seqs)
        if cut:
            log.warning("%s: %d of %d %s sequences longer than %d messages were cut", self.name, cut,
                        len(seqs), split, self.config.max_len)
        return [s[: self.config.max_len] for s in seqs]

    def _bind(self, data: MethodInput) -> np.ndarray:
        """The unit-length message vectors of ``data``'s resources (computed once per resources)."""
        if getattr(self, "_bound", None) is not data.resources:
            vectors = data.resources.message_vectors()
            self.vectors = (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(
                np.float32)
            self._bound = data.resources
        return self.vectors

    def _seq_vectors(self, seqs: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(seqs), self.vectors.shape[1]), dtype=np.float64)
        for i, s in enumerate(seqs):
            if len(s):
                out[i] = self.vectors[s].mean(0)
        return out

    @property
    def explanation(self) -> str:  # type: ignore[override]
        return "leave-one-out" if getattr(self, "model", None) is not None else "none"

    @property
    def explanation_note(self) -> str:  # type: ignore[override]
        if getattr(self, "model", None) is not None:
            return "leave-one-out: the drop of the classifier's probability without the line"
        return "no per-line explanation (the distance fallback scores whole sequences)"

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        from sklearn.cluster import HDBSCAN
        from sklearn.decomposition import PCA

        cfg = self.config
        gen = torch_setup(self.seed, cfg.threads)
        start = time.perf_counter()
        self._bind(train)
        labelled = self._seqs(train, "train")
        unlabelled = self._seqs(val, "val") if val is not None and len(val) else []
        seq_vec = self._seq_vectors(labelled + unlabelled)
        dims = max(1, min(cfg.pca_dims, seq_vec.shape[1], len(seq_vec) - 1))
        self.pca = PCA(n_components=dims, random_state=self.seed).fit(seq_vec)
        reduced = self.pca.transform(seq_vec)
        if not unlabelled:
            log.warning("%s: no unlabelled sequences (no validation split handed); PLELog cannot estimate "
                        "labels and falls back to the distance to the nearest normal training sequence", self.name)
            self.model = None
            self._fit_distance(seq_vec)
            log.info("%s: fitted in %.1fs (distance fallback)", self.name, time.perf_counter() - start)
            return

        min_size = max(2, min(cfg.min_cluster_size, len(reduced) // 2))
        min_samples = max(1, min(cfg.min_samples, min_size))
        clusterer = HDBSCAN(min_cluster_size=min_size, min_samples=min_samples).fit(reduced)
        log.info("%s: HDBSCAN on %d sequence vectors (%d dims) took %.1fs", self.name, len(reduced), dims,
                 time.perf_counter() - start)
        labels, prob = clusterer.labels_, clusterer.probabilities_
        n_lab = len(labelled)
        normal_clusters = set(labels[:n_lab][labels[:n_lab] >= 0].tolist())
        u_labels, u_prob = labels[n_lab:], prob[n_lab:]
        is_normal = np.array([c >= 0 and c in normal_clusters for c in u_labels], dtype=bool)
        confidence = np.where(u_labels >= 0, 0.5 + 0.5 * u_prob, 1.0)
        # A sequence identical to a labelled normal one sits at distance 0 from it: it shares its
        # "cluster" even where HDBSCAN calls that rare pattern noise.
        known = {s.tobytes() for s in labelled}
        twin = np.array([s.tobytes() in known for s in unlabelled], dtype=bool)
        confidence = np.where(twin & ~is_normal, 1.0, confidence)
        is_normal |= twin
        target = np.where(is_normal, 1.0 - confidence, confidence)  # probability of "anomalous"
        log.info("%s: HDBSCAN found %d clusters (%d with labelled normals); %d unlabelled sequences: "
                 "%d estimated normal (%d as twins of labelled normals), %d anomalous (%d of them noise "
                 "points)", self.name, len(set(labels.tolist()) - {-1}), len(normal_clusters), len(unlabelled),
                 int(is_normal.sum()), int(twin.sum()), int((~is_normal).sum()), int((~is_normal & (u_labels < 0)).sum()))
        if is_normal.all():
            log.warning("%s: every unlabelled sequence was estimated normal; with one class the classifier "
                        "cannot learn, falling back to the distance to the nearest normal training sequence",
                        self.name)
            self.model = None
            self._fit_distance(seq_vec[:n_lab])
            return

        # Distinct (sequence, target, class) triples with counts: the count-weighted loss equals the full one.
        pool = labelled + unlabelled
        targets = np.concatenate([np.zeros(n_lab), target])
        est_anomalous = np.concatenate([np.zeros(n_lab, dtype=bool), ~is_normal])
        index: dict[tuple[bytes, float, bool], int] = {}
        seqs: list[np.ndarray] = []
        y_list: list[float] = []
        cls_list: list[bool] = []
        count_list: list[float] = []
        for seq_, t, a in zip(pool, targets, est_anomalous):
            key = (seq_.tobytes(), float(t), bool(a))
            j = index.get(key)
            if j is None:
                j = index[key] = len(seqs)
                seqs.append(seq_)
                y_list.append(float(t))
                cls_list.append(bool(a))
                count_list.append(0.0)
            count_list[j] += 1.0
        y = torch.tensor(y_list, dtype=torch.float32)
        counts = np.asarray(count_list)
        # Class-balanced weights: the estimated-anomalous sequences (a few percent) weigh as much in total
        # as the normal ones; with the plain count-weighted loss the GRU never leaves "all normal".
        anomalous = np.asarray(cls_list)
        w_np = counts.copy()
        for part in (anomalous, ~anomalous):
            if part.any():
                w_np[part] = counts[part] / counts[part].sum()
        w = torch.from_numpy(w_np.astype(np.float32))
        self.model = AttentionGRU(self.vectors.shape[1], cfg.hidden)
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.model.train()
        progress = EpochProgress(self.name, cfg.epochs, "balanced loss")
        for epoch in range(cfg.epochs):
            perm = torch.randperm(len(seqs), generator=gen)
            total = 0.0
            for b in range(0, len(seqs), cfg.batch_size):
                idx = perm[b : b + cfg.batch_size]
                x, mask = _batch(self.vectors, [seqs[i] for i in idx])
                logp = F.log_softmax(self.model(x, mask), -1)
                soft = torch.stack([1 - y[idx], y[idx]], -1)
                loss_each = -(soft * logp).sum(-1)
                loss = (loss_each * w[idx]).sum() / w[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float((loss_each.detach() * w[idx]).sum())
            progress.epoch(epoch + 1, total / float(w.sum()))
        self.model.eval()
        # The decision threshold is the one that best reproduces the *estimated* labels on the training
        # pool (no true label is read). Argmax (0.5) sits in the middle of the soft targets and, on
        # HDFS_2pct, flags nothing although the anomalies score far above the normal sequences.
        estimated = np.concatenate([np.zeros(n_lab), (~is_normal).astype(float)])
        pool_scores = self.score(MethodInput(labelled + unlabelled, train.resources))
        chosen = f1_threshold(pool_scores, estimated, "the estimated labels") if (~is_normal).any() else None
        self.threshold = 0.5 if chosen is None else chosen
        log.info("%s: trained in %.1fs on %d labelled normal + %d unlabelled sequences (%d distinct); "
                 "anomalous if probability >= %.4f", self.name, time.perf_counter() - start, n_lab,
                 len(unlabelled), len(seqs), self.threshold)

    def _fit_distance(self, vectors: np.ndarray) -> None:
        from sklearn.neighbors import NearestNeighbors

        # Full vectors: a PCA fitted on normal sequences only would project out what makes anomalies differ.
        self.reference = np.unique(vectors, axis=0)
        self.nn = NearestNeighbors(n_neighbors=min(2, len(self.reference))).fit(self.reference)
        dist, _ = self.nn.kneighbors(vectors)
        # Leave-one-out: a training vector's own entry is at distance 0; take the next neighbour.
        loo = dist[:, -1] if dist.shape[1] > 1 else dist[:, 0]
        self.threshold = quantile_threshold(loo, 0.99)

    @torch.no_grad()
    def score(self, data: MethodInput) -> np.ndarray:
        """Anomaly probability of the classifier (fallback: distance to the nearest normal vector)."""
        seqs = self._seqs(data, "scored")
        self._bind(data)
        if self.model is None:
            dist, _ = self.nn.kneighbors(self._seq_vectors(seqs), n_neighbors=1)
            return dist[:, 0].astype(np.float64)
        d, _ = distinct(seqs)
        out = np.zeros(len(d.seqs), dtype=np.float64)
        for b in range(0, len(d.seqs), 256):
            x, mask = _batch(self.vectors, d.seqs[b : b + 256])
            out[b : b + 256] = self.model(x, mask).softmax(-1)[:, 1].double().numpy()
        return out[d.inverse]

    def predict(self, data: MethodInput) -> np.ndarray:
        return predict(self.score(data), self.threshold)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        if self.model is None:
            return {"reference": self.reference}, {"threshold": float(self.threshold), "classifier": False}
        width = int(self.model.gru.input_size)
        return module_arrays(self.model, "model."), {"threshold": float(self.threshold), "classifier": True,
                                                     "width": width}

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.threshold = float(info["threshold"])
        if not info["classifier"]:
            self.model = None
            self.reference = np.asarray(arrays["reference"])
            self.nn = NearestNeighbors(n_neighbors=min(2, len(self.reference))).fit(self.reference)
            return
        self.model = AttentionGRU(int(info["width"]), self.config.hidden)
        load_module(self.model, arrays, "model.", self.name)
