"""PLELog estimates labels of unlabelled sequences by clustering and learns anomalies from them."""

from __future__ import annotations

import numpy as np

from logllm.baselines.base import REGISTRY, MethodInput
from logllm.baselines.plelog import PLELog

from .conftest import bag_of_words, key_resources, normal_keys

TEXTS = ["open file <*>", "alloc block <*>", "write <*> bytes to block", "ack block <*>", "close file <*>",
         "verify block <*>", "disk failure exception on device <*>", "timeout exception while reading <*>"]


def anomalous(rng: np.random.Generator) -> np.ndarray:
    """A failed session: open, alloc, then a run of exceptions."""
    return np.asarray([0, 1] + [int(rng.choice([6, 7])) for _ in range(int(rng.integers(2, 5)))])


def data(seed: int):
    rng = np.random.default_rng(seed)
    res = key_resources(TEXTS, bag_of_words)
    train = MethodInput([normal_keys(rng) for _ in range(200)], res)
    val_seqs = [normal_keys(rng) for _ in range(80)] + [anomalous(rng) for _ in range(20)]
    val = MethodInput(val_seqs, res, labels=np.array([0] * 80 + [1] * 20))
    test = MethodInput([normal_keys(rng) for _ in range(30)] + [anomalous(rng) for _ in range(10)], res)
    return train, val, test


PARAMS = dict(min_cluster_size=5, min_samples=5, pca_dims=4, epochs=20, batch_size=16, threads=1)


def test_plelog_learns_anomalies_from_unlabelled_validation_sequences():
    train, val, test = data(0)
    model = PLELog(seed=0, **PARAMS)
    model.fit(train, val)
    pred = model.predict(test)
    scores = model.score(test)
    assert not pred[:30].any(), scores[:30]
    assert pred[30:].mean() >= 0.9, scores[30:]


def test_plelog_never_reads_validation_labels():
    train, val, test = data(1)
    a = PLELog(seed=0, **PARAMS)
    a.fit(train, val)
    flipped = MethodInput(val.messages, val.resources, labels=1 - val.labels)
    b = PLELog(seed=0, **PARAMS)
    b.fit(train, flipped)
    np.testing.assert_array_equal(a.score(test), b.score(test))


def test_without_unlabelled_data_falls_back_to_distance():
    train, _, test = data(2)
    model = PLELog(seed=0, **PARAMS)
    model.fit(train, None)
    scores = model.score(test)
    assert scores[30:].min() > scores[:30].max()
    assert model.predict(test)[30:].all() and not model.predict(test)[:30].any()


def test_registered():
    assert REGISTRY["plelog"] is PLELog and PLELog.supervision == "semi-supervised"
