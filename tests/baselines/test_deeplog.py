"""DeepLog learns a fixed order of log keys and flags broken orders, unseen keys and early stops."""

from __future__ import annotations

import numpy as np
import pytest

from logllm.baselines.base import REGISTRY, MethodInput, make_config
from logllm.baselines.common import KeyVocab, distinct, f1_threshold, threshold_on_val
from logllm.baselines.deeplog import DeepLog, windows_of
from logllm.errors import ConfigError

from .conftest import key_resources, normal_keys


def test_deeplog_learns_order_and_flags_broken_sequences():
    rng = np.random.default_rng(0)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(300)], res)
    normals = [normal_keys(rng) for _ in range(40)]
    anomalies = [
        np.asarray([0, 1, 2, 6, 3, 4]),  # a key never seen in training
        np.asarray([0, 2, 1, 2, 3, 4]),  # alloc after write: broken order
        np.asarray([0, 1, 2, 4, 3]),  # close before ack
        np.asarray([0, 1, 2, 2]),  # stops early: only the end key catches it
    ]
    test = MethodInput(normals + anomalies, res)
    # At most two keys can follow any key here (write -> write/ack, close -> verify/end): g = 2.
    model = DeepLog(seed=0, epochs=100, batch_size=16, lr=0.01, threads=1, top_g=2)
    model.fit(train)
    scores = model.score(test)
    pred = model.predict(test)
    assert scores.dtype == np.float64 and pred.dtype == bool
    assert not pred[:40].any(), scores[:40]
    assert pred[40:].all(), scores[40:]
    assert scores[40:].min() > scores[:40].max()


def test_top_g_rule_and_end_key_are_what_decide():
    rng = np.random.default_rng(1)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(200)], res)
    early_stop = MethodInput([np.asarray([0, 1, 2, 2])], res)
    without_end = DeepLog(seed=0, epochs=100, batch_size=16, lr=0.01, threads=1, end_key=False, top_g=2)
    without_end.fit(train)
    # Without the end key a truncated but well-ordered session looks normal (the paper's behaviour).
    assert not without_end.predict(early_stop)[0]
    # With g as large as the key vocabulary nothing but unseen keys can be a miss.
    loose = DeepLog(seed=0, epochs=5, batch_size=64, threads=1, top_g=50)
    loose.fit(train)
    broken = MethodInput([np.asarray([0, 2, 1, 2, 3, 4]), np.asarray([0, 1, 6, 3, 4])], res)
    assert loose.predict(broken).tolist() == [False, True]


def test_same_seed_same_scores():
    rng = np.random.default_rng(2)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(100)], res)
    test = MethodInput([normal_keys(rng) for _ in range(10)] + [np.asarray([0, 2, 1, 3, 4])], res)
    a, b = (DeepLog(seed=3, epochs=5, batch_size=32, threads=1) for _ in range(2))
    a.fit(train)
    b.fit(train)
    np.testing.assert_array_equal(a.score(test), b.score(test))


def test_threshold_on_validation_uses_val_labels_only_when_asked():
    rng = np.random.default_rng(3)
    res = key_resources()
    train = MethodInput([normal_keys(rng) for _ in range(200)], res)
    val = MethodInput([normal_keys(rng) for _ in range(20)] + [np.asarray([0, 1, 6, 3, 4])], res,
                      labels=np.array([0] * 20 + [1]))
    model = DeepLog(seed=0, epochs=100, batch_size=16, lr=0.01, threads=1, threshold="val", top_g=2)
    model.fit(train, val)
    assert model.predict(val).tolist() == [False] * 20 + [True]


def test_helpers():
    vocab = KeyVocab.fit([np.array([3, 1]), np.array([1])], n_templates=5, extra=1)
    assert vocab.n_keys == 3 and vocab.unseen == 4 and vocab.size == 5
    assert vocab.key_of_template.tolist() == [4, 1, 4, 2, 4]
    rows, owner = windows_of([np.array([5, 6, 7]), np.array([], dtype=np.int64), np.array([8])], h=2)
    assert rows.tolist() == [[0, 0, 5], [0, 5, 6], [5, 6, 7], [0, 0, 8]]
    assert owner.tolist() == [0, 0, 0, 2]
    d, _ = distinct([np.array([1, 2]), np.array([3]), np.array([1, 2])])
    assert len(d.seqs) == 2 and d.counts.tolist() == [2, 1] and d.inverse.tolist() == [0, 1, 0]
    assert f1_threshold(np.array([0.1, 0.2, 0.9, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.5)
    assert f1_threshold(np.array([0.9, 0.2]), np.array([1, 0])) == pytest.approx(0.55)
    # a validation split with one class leaves the method's own rule in place
    fixed = type("Fixed", (), {"score": lambda self, data: np.array([0.1, 0.2])})()
    assert threshold_on_val(fixed, MethodInput([np.array([1]), np.array([2])], None, np.array([0, 0]))) is None
    with pytest.raises(ConfigError, match="windw"):
        make_config(type(DeepLog(seed=0).config), {"windw": 3}, "deeplog")
    assert make_config(type(DeepLog(seed=0).config), {"top_g": "4", "end_key": "false"}, "x").top_g == 4


def test_registered():
    assert REGISTRY["deeplog"] is DeepLog and DeepLog.supervision == "semi-supervised"
