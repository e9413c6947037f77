"""LogBERT learns which key belongs where by masked prediction and flags sequences with misses."""

from __future__ import annotations

import numpy as np
import torch

from logllm.baselines.base import REGISTRY, MethodInput
from logllm.baselines.common import KeyTransformer, pad_batch
from logllm.baselines.logbert import LogBERT
from logllm.metrics import quantile_threshold

from .conftest import key_resources, normal_keys


def test_logbert_flags_broken_sequences_and_keeps_normal_ones():
    rng = np.random.default_rng(0)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(300)], res)
    normals = [normal_keys(rng) for _ in range(30)]
    anomalies = [
        np.asarray([0, 1, 2, 6, 3, 4]),  # unseen key
        np.asarray([0, 3, 2, 2, 1, 4]),  # alloc and ack swapped
        np.asarray([4, 1, 2, 3, 0]),  # open and close swapped
        np.asarray([0, 1, 2]),  # stops early
    ]
    test = MethodInput(normals + anomalies, res)
    model = LogBERT(seed=0, steps=250, top_g=2, width=32, ff=64, batch_size=16, threads=1)
    model.fit(train)
    scores = model.score(test)
    pred = model.predict(test)
    assert scores.dtype == np.float64 and ((scores >= 0) & (scores <= 1)).all()
    assert not pred[:30].any(), scores[:30]
    assert pred[30:].all(), scores[30:]


def test_score_is_deterministic_and_masks_every_key_once():
    rng = np.random.default_rng(1)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(50)], res)
    model = LogBERT(seed=0, steps=5, threads=1, mask_ratio=0.25)
    model.fit(train)
    test = MethodInput([normal_keys(rng) for _ in range(5)], res)
    np.testing.assert_array_equal(model.score(test), model.score(test))
    # Scores are shares of keys (end key included): multiples of 1/length.
    lengths = np.array([len(s) + 1 for s in test.messages])
    np.testing.assert_allclose(model.score(test) * lengths, np.round(model.score(test) * lengths), atol=1e-9)


def test_building_blocks():
    x = pad_batch([np.array([3, 4]), np.array([5])], first=9)
    assert x.tolist() == [[9, 3, 4], [9, 5, 0]]
    enc = KeyTransformer(n_symbols=10, width=16, layers=1, heads=2, ff=32, max_len=8).eval()
    with torch.no_grad():
        h = enc(x)
        h2 = enc(torch.cat([x, torch.zeros(2, 3, dtype=torch.long)], 1))
    assert h.shape == (2, 3, 16)
    # Padding is masked out: appending padding changes nothing at the real positions.
    torch.testing.assert_close(h, h2[:, :3], rtol=1e-4, atol=1e-5)
    assert quantile_threshold(np.zeros(100), 0.99) > 0.0


def test_registered():
    assert REGISTRY["logbert"] is LogBERT and LogBERT.supervision == "semi-supervised"
