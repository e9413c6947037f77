"""FastLogAD learns to separate normal sequences from its own pseudo anomalies by embedding norm."""

from __future__ import annotations

import numpy as np
import torch

from logllm.baselines.base import REGISTRY, MethodInput
from logllm.baselines.fastlogad import FastLogAD

from .conftest import key_resources, normal_keys


def test_fastlogad_scores_anomalies_above_normal_sequences():
    rng = np.random.default_rng(0)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(300)], res)
    normals = [normal_keys(rng) for _ in range(30)]
    anomalies = [
        np.asarray([0, 1, 2, 6, 3, 4]),  # unseen key
        np.asarray([0, 3, 2, 2, 1, 4]),  # alloc and ack swapped
        np.asarray([4, 1, 2, 3, 0]),  # open and close swapped
        np.asarray([0, 1, 1, 1, 3, 4]),  # alloc where writes belong
    ]
    test = MethodInput(normals + anomalies, res)
    model = FastLogAD(seed=0, gen_steps=80, disc_steps=150, width=32, ff=64, batch_size=16, threads=1)
    model.fit(train)
    scores = model.score(test)
    pred = model.predict(test)
    assert scores.dtype == np.float64 and (scores >= 0).all()
    assert scores[30:].min() > scores[:30].max(), scores
    assert pred[30:].all()
    # The threshold is a high quantile of held-out normal scores: normal sequences mostly pass.
    assert pred[:30].mean() <= 0.1


def test_pseudo_anomalies_change_only_masked_keys_to_other_keys():
    rng = np.random.default_rng(1)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(60)], res)
    model = FastLogAD(seed=0, gen_steps=30, disc_steps=1, width=32, ff=64, threads=1, exclude_top=1)
    model.fit(train)
    from logllm.baselines.common import pad_batch

    x = pad_batch(model._keys(MethodInput([normal_keys(rng) for _ in range(16)], res), "t"), model.symbols.dist)
    fake, replaced = model.pseudo_anomalies(x, torch.Generator().manual_seed(0))
    assert (fake[~replaced] == x[~replaced]).all()
    assert (fake[replaced] != x[replaced]).all()
    assert replaced.any(1).float().mean() > 0.8  # nearly every row has a changed key
    assert ((fake[replaced] >= 1) & (fake[replaced] <= model.vocab.n_keys)).all()
    assert not replaced[:, 0].any() and not replaced[x == 0].any()


def test_same_seed_same_scores():
    rng = np.random.default_rng(2)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(40)], res)
    test = MethodInput([normal_keys(rng) for _ in range(5)], res)
    a, b = (FastLogAD(seed=1, gen_steps=5, disc_steps=5, threads=1) for _ in range(2))
    a.fit(train)
    b.fit(train)
    np.testing.assert_array_equal(a.score(test), b.score(test))


def test_registered():
    assert REGISTRY["fastlogad"] is FastLogAD and FastLogAD.supervision == "semi-supervised"
