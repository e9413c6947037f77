"""FastLogAD: mask-guided pseudo anomalies and a discriminator separating them by embedding norm.

Lin, Deng, Li, "FastLogAD: Log Anomaly Detection with Mask-Guided Pseudo Anomaly Generation and
Discrimination", arXiv 2404.08750, 2024.

Design as in the paper (ELECTRA-like, trained on normal sequences only):

1. Mask-Guided Anomaly Generation (MGAG): a generator, a small transformer masked-key model, is
   trained on normal sequences; a pseudo anomaly is a normal sequence whose randomly masked keys are
   replaced by *unlikely* candidates: keys sampled from the generator's distribution with its
   ``exclude_top`` most likely keys removed.
2. Discriminative Abnormality Separation (DAS): a discriminator transformer reads [CLS] + keys and is
   trained with replaced-token detection (per-key BCE) and a hypersphere objective on the [CLS]
   embedding: normal sequences are pulled to a small norm (loss ||z||^2), pseudo anomalies pushed
   out (loss -log(1 - exp(-||z||^2))).
3. Score = ||z_cls||_2 of one forward pass; the paper's threshold is the 0.99 quantile of the
   scores of normal sequences held out from training (``holdout`` of the normal training
   sequences), so no anomaly is needed to set it. That rule flags ~1% of normal sequences by
   construction, which at HDFS's ~3% anomaly rate caps precision near 0.7 (HDFS_2pct seed 0:
   P 0.655, R 1.0, F1 0.792, ROC-AUC 0.999). Like the other methods of the bench, by default
   (``threshold="auto"``) the threshold is F1-best on the labelled validation split when the harness
   hands one; ``threshold="quantile"`` is the paper's rule.

Scaled for a CPU: both transformers have 2 layers, width 64, 4 heads; the generator is trained for
``gen_steps`` (300) and the discriminator for ``disc_steps`` (500) Adam steps (lr 1e-3, batch 32 normal + 32
pseudo-anomalous sequences), sequences drawn in proportion to their frequency. Training runs the two
stages one after the other instead of jointly (the generator is frozen while the discriminator learns).
Sequences longer than ``max_len - 1`` keys are cut (logged). Saved state: the key vocabulary, both
networks' weights and the threshold.
"""

from __future__ import annotations

import logging
import time
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
class FastLogADConfig:
    mask_ratio: float = 0.5
    """Share of keys masked when training the generator and when making a pseudo anomaly."""
    exclude_top: int = 3
    """Replacement keys are drawn from the generator's distribution without its top candidates."""
    layers: int = 2
    width: int = 64
    heads: int = 4
    ff: int = 256
    max_len: int = 256
    end_key: bool = True
    """Append an end-of-sequence key (not in the paper; as in ``deeplog``, it lets a session that stops
    early be noticed)."""
    gen_steps: int = 300
    disc_steps: int = 500
    batch_size: int = 32
    lr: float = 1e-3
    rtd_weight: float = 1.0
    """Weight of replaced-token detection next to the hypersphere loss."""
    holdout: float = 0.1
    """Share of normal training sequences kept out of training to set the threshold."""
    quantile: float = 0.99
    threshold: Literal["auto", "quantile"] = "auto"
    """``quantile``: the paper's rule (``quantile`` of held-out normal scores); ``auto``: F1-best on a
    labelled validation split when the harness hands one with both classes, else ``quantile``."""
    threads: int = 0
    """torch intra-op threads (0 = leave torch's setting)."""


class Generator(nn.Module):
    def __init__(self, symbols: Symbols, cfg: FastLogADConfig):
        super().__init__()
        self.encoder = KeyTransformer(symbols.size, cfg.width, cfg.layers, cfg.heads, cfg.ff, cfg.max_len)
        self.head = nn.Linear(cfg.width, symbols.vocab.n_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (B, L, K)


class Discriminator(nn.Module):
    def __init__(self, symbols: Symbols, cfg: FastLogADConfig):
        super().__init__()
        self.encoder = KeyTransformer(symbols.size, cfg.width, cfg.layers, cfg.heads, cfg.ff, cfg.max_len)
        self.rtd = nn.Linear(cfg.width, 1)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)  # (B, L, W)
        return self.proj(h[:, 0]), self.rtd(h)[..., 0]  # (B, W), (B, L)


@register
class FastLogAD(Method):
    """FastLogAD (Lin et al., 2024): generator of pseudo anomalies + norm-based discriminator."""

    name = "fastlogad"
    supervision = "semi-supervised"
    uses_vectors = False  # template keys only
    paper = "Lin et al., FastLogAD, arXiv 2404.08750, 2024"

    def __init__(self, seed: int = 0, **params: object):
        super().__init__(seed, **params)
        self.config = make_config(FastLogADConfig, dict(params), self.name)
        self.threshold = 0.0

    def _keys(self, data: MethodInput, split: str) -> list[np.ndarray]:
        return key_sequences(self, data, split)

    def _choose(self, x: torch.Tensor, gen: torch.Generator, at_least_one: bool = False) -> torch.Tensor:
        valid = x != 0
        valid[:, 0] = False
        noise = torch.rand(x.shape, generator=gen)
        chosen = (noise < self.config.mask_ratio) & valid
        if at_least_one:
            # A pseudo anomaly needs a changed key: rows with none masked get their lowest-noise key masked.
            empty = ~chosen.any(1) & valid.any(1)
            first = noise.masked_fill(~valid, 2.0).argmin(1)
            chosen[empty, first[empty]] = True
        return chosen

    @torch.no_grad()
    def pseudo_anomalies(self, x: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """MGAG: replace masked keys by unlikely candidates; returns the sequences and which keys changed."""
        chosen = self._choose(x, gen, at_least_one=True)
        logits = self.generator(x.masked_fill(chosen, self.symbols.mask))  # (B, L, K)
        k = self.vocab.n_keys
        probs = logits.softmax(-1)
        top = probs.topk(min(self.config.exclude_top, k - 1), dim=-1).indices
        probs = probs.scatter(-1, top, 0.0) + 1e-9  # keep every other key possible
        sampled = torch.multinomial(probs[chosen], 1, generator=gen)[:, 0] + 1
        out = x.clone()
        out[chosen] = sampled
        return out, chosen & (out != x)

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        cfg = self.config
        gen = torch_setup(self.seed, cfg.threads)
        rng = np.random.default_rng(self.seed)
        start = time.perf_counter()
        self.vocab = key_vocab_of(train, extra=int(self.config.end_key))
        self.symbols = Symbols(self.vocab)
        if self.vocab.n_keys < 2:
            raise ValueError(f"{self.name}: needs at least 2 distinct keys in training, found {self.vocab.n_keys}")
        keys = self._keys(train, "train")
        order = rng.permutation(len(keys))
        n_hold = int(round(len(keys) * cfg.holdout)) if len(keys) >= 20 else 0
        held = [keys[i] for i in order[:n_hold]]
        d, _ = distinct([keys[i] for i in order[n_hold:]])
        uniq, counts = d.seqs, d.counts
        log.info("%s: %d training sequences (%d distinct), %d held out for the threshold", self.name,
                 len(keys) - n_hold, len(uniq), n_hold)

        # Stage 1: the generator, a masked-key model of normal sequences.
        self.generator = Generator(self.symbols, cfg)
        opt = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr)
        self.generator.train()
        for step, idx in enumerate(sample_batches(counts, cfg.batch_size, cfg.gen_steps, rng)):
            x = pad_batch([uniq[i] for i in idx], self.symbols.dist)
            chosen = self._choose(x, gen)
            logits = self.generator(x.masked_fill(chosen, self.symbols.mask))
            loss = F.cross_entropy(logits[chosen], x[chosen] - 1) if chosen.any() else logits.sum() * 0.0
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % max(cfg.gen_steps // 5, 1) == 0:
                log.info("%s generator step %d/%d: loss %.4f", self.name, step + 1, cfg.gen_steps, loss.item())
        self.generator.eval()

        # Stage 2: the discriminator, normal vs pseudo-anomalous by [CLS] norm, plus replaced-token detection.
        self.discriminator = Discriminator(self.symbols, cfg)
        opt = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr)
        self.discriminator.train()
        for step, idx in enumerate(sample_batches(counts, cfg.batch_size, cfg.disc_steps, rng)):
            x = pad_batch([uniq[i] for i in idx], self.symbols.dist)
            fake, replaced = self.pseudo_anomalies(x, gen)
            both = torch.cat([x, fake])
            z, rtd_logits = self.discriminator(both)
            d2 = (z**2).sum(-1)
            n = len(x)
            changed = replaced.any(1)  # a "pseudo anomaly" equal to its source is not used as one
            pushed = -torch.log((-torch.expm1(-d2[n:][changed])).clamp(min=1e-6))  # -log(1 - exp(-d2))
            hsc = torch.cat([d2[:n], pushed]).mean()
            token_target = torch.cat([torch.zeros_like(replaced), replaced]).float()
            valid = both != 0
            valid[:, 0] = False
            rtd = F.binary_cross_entropy_with_logits(rtd_logits[valid], token_target[valid])
            loss = hsc + cfg.rtd_weight * rtd
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % max(cfg.disc_steps // 5, 1) == 0:
                log.info("%s discriminator step %d/%d: hypersphere %.4f, rtd %.4f", self.name, step + 1,
                         cfg.disc_steps, hsc.item(), rtd.item())
        self.discriminator.eval()

        ref = held if held else [uniq[i] for i in np.repeat(np.arange(len(uniq)), counts.astype(np.int64))]
        self.threshold = quantile_threshold(self._score_keys(ref), cfg.quantile)
        t = threshold_on_val(self, val) if cfg.threshold == "auto" else None
        if t is not None:
            self.threshold = t
        log.info("%s: trained in %.1fs; anomalous if ||z_cls|| >= %.4f (%s)", self.name,
                 time.perf_counter() - start, self.threshold,
                 "F1-best on validation" if t is not None else
                 f"q{cfg.quantile:.2f} of {'held-out' if held else 'training'} normal sequences")

    @torch.no_grad()
    def _score_keys(self, seqs: list[np.ndarray]) -> np.ndarray:
        d, _ = distinct(seqs)
        out = np.zeros(len(d.seqs), dtype=np.float64)
        for s in range(0, len(d.seqs), 256):
            z, _ = self.discriminator(pad_batch(d.seqs[s : s + 256], self.symbols.dist))
            out[s : s + 256] = z.norm(dim=-1).double().numpy()
        return out[d.inverse]

    def score(self, data: MethodInput) -> np.ndarray:
        """||z_cls||_2 of the discriminator; keys unseen in training are their own input symbol."""
        return self._score_keys(self._keys(data, "scored"))

    def predict(self, data: MethodInput) -> np.ndarray:
        return predict(self.score(data), self.threshold)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {**self.vocab.arrays(), **module_arrays(self.generator, "generator."),
                  **module_arrays(self.discriminator, "discriminator.")}
        return arrays, {"threshold": float(self.threshold)}

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.vocab = KeyVocab.from_arrays(arrays)
        self.symbols = Symbols(self.vocab)
        self.threshold = float(info["threshold"])
        self.generator = Generator(self.symbols, self.config)
        self.discriminator = Discriminator(self.symbols, self.config)
        load_module(self.generator, arrays, "generator.", self.name)
        load_module(self.discriminator, arrays, "discriminator.", self.name)
