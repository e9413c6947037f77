"""LogAnomaly learns a key order from semantic + count inputs and absorbs new but similar templates."""

from __future__ import annotations

import numpy as np

from logllm.baselines.base import REGISTRY, MethodInput, Resources
from logllm.baselines.loganomaly import LogAnomaly

from .conftest import bag_of_words, key_resources, normal_keys

TEXTS = ["open file <*>", "alloc block <*>", "write <*> bytes to block", "ack block <*>", "close file <*>",
         "verify block <*>", "disk failure on device <*>",
         "write <*> bytes to block again"]  # last: never in training, nearly the same words as message 2


def test_loganomaly_flags_broken_order_and_matches_similar_new_template():
    rng = np.random.default_rng(0)
    res = key_resources(TEXTS, bag_of_words)
    train = MethodInput([normal_keys(rng) for _ in range(300)], res)
    normals = [normal_keys(rng) for _ in range(30)]
    new_but_similar = [np.asarray([0, 1, 2, 7, 3, 4])]  # "write ... again" where a write may stand
    anomalies = [
        np.asarray([0, 1, 2, 6, 3, 4]),  # a failure message in the middle
        np.asarray([0, 2, 1, 2, 3, 4]),  # broken order
        np.asarray([0, 1, 2, 4, 3]),  # close before ack
        np.asarray([0, 1, 2, 2]),  # stops early
    ]
    test = MethodInput(normals + new_but_similar + anomalies, res)
    # Only close matches are absorbed (the paper matches every new template; see min_similarity).
    model = LogAnomaly(seed=0, epochs=100, batch_size=16, lr=0.01, threads=1, top_g=2, min_similarity=0.5)
    model.fit(train)
    pred = model.predict(test)
    scores = model.score(test)
    assert not pred[:31].any(), scores[:31]
    assert pred[31:].all(), scores[31:]
    # The paper's matching of unseen templates is what keeps the similar new message from being flagged.
    strict = LogAnomaly(seed=0, epochs=1, batch_size=16, threads=1, top_g=2, match_unseen=False)
    strict.fit(train)
    assert strict.predict(MethodInput(new_but_similar, res)).all()


def test_template_vectors_are_the_mean_of_their_messages():
    # Two messages share template 1; the template's vector is the normalised mean of theirs.
    texts = ["a <*>", "a b <*>", "c <*>"]
    res = Resources(texts, np.array([1, 1, 2]), ["<unknown>", "a", "c"], _vector_fn=bag_of_words)
    train = MethodInput([np.array([0, 2]), np.array([1, 2])] * 5, res)
    model = LogAnomaly(seed=0, epochs=1, threads=1)
    model.fit(train)
    v = bag_of_words(texts)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    expected = (v[0] + v[1]) / np.linalg.norm(v[0] + v[1])
    np.testing.assert_allclose(model.key_vectors[1], expected, rtol=1e-5, atol=1e-6)


def test_registered():
    assert REGISTRY["loganomaly"] is LogAnomaly and LogAnomaly.supervision == "semi-supervised"
