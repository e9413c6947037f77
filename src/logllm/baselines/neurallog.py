"""NeuralLog: a transformer encoder over encoder message vectors, no log parsing.

Le & Zhang, "Log-based Anomaly Detection Without Log Parsing", ASE 2021. Each raw (here: masked)
message is embedded by a pre-trained language model (the paper: BERT; here the `small` preset's
MiniLM, computed once per distinct message), sinusoidal positional encodings are added, one
transformer encoder block (multi-head self-attention + feed-forward) reads the sequence, the
outputs are averaged over real positions, and dropout + a linear softmax layer classifies it.

Defaults: one encoder block, 12 heads, feed-forward width 2048, dropout 0.1 (NeuralLog's setting
for BERT-width vectors, here over 384-wide MiniLM vectors); Adam lr 3e-4, batch 64. Message vectors are z-scored per
dimension. Training runs 5 epochs over the distinct (sequence, label) pairs (the CPU budget of the
bench; the paper trains longer on a GPU), with the threshold chosen on the validation split (see
`common.TorchClassifier`).
"""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import numpy as np

from logllm.baselines.base import Method, MethodInput, register
from logllm.baselines.common import TorchClassifier, pad

log = logging.getLogger(__name__)


def _module(width: int, heads: int, ff: int, layers: int, dropout: float):
    import torch
    from torch import nn

    class LogTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            block = nn.TransformerEncoderLayer(width, heads, ff, dropout, batch_first=True)
            self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.drop = nn.Dropout(dropout)
            self.out = nn.Linear(width, 2)

        def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            _, t, d = x.shape
            pos = torch.arange(t, dtype=torch.float32)[:, None]
            freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
            pe = torch.zeros(t, d)
            pe[:, 0::2] = torch.sin(pos * freq)
            pe[:, 1::2] = torch.cos(pos * freq)
            h = self.encoder(x + pe, src_key_padding_mask=~mask)  # (B, T, D)
            m = mask.unsqueeze(-1).float()
            v = (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)
            return self.out(self.drop(v))  # (B, 2)

    return LogTransformer()


@register
class NeuralLog(TorchClassifier, Method):
    name: ClassVar[str] = "neurallog"
    supervision = "supervised"
    paper: ClassVar[str] = "Le & Zhang, ASE 2021 (Log-based Anomaly Detection Without Log Parsing)"
    use = "messages"
    uses_templates: ClassVar[bool] = False  # message vectors only
    defaults: ClassVar[dict] = {"heads": 12, "ff": 2048, "layers": 1, "dropout": 0.1, "epochs": 5,
                                "batch_size": 64, "lr": 3e-4}

    def architecture(self, train: MethodInput) -> dict:
        width, heads = int(self.vector_stats[0].shape[0]), self.p("heads", int)
        if width % heads:
            # attention splits the width evenly across heads: take the nearest count below that does
            fitted = max(h for h in range(1, heads + 1) if width % h == 0)
            log.warning("neurallog: %d heads do not divide the vector width %d; using %d", heads, width, fitted)
            heads = fitted
        return {"width": width, "heads": heads, "ff": self.p("ff", int), "layers": self.p("layers", int),
                "dropout": self.p("dropout")}

    def module(self, arch: dict):
        return _module(arch["width"], arch["heads"], arch["ff"], arch["layers"], arch["dropout"])

    def make_batch(self, seqs: list[np.ndarray]) -> tuple:
        import torch

        ids, mask = pad(seqs)
        return self.vectors[torch.from_numpy(ids)], torch.from_numpy(mask)
