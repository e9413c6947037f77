"""CNN over template-id embeddings.

Lu, Wei, Li, Wang, "Detecting Anomaly in Big Data System Logs Using Convolutional Neural Network",
IEEE DASC 2018. Each log key (here the Drain template id, fitted on training data; 0 = unknown) is
embedded by a trainable table (the paper's logkey2vec), parallel 1-D convolutions of several widths
slide over the sequence, max-over-time pooling keeps each filter's strongest response, and a
dropout + fully connected softmax layer classifies the session. Supervised, cross-entropy.

Defaults (the usual text-CNN sizes; the paper's exact widths are not claimed here): embedding
width 128, kernel widths 3, 4 and 5 with 128 filters each, ReLU, dropout 0.5,
Adam lr 1e-3, batch 64, 20 epochs over the distinct (sequence, label) pairs, threshold from the
validation split (see `common.TorchClassifier`). The paper pads
sessions to a fixed length; here the pooling ignores padded positions instead, so a sequence's
score does not depend on what else is in its batch. Prediction is the classifier's decision.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from logllm.baselines.base import Method, MethodInput, register
from logllm.baselines.common import TorchClassifier, pad


def _module(n_tokens: int, width: int, kernels: tuple[int, ...], filters: int, dropout: float):
    import torch
    from torch import nn

    class LogKeyCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(n_tokens + 1, width, padding_idx=0)  # id 0 = padding
            self.convs = nn.ModuleList(nn.Conv1d(width, filters, k) for k in kernels)
            self.drop = nn.Dropout(dropout)
            self.out = nn.Linear(filters * len(kernels), 2)

        def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
            x = self.embed(ids).transpose(1, 2)  # (B, E, T)
            pooled = []
            for k, conv in zip(kernels, self.convs, strict=True):
                c = torch.relu(conv(x))  # (B, F, T - k + 1)
                # a window is real if it starts inside the sequence (short ones keep their first window)
                starts = torch.arange(c.shape[2])
                valid = starts[None, :] < (lengths - k + 1).clamp(min=1)[:, None]  # (B, T - k + 1)
                pooled.append(c.masked_fill(~valid[:, None, :], float("-inf")).amax(2))  # (B, F)
            return self.out(self.drop(torch.cat(pooled, 1)))  # (B, 2)

    return LogKeyCNN()


@register
class CNN(TorchClassifier, Method):
    name: ClassVar[str] = "cnn"
    supervision = "supervised"
    uses_vectors: ClassVar[bool] = False  # template counts/ids only: the harness skips the encoder
    paper: ClassVar[str] = "Lu et al., IEEE DASC 2018 (Detecting Anomaly in Big Data System Logs Using CNN)"
    use = "templates"
    defaults: ClassVar[dict] = {"width": 128, "filters": 128, "dropout": 0.5, "epochs": 20,
                                "batch_size": 64, "lr": 1e-3}
    kernels = (3, 4, 5)

    def architecture(self, train: MethodInput) -> dict:
        return {"n_templates": train.resources.n_templates, "width": self.p("width", int),
                "kernels": list(self.kernels), "filters": self.p("filters", int), "dropout": self.p("dropout")}

    def module(self, arch: dict):
        return _module(arch["n_templates"], arch["width"], tuple(arch["kernels"]), arch["filters"], arch["dropout"])

    def make_batch(self, seqs: list[np.ndarray]) -> tuple:
        import torch

        ids, mask = pad([s + 1 for s in seqs], min_len=max(self.kernels))  # shift: 0 is padding
        return torch.from_numpy(ids), torch.from_numpy(mask.sum(1))
