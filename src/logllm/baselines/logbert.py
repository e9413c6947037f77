"""LogBERT: masked log-key prediction plus a hypersphere objective on a [DIST] token.

Guo, Yuan, Wu, "LogBERT: Log Anomaly Detection via BERT", IJCNN 2021.

Design as in the paper: a log sequence of keys (template ids) is prefixed with a [DIST] token and read
by a transformer encoder. Training on normal sequences only minimises (1) masked log key prediction
(MLKP): a random share of keys is replaced by [MASK] and predicted, and (2) the volume of the
hypersphere (VHM): the squared distance of the [DIST] output to the centre of normal sequences,
weighted by alpha. At test time keys are masked the same way; a masked key is "anomalous" if it is
not among the top ``g`` predictions (or was never seen in training), and a sequence is anomalous if
more than a share ``r`` of its masked keys are.

Hyperparameters: mask ratio 0.5, g=6 and alpha=0.1 follow the authors' HDFS setting as we read it;
the model is scaled down for a CPU (2 layers, width 64, 4 heads, feed-forward 256 instead of
4 layers, width 256) and trained for 1000 Adam steps (lr 1e-3, batch 32) on sequences drawn in
proportion to their frequency (distinct sequences are stored once, with counts); the hypersphere
centre is recomputed every tenth of training. As in ``deeplog``, an end-of-sequence key is appended
(``end_key=True``, not in the paper) so that a session that stops early leaves a visible gap. For a
deterministic score every key is masked exactly once: positions are dealt to ``round(1/ratio)``
masking rounds by a permutation seeded by the method's seed and the sequence's keys, so that a
sequence scores the same whatever else is scored with it (as `logllm detect` needs). Score = share of keys judged anomalous; r is chosen by F1 on
the validation split when the harness hands one with labels, else it is the 0.99 quantile of the
training sequences' scores (any sequence above every normal pattern the model has seen).
Sequences longer than ``max_len - 1`` keys are cut to their first keys (counted and logged).
Saved state: the key vocabulary, the network's weights, the hypersphere centre and the threshold.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from logllm.baselines.base import Method, MethodInput, load_module, make_config, module_arrays, register
from logllm.baselines.common import (
    KeyTransformer,
    KeyVocab,
    Symbols,
    distinct,
    key_sequences,
    key_vocab_of,
    pad_batch,
    sample_batches,
    threshold_on_val,
    torch_setup,
)
from logllm.metrics import predict, quantile_threshold

log = logging.getLogger(__name__)


@dataclass
class LogBERTConfig:
    mask_ratio: float = 0.5
    """Share of keys masked, in training and per test round."""
    top_g: int = 6
    """A masked key is normal if among the g most likely candidates."""
    alpha: float = 0.1
    """Weight of the hypersphere (VHM) loss."""
    layers: int = 2
    width: int = 64
    heads: int = 4
    ff: int = 256
    max_len: int = 256
    """Longest input ([DIST] + keys); longer sequences are cut (logged)."""
    end_key: bool = True
    """Append an end-of-sequence key (not in the paper; as in ``deeplog``, it lets a session that stops
    early be noticed)."""
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    threshold: Literal["auto", "train"] = "auto"
    """``auto``: r by F1 on a labelled validation split if handed one, else ``train``; ``train``: the
    ``quantile`` of training scores."""
    quantile: float = 0.99
    threads: int = 0
    """torch intra-op threads (0 = leave torch's setting)."""


class LogBERTNet(nn.Module):
    def __init__(self, symbols: Symbols, cfg: LogBERTConfig):
        super().__init__()
        self.encoder = KeyTransformer(symbols.size, cfg.width, cfg.layers, cfg.heads, cfg.ff, cfg.max_len)
        self.mlkp = nn.Linear(cfg.width, symbols.vocab.n_keys)  # predicts keys 1..K as classes 0..K-1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, L, W)
        return self.mlkp(h), h[:, 0]  # (B, L, K), (B, W)


@register
class LogBERT(Method):
    """LogBERT (Guo et al., IJCNN'21): masked log key prediction + hypersphere, top-g misses."""

    name = "logbert"
    supervision = "semi-supervised"
    uses_vectors = False  # template keys only
    paper = "Guo et al., LogBERT, IJCNN 2021"

    def __init__(self, seed: int = 0, **params: object):
        super().__init__(seed, **params)
        self.config = make_config(LogBERTConfig, dict(params), self.name)
        self.threshold = 0.0

    def _keys(self, data: MethodInput, split: str) -> list[np.ndarray]:
        return key_sequences(self, data, split)

    def _mask(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random masking of key positions (never [DIST] or padding); returns input and target mask."""
        maskable = x.clone()
        maskable[:, 0] = 0
        chosen = (torch.rand(x.shape, generator=gen) < self.config.mask_ratio) & (maskable != 0)
        return x.masked_fill(chosen, self.symbols.mask), chosen

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        cfg = self.config
        gen = torch_setup(self.seed, cfg.threads)
        rng = np.random.default_rng(self.seed)
        start = time.perf_counter()
        self.vocab = key_vocab_of(train, extra=int(self.config.end_key))
        self.symbols = Symbols(self.vocab)
        d, _ = distinct(self._keys(train, "train"))
        uniq, counts = d.seqs, d.counts
        log.info("%s: %d training sequences, %d distinct", self.name, len(train), len(uniq))
        self.model = LogBERTNet(self.symbols, cfg)
        opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.center = self._center(uniq, counts)
        recenter = max(cfg.steps // 10, 1)
        self.model.train()
        running = 0.0
        for step, idx in enumerate(sample_batches(counts, cfg.batch_size, cfg.steps, rng)):
            x = pad_batch([uniq[i] for i in idx], self.symbols.dist)
            xm, chosen = self._mask(x, gen)
            logits, dist = self.model(xm)
            if chosen.any():
                mlkp = F.cross_entropy(logits[chosen], x[chosen] - 1)
            else:
                mlkp = logits.sum() * 0.0
            vhm = ((dist - self.center) ** 2).sum(-1).mean()
            loss = mlkp + cfg.alpha * vhm
            opt.zero_grad()
            loss.backward()
            opt.step()
            running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
            if (step + 1) % recenter == 0:
                self.center = self._center(uniq, counts)
                self.model.train()
                log.info("%s step %d/%d: loss %.4f (mlkp %.4f, vhm %.4f)", self.name, step + 1, cfg.steps,
                         running, mlkp.item(), vhm.item())
        self.model.eval()
        train_scores = self._score_keys(uniq)
        self.threshold = quantile_threshold(np.repeat(train_scores, counts.astype(np.int64)), cfg.quantile)
        t = threshold_on_val(self, val) if cfg.threshold == "auto" else None
        if t is not None:
            self.threshold = t
        log.info("%s: trained in %.1fs; anomalous if share of missed keys >= %.4f", self.name,
                 time.perf_counter() - start, self.threshold)

    @torch.no_grad()
    def _center(self, uniq: list[np.ndarray], counts: np.ndarray) -> torch.Tensor:
        self.model.eval()
        total = torch.zeros(self.config.width)
        for s in range(0, len(uniq), 256):
            _, dist = self.model(pad_batch(uniq[s : s + 256], self.symbols.dist))
            total += (dist * torch.from_numpy(counts[s : s + 256]).float()[:, None]).sum(0)
        return total / float(counts.sum())

    @torch.no_grad()
    def _score_keys(self, uniq: list[np.ndarray]) -> np.ndarray:
        """Share of keys outside the top g when masked (each key masked once, in seeded rounds)."""
        cfg = self.config
        rounds = max(round(1.0 / cfg.mask_ratio), 1)
        out = np.zeros(len(uniq), dtype=np.float64)
        for s in range(0, len(uniq), 256):
            batch = uniq[s : s + 256]
            x = pad_batch(batch, self.symbols.dist)
            deal = np.zeros(x.shape, dtype=np.int64)
            for i, seq in enumerate(batch):
                rng = np.random.default_rng([self.seed + 1, zlib.crc32(np.asarray(seq, dtype=np.int64).tobytes())])
                deal[i, 1 : 1 + len(seq)] = rng.permutation(len(seq)) % rounds
            deal_t = torch.from_numpy(deal)
            missed = torch.zeros(len(batch))
            for r in range(rounds):
                chosen = (deal_t == r) & (x != 0)
                chosen[:, 0] = False
                logits, _ = self.model(x.masked_fill(chosen, self.symbols.mask))
                target = (x - 1).clamp(0, self.vocab.n_keys - 1)
                true = logits.gather(2, target[..., None])[..., 0]
                rank = (logits > true[..., None]).sum(-1)
                miss = (rank >= cfg.top_g) | (x == self.vocab.unseen)
                missed += (miss & chosen).sum(1).float()
            lengths = torch.tensor([max(len(q), 1) for q in batch], dtype=torch.float32)
            out[s : s + len(batch)] = (missed / lengths).numpy()
        return out

    def score(self, data: MethodInput) -> np.ndarray:
        d, _ = distinct(self._keys(data, "scored"))
        return self._score_keys(d.seqs)[d.inverse]

    def predict(self, data: MethodInput) -> np.ndarray:
        return predict(self.score(data), self.threshold)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {**self.vocab.arrays(), **module_arrays(self.model, "model."),
                  "center": self.center.detach().numpy().copy()}
        return arrays, {"threshold": float(self.threshold)}

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.vocab = KeyVocab.from_arrays(arrays)
        self.symbols = Symbols(self.vocab)
        self.threshold = float(info["threshold"])
        self.center = torch.from_numpy(np.array(arrays["center"]))
        self.model = LogBERTNet(self.symbols, self.config)
        load_module(self.model, arrays, "model.", self.name)
