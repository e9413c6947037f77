"""LogAnomaly: next-template prediction from template semantics and template counts.

Meng, Liu, Zhu, Zhang, Pei, Liu, Chen, Zhang, Tao, Sun, Zhou, "LogAnomaly: Unsupervised Detection of
Sequential and Quantitative Anomalies in Unstructured Logs", IJCAI 2019.

Design as in the paper: a window of ``h`` log templates is read twice, as the sequence of template
*semantic vectors* (sequential pattern) and as template *count vectors* (quantitative pattern), each
by an LSTM; the two final states are concatenated and a linear layer predicts the next template. As
in DeepLog, the observed template is normal if it is among the top ``g`` candidates; a sequence is
anomalous if any template is not. Templates never seen in training are matched to the most similar
known template by cosine similarity of their semantic vectors (the paper's way of absorbing new
templates), so they are judged by the model rather than flagged outright.

Deviations: template vectors are the mean of the semantic message vectors the harness provides
(``Resources.message_vectors()``, the `small` preset's encoder) over the template's messages,
instead of the paper's template2vec (word vectors trained with synonym/antonym constraints). The
quantitative input at step i is the count vector of the window's first i templates (a cumulative
count sequence), one reading of the paper's per-window counting vectors. LSTM size, window and g
follow DeepLog's HDFS settings (2 layers, 64 units, h=10, g=9). Everything else is shared with
``deeplog``: deduplicated, count-weighted windows, the end-of-sequence key (``end_key``), and g
chosen on a labelled validation split when the harness hands one (``threshold="auto"``).
``min_similarity`` (default 0, the paper's behaviour) lets a new template that resembles no known
one stay a miss instead of being absorbed by its nearest neighbour.

Saved state: DeepLog's (vocabulary, weights, decision rank) plus the key vectors; the vectors of
messages being scored come from the scored input's resources (the run's encoder).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from logllm.baselines.base import MethodInput, register
from logllm.baselines.common import PAD, KeyVocab, key_vocab_of
from logllm.baselines.deeplog import DeepLog, DeepLogConfig

log = logging.getLogger(__name__)


@dataclass
class LogAnomalyConfig(DeepLogConfig):
    match_unseen: bool = True
    """Map templates unseen in training to the most similar known template (paper); else always a miss."""
    min_similarity: float = 0.0
    """Match only when the cosine similarity is at least this (0 = always, as in the paper); an
    unmatched new template is a miss, as in DeepLog."""


class LogAnomalyNet(nn.Module):
    """Two LSTMs (semantic vectors, cumulative template counts) -> logits over the K known keys."""

    def __init__(self, key_vectors: torch.Tensor, n_keys: int, hidden: int, layers: int):
        super().__init__()
        self.register_buffer("key_vectors", key_vectors)  # (V, D), fixed
        self.n_symbols = key_vectors.shape[0]
        self.seq_lstm = nn.LSTM(key_vectors.shape[1], hidden, num_layers=layers, batch_first=True)
        self.cnt_lstm = nn.LSTM(self.n_symbols, hidden, num_layers=layers, batch_first=True)
        self.out = nn.Linear(2 * hidden, n_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sem = self.key_vectors[x]  # (B, h, D)
        one_hot = F.one_hot(x, self.n_symbols).float()
        one_hot[..., PAD] = 0.0  # padding is not an event
        counts = one_hot.cumsum(1)  # (B, h, V)
        hs, _ = self.seq_lstm(sem)
        hc, _ = self.cnt_lstm(counts)
        return self.out(torch.cat([hs[:, -1], hc[:, -1]], dim=-1))  # (B, K)


@register
class LogAnomaly(DeepLog):
    """LogAnomaly (Meng et al., IJCAI'19): template semantics + counts, LSTM next-template, top g."""

    name = "loganomaly"
    supervision = "semi-supervised"
    uses_vectors = True  # template vectors are means of message vectors (DeepLog sets False)
    paper = "Meng et al., LogAnomaly, IJCAI 2019"
    config_class = LogAnomalyConfig

    def _fit_keys(self, train: MethodInput) -> None:
        res = train.resources
        self.vocab: KeyVocab = key_vocab_of(train, extra=int(self.config.end_key))
        vectors = res.message_vectors()
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        # Template vector = mean of the vectors of its messages that occur in training.
        seen_msgs = np.unique(np.concatenate([np.asarray(m) for m in train.messages]))
        keys_of_seen = self.vocab.key_of_template[res.template_of_message[seen_msgs]]
        width = vectors.shape[1]
        key_vecs = np.zeros((self.vocab.size, width), dtype=np.float32)
        np.add.at(key_vecs, keys_of_seen, vectors[seen_msgs])
        norms = np.linalg.norm(key_vecs, axis=1, keepdims=True)
        key_vecs = np.where(norms > 0, key_vecs / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
        self.key_vectors = key_vecs

    def _message_keys(self, data: MethodInput) -> np.ndarray:
        """Key per message of the resources: its template's key, or the nearest known key if unseen."""
        res = data.resources
        keys = self.vocab.key_of_template[res.template_of_message].copy()
        unseen = np.flatnonzero(keys == self.vocab.unseen)
        if self.config.match_unseen and len(unseen):
            vectors = np.asarray(res.message_vectors(), dtype=np.float32)[unseen]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            sims = vectors @ self.key_vectors[1 : self.vocab.n_keys + 1].T
            close = sims.max(1) >= self.config.min_similarity
            keys[unseen[close]] = sims[close].argmax(1) + 1
        return keys

    def _keys(self, data: MethodInput) -> list[np.ndarray]:
        keys = self._message_keys(data)
        return self._with_end([keys[np.asarray(m, dtype=np.int64)] for m in data.messages])

    def _target_unseen(self, data: MethodInput) -> list[np.ndarray]:
        return [k == self.vocab.unseen for k in self._keys(data)]

    def _network(self) -> nn.Module:
        return LogAnomalyNet(torch.from_numpy(self.key_vectors), self.vocab.n_keys, self.config.hidden,
                             self.config.layers)

    def score(self, data: MethodInput) -> np.ndarray:
        if self.config.match_unseen:
            keys = self._message_keys(data)
            n_unseen_templates = int(
                (self.vocab.key_of_template[data.resources.template_of_message] == self.vocab.unseen).sum())
            if n_unseen_templates:
                log.info("loganomaly: %d messages of unseen templates matched to the nearest known template "
                         "(%d distinct keys used)", n_unseen_templates, len(np.unique(keys)))
        return super().score(data)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, info = super().get_state()
        return {**arrays, "key_vectors": self.key_vectors}, info

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.key_vectors = np.asarray(arrays["key_vectors"], dtype=np.float32)
        super().set_state(arrays, info)
