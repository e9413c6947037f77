"""Every bench method: fit tiny, save, load, same scores (and predictions), on a message table in
another order (what a loaded method scores must come from the texts, not the training ids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from logllm.baselines.base import METHOD_FILE, MethodInput
from logllm.baselines.harness import load_methods
from logllm.baselines.templates import BenchResources
from logllm.errors import ConfigError

from .conftest import fake_token_vectors, fake_vectors

TINY = {
    "dt": {}, "knn": {"k": 3}, "rapid": {},
    "cnn": {"epochs": 1, "width": 8, "filters": 4},
    "logrobust": {"epochs": 1, "hidden": 8, "layers": 1},
    "neurallog": {"epochs": 1, "heads": 2, "ff": 16},
    "deeplog": {"epochs": 2, "hidden": 8, "layers": 1},
    "loganomaly": {"epochs": 2, "hidden": 8, "layers": 1},
    "logbert": {"steps": 10, "width": 16, "heads": 2, "ff": 32, "layers": 1},
    "fastlogad": {"gen_steps": 5, "disc_steps": 5, "width": 16, "heads": 2, "ff": 32, "layers": 1},
    "plelog": {"epochs": 1, "hidden": 8, "min_cluster_size": 5, "min_samples": 5},
}


def test_every_registered_method_is_covered() -> None:
    assert sorted(TINY) == sorted(load_methods())


def reordered(inp: MethodInput) -> MethodInput:
    """The same sequences over a reversed message table (template ids follow their texts)."""
    res = inp.resources
    n = len(res.message_texts)
    new_id = np.arange(n)[::-1]  # old message id -> new id
    texts = [res.message_texts[i] for i in new_id]
    table = BenchResources(message_texts=texts, template_of_message=np.asarray(res.template_of_message)[new_id],
                           template_texts=list(res.template_texts), _vector_fn=fake_vectors,
                           _token_vector_fn=fake_token_vectors)
    return MethodInput([new_id[np.asarray(m)] for m in inp.messages], table)


@pytest.mark.parametrize("name", sorted(TINY))
def test_save_load_same_scores(name: str, synthetic: dict, tmp_path: Path) -> None:
    cls = load_methods()[name]
    method = cls(seed=0, **TINY[name])
    train = synthetic["train"] if cls.supervision == "supervised" else synthetic["train_normal"]
    method.fit(train, synthetic["val"])
    test = synthetic["test"]
    before, pred = method.score(test), method.predict(test)
    folder = method.save(tmp_path / name)
    assert (folder / METHOD_FILE).is_file()
    loaded = cls.load(folder)
    assert loaded.params == method.params and loaded.seed == 0
    after = loaded.score(reordered(test))
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-9)
    assert (loaded.predict(reordered(test)) == pred).all()
    if method.explanation == "line-scores":
        # DeepLog's family: a rank per line; the score is the largest rank, the end key's included
        lines = loaded.line_scores(test)
        assert [len(v) for v in lines] == [len(m) for m in test.messages]
        line_max = np.asarray([v.max() for v in lines])
        assert (line_max <= before).all() and (line_max == before).any()


def test_load_refuses_another_methods_folder(synthetic: dict, tmp_path: Path) -> None:
    methods = load_methods()
    dt = methods["dt"](seed=0)
    dt.fit(synthetic["train"])
    dt.save(tmp_path / "dt")
    with pytest.raises(ConfigError, match="holds method 'dt', not 'knn'"):
        methods["knn"].load(tmp_path / "dt")
    with pytest.raises(ConfigError, match="not a saved method"):
        methods["dt"].load(tmp_path)
