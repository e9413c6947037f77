"""Frozen encoder vectors for distinct masked messages, computed once per text.

Used where a method needs fixed semantic message vectors (frozen stages of LogLLM, and the
baselines LogRobust, NeuralLog, RAPID). The LogLLM model's trainable encoder lives in
`logllm.model`; this is the no-gradient path with a per-text cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from logllm.model.hub import resolve

log = logging.getLogger(__name__)

Pooling = Literal["pooler", "cls", "mean"]


def encode_texts(
    texts: Sequence[str],
    encoder: str = "minilm",
    pooling: Pooling = "pooler",
    max_length: int = 100,
    batch_size: int = 64,
) -> np.ndarray:
    """Encode each text once with a frozen Hugging Face encoder; returns float32 (len(texts), width).

    ``pooling="pooler"`` is BERT's pooler output (tanh(linear([CLS]))), as LogLLM uses; ``mean`` is
    the attention-masked mean of the last hidden states (sentence-transformers style). Duplicate
    texts are encoded once. Results do not depend on ``batch_size`` beyond float rounding.
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = resolve(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    # Sorting by length keeps padding small; order is restored through `index`.
    order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
    out = np.zeros((len(unique), model.config.hidden_size), dtype=np.float32)
    truncated = 0
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            ids = order[start : start + batch_size]
            batch = tokenizer([unique[i] for i in ids], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            truncated += int((batch["attention_mask"].sum(1) >= max_length).sum())
            hidden = model(**batch)
            if pooling == "pooler":
                vec = hidden.pooler_output
            elif pooling == "cls":
                vec = hidden.last_hidden_state[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.last_hidden_state.dtype)
                vec = (hidden.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[ids] = vec.float().numpy()
    if truncated:
        log.info("encoder: %d of %d distinct messages reached the %d-token limit and were truncated",
                 truncated, len(unique), max_length)
    log.info("encoder %s: %d texts, %d distinct, width %d", encoder, len(texts), len(unique), out.shape[1])
    return out[[index[t] for t in texts]]
