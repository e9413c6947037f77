"""Where the work goes: each distinct message encoded once, identical sequences scored once."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from logllm.model import LogLLM

from .conftest import MESSAGES


@pytest.fixture
def model(tiny_config) -> LogLLM:
    return LogLLM.build(tiny_config, seed=0)


def _freeze_encoder(model: LogLLM) -> None:
    for p in model.parts()["encoder"]:
        p.requires_grad_(False)


def test_training_batch_encodes_each_distinct_message_once(model: LogLLM) -> None:
    model.train()
    seqs = [[0, 1, 0, 1, 0], [1, 1, 2], [0, 2, 2, 2]]  # 3 distinct messages, 11 occurrences
    model.loss(MESSAGES, seqs, [0, 1, 0]).backward()
    assert model.stats["encoder_texts"] == 3
    assert model.parts()["encoder"][0].grad is not None  # the trainable encoder got gradients


def test_frozen_cache_encodes_each_message_once_overall(model: LogLLM) -> None:
    _freeze_encoder(model)
    model.train()
    model.freeze_encoder_cache(MESSAGES)
    assert model.stats["encoder_texts"] == len(MESSAGES)
    for seqs, labels in (([[0, 1], [2, 3]], [0, 1]), ([[3, 3, 4]], [1]), ([[0, 4, 1]], [0])):
        model.loss(MESSAGES, seqs, labels).backward()
    model.score(MESSAGES, [[0, 1, 2], [3, 4]])
    assert model.stats["encoder_texts"] == len(MESSAGES)
    # Same texts under other ids (another split's table) still hit the cache.
    model.score(list(reversed(MESSAGES)), [[0, 1], [2]])
    assert model.stats["encoder_texts"] == len(MESSAGES)


def test_cached_vectors_equal_fresh_ones(model: LogLLM) -> None:
    _freeze_encoder(model)
    model.train()  # dropout on: frozen-encoder vectors must still be the deterministic eval-mode ones
    fresh = model.message_vectors(MESSAGES[:4]).detach()
    model.freeze_encoder_cache(MESSAGES)
    cached = model.message_vectors(MESSAGES[:4])
    assert torch.allclose(fresh, cached, atol=1e-6)
    assert model.encoder.training  # the encoder mode was restored after encoding


def test_cache_is_dropped_when_the_encoder_trains(model: LogLLM, caplog) -> None:
    model.freeze_encoder_cache(MESSAGES)
    model.train()
    with caplog.at_level(logging.INFO, logger="logllm.model.logllm"):
        model.loss(MESSAGES, [[0, 1]], [1]).backward()
    assert "cache dropped" in caplog.text
    assert model.stats["encoder_texts"] == len(MESSAGES) + 2
    assert model.parts()["encoder"][0].grad is not None


def test_scoring_without_cache_encodes_distinct_messages_once(model: LogLLM) -> None:
    seqs = [[0, 1, 1, 1], [1, 0], [2, 2, 0], [0, 1, 1, 1]]
    model.score(MESSAGES, seqs, batch_size=1)
    assert model.stats["encoder_texts"] == 3


def test_identical_sequences_are_scored_once(model: LogLLM) -> None:
    rows: list[int] = []
    hook = model.decoder.register_forward_pre_hook(
        lambda _m, _a, kw: rows.append(kw["inputs_embeds"].shape[0]), with_kwargs=True)
    table = [*MESSAGES, MESSAGES[0]]  # the same text under a second id is the same message
    seqs = [[0, 1, 2], [3], [0, 1, 2], [6, 1, 2], [3], [4, 4]]
    try:
        scores = model.score(table, seqs, batch_size=2)
    finally:
        hook.remove()
    assert rows == [2, 1]  # 3 distinct sequences in batches of 2
    assert scores[0] == scores[2] == scores[3] and scores[1] == scores[4]
    alone = np.array([model.score(table, [s])[0] for s in seqs])
    np.testing.assert_allclose(scores, alone, atol=1e-5)


def test_answer_logits_are_what_score_and_explanations_read(model: LogLLM) -> None:
    """One computation behind `score` and the explanations' log-odds: the (N, 2) answer logits,
    in input order, repeats included, from eval mode (the caller's mode restored)."""
    from logllm.explain import log_odds_fn

    seqs = [[0, 1, 2], [3], [0, 1, 2], [4, 4, 1, 0], [5]]
    model.train()
    logits = model.answer_logits(MESSAGES, seqs, batch_size=2)
    assert model.training and not logits.requires_grad
    assert logits.shape == (5, 2) and logits.dtype == torch.float32
    assert torch.equal(logits[0], logits[2])
    np.testing.assert_array_equal(model.score(MESSAGES, seqs, batch_size=2),
                                  torch.softmax(logits, -1)[:, 1].double().numpy())
    pair = logits.double().numpy()
    np.testing.assert_array_equal(log_odds_fn(model)(MESSAGES, seqs, 2), pair[:, 1] - pair[:, 0])
    np.testing.assert_allclose(model.answer_logits(MESSAGES, seqs, batch_size=64).numpy(), logits.numpy(),
                               atol=1e-5)
    assert model.answer_logits(MESSAGES, []).shape == (0, 2)
    with pytest.raises(ValueError, match="batch_size"):
        model.answer_logits(MESSAGES, seqs, batch_size=0)


def test_scoring_helpers_deduplicate_and_plan_batches() -> None:
    from logllm.scoring import deduplicate, length_batches, local_rows

    keys = [(1, 2), (3,), (1, 2), (4, 4, 4), (3,)]
    distinct, inverse = deduplicate(keys)
    assert distinct == [(1, 2), (3,), (4, 4, 4)]
    assert [distinct[i] for i in inverse] == keys and inverse.dtype == np.int64
    assert local_rows([(7, 2), (2, 9, 7)]) == ([2, 7, 9], [[1, 0], [0, 2, 1]])
    # Longest first, ties in input order, at most batch_size per batch.
    assert length_batches([1, 3, 2, 3, 1], 2) == [[1, 3], [2, 0], [4]]
    assert length_batches([], 4) == []
    with pytest.raises(ValueError, match="batch_size"):
        length_batches([1], 0)


def test_long_messages_are_truncated_and_counted(tiny_config, caplog) -> None:
    model = LogLLM.build(tiny_config.replace(max_message_tokens=16), seed=0)
    with caplog.at_level(logging.INFO, logger="logllm.model.logllm"):
        model.score(MESSAGES, [[5, 0]])
    assert model.stats["truncated_messages"] == 1
    assert "truncated from" in caplog.text
    assert len(model._token_ids(MESSAGES[5])) == 16
