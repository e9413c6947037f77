"""Sequences longer than ``max_messages``: read as windows (`logllm.scoring.WindowPlan`), scored as their
highest window, trained on it, explained window by window; the same on a tiny real LogLLM."""

from __future__ import annotations

import numpy as np
import pytest

from logllm.errors import ConfigError
from logllm.explain import ScoreCache, leave_one_out, log_odds_fn
from logllm.model import LogLLM
from logllm.model.config import ModelConfig
from logllm.scoring import WindowPlan, best_windows, training_windows

from .conftest import MESSAGES

LONG = [0, 1, 2, 3, 4, 0, 1, 3, 2, 4, 1]  # 11 messages: windows (0,4) (3,7) (6,10) (7,11) with size 4, stride 3


def test_window_plan_spans_end_at_the_last_message() -> None:
    assert WindowPlan(4, 4).spans(10) == [(0, 4), (4, 8), (6, 10)]
    assert WindowPlan(4, 3).spans(11) == [(0, 4), (3, 7), (6, 10), (7, 11)]
    assert WindowPlan(4, 4).spans(4) == [(0, 4)] and WindowPlan(4, 4).spans(1) == [(0, 1)]
    assert WindowPlan(128, 128).spans(4000)[-1] == (3872, 4000) and len(WindowPlan(128, 128).spans(4000)) == 32
    windows, owner = WindowPlan(2, 2).expand([[7], [1, 2, 3]])
    assert windows == [(7,), (1, 2), (2, 3)] and owner.tolist() == [0, 1, 1]
    assert WindowPlan.of(ModelConfig(max_messages=8, long_stride=2)) == WindowPlan(8, 2)
    assert WindowPlan.of(ModelConfig(max_messages=8)) == WindowPlan(8, 8)
    assert WindowPlan.of(object()) is None
    for bad in (0, 5):
        with pytest.raises(ConfigError, match="long_stride"):
            WindowPlan(4, bad)
    with pytest.raises(ConfigError, match=r"long_stride must be an integer in \[1, max_messages=4\]"):
        ModelConfig(max_messages=4, long_stride=5)


def test_best_windows_takes_the_first_highest() -> None:
    owner = np.array([0, 1, 1, 1, 2, 2])
    assert best_windows(np.array([0.1, 3.0, 5.0, 5.0, -1.0, -2.0]), owner, 3).tolist() == [0, 2, 4]
    with pytest.raises(ValueError, match="at least one window"):
        best_windows(np.array([1.0]), np.array([1]), 2)


def test_training_windows_pick_the_highest_scoring_window() -> None:
    plan = WindowPlan(3, 3)
    asked: list[list[tuple[int, ...]]] = []

    def log_odds(windows):  # anomalous where message 9 is
        asked.append(windows)
        return np.array([10.0 * (9 in w) - len(w) for w in windows])

    chosen, n_long = training_windows([[1, 2], [1, 2, 3, 4, 9, 5, 6], [1, 2, 3, 1, 2, 3]], plan, log_odds)
    assert chosen == [(1, 2), (4, 9, 5), (1, 2, 3)] and n_long == 2
    assert len(asked) == 1 and all(len(w) <= 3 for w in asked[0])
    assert asked[0].count((1, 2, 3)) == 1  # identical windows are scored once


@pytest.fixture
def model(tiny_config) -> LogLLM:
    import torch

    model = LogLLM.build(tiny_config.replace(max_messages=4, long_stride=3), seed=0)
    with torch.no_grad():  # untrained, the decoder barely tells inputs apart: make the messages count
        model.projector.weight.mul_(40.0)
    model.freeze_encoder_cache(MESSAGES)  # each message encoded once for the whole test
    return model


def _window_log_odds(model: LogLLM, seq: list[int]) -> np.ndarray:
    spans = model.window_plan.spans(len(seq))
    logits = model.answer_logits(MESSAGES, [seq[a:b] for a, b in spans]).double().numpy()
    return logits[:, 1] - logits[:, 0]


def test_a_long_sequence_scores_as_its_highest_window(model: LogLLM) -> None:
    direct = _window_log_odds(model, LONG)
    assert len(direct) == 4 and len(set(direct.round(9))) > 1  # windows differ: the max is a real choice
    logits = model.answer_logits(MESSAGES, [LONG, LONG[:3]]).double().numpy()
    np.testing.assert_allclose(logits[0, 1] - logits[0, 0], direct.max(), rtol=0, atol=1e-5)
    p = model.score(MESSAGES, [LONG])
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-direct.max())), atol=1e-6)
    assert model.stats["long_sequences"] >= 1
    # Independent of the batch size and of what else is scored with it.
    one = model.score(MESSAGES, [LONG, [0, 1], LONG[::-1]], batch_size=1)
    many = model.score(MESSAGES, [[2, 3, 4, 0, 1, 2], LONG, [0, 1], LONG[::-1]], batch_size=64)
    np.testing.assert_allclose(one, many[1:], atol=1e-6)


def test_identical_windows_go_through_the_decoder_once(model: LogLLM, monkeypatch) -> None:
    rows: list[int] = []
    real = model._label_logits

    def counting(projected, batch_rows):
        rows.append(len(batch_rows))
        return real(projected, batch_rows)

    monkeypatch.setattr(model, "_label_logits", counting)
    model.score(MESSAGES, [[0, 1, 2, 3, 0, 1, 2, 3, 0, 1], [0, 1, 2, 3]])  # windows (0,4) (3,7) (6,10)
    # distinct windows: (0,1,2,3), (3,0,1,2), (2,3,0,1)
    assert sum(rows) == 3


def test_a_long_sequence_trains_on_its_highest_scoring_window(tiny_config, monkeypatch) -> None:
    model = LogLLM.build(tiny_config.replace(max_messages=2), seed=0)
    seq = [0, 1, 2, 3, 4, 0]  # windows [0, 1], [2, 3], [4, 0]: each uses other messages
    projected: list[list[int]] = []
    real = model._project

    def spy(texts, used):
        projected.append(list(used))
        return real(texts, used)

    monkeypatch.setattr(model, "_project", spy)
    best = seq[2 * int(np.argmax(_window_log_odds(model, seq))):][:2]
    for label in (0, 1):
        whole = model.loss(MESSAGES, [seq], [label]).item()
        assert projected[-1] == sorted(best)  # the rows trained on: the highest window only
        assert whole == pytest.approx(model.loss(MESSAGES, [best], [label]).item(), abs=1e-6)
    # The window is chosen by the model's own log-odds of the windows, whatever they are.
    monkeypatch.setattr(model, "_log_odds", lambda texts, windows: np.array([4 in w for w in windows], float))
    model.loss(MESSAGES, [seq], [1])
    assert projected[-1] == [0, 4]


def test_explanations_of_a_long_sequence_leave_a_line_out_of_its_windows(model: LogLLM) -> None:
    """The definition, computed directly: the sequence's log-odds is the max over its windows; leaving
    line i out changes the windows that hold it (each without i) and keeps the others."""
    texts = [MESSAGES[i] for i in LONG]
    cache = ScoreCache(log_odds_fn(model), windows=WindowPlan.of(model))
    [c] = leave_one_out(cache, [texts])
    spans = model.window_plan.spans(len(LONG))
    base = _window_log_odds(model, LONG)
    held = [(i, w) for i in range(len(LONG)) for w, (a, b) in enumerate(spans) if a <= i < b]
    logits = model.answer_logits(MESSAGES, [[m for j, m in enumerate(LONG[spans[w][0]:spans[w][1]], spans[w][0])
                                             if j != i] for i, w in held]).double().numpy()
    without = {key: v for key, v in zip(held, logits[:, 1] - logits[:, 0])}
    expected = [base.max() - max(without.get((i, w), base[w]) for w in range(len(spans))) for i in range(len(LONG))]
    np.testing.assert_allclose(c.log_odds, expected, atol=1e-5)
    score = log_odds_fn(model)(MESSAGES, [LONG], 64)[0]
    assert score == pytest.approx(base.max(), abs=1e-5)  # the explained score is the model's score
