"""Drain templates: fitted on the training split only, unknown id 0 for unseen messages, stored and reused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from logllm.baselines import templates
from logllm.baselines.templates import DrainConfig, build_resources, fit_templates, load_or_fit_templates
from logllm.data.dataset import PreparedData, write_prepared
from logllm.errors import ConfigError

MESSAGES = [
    "Receiving block <*> from node alpha",
    "Receiving block <*> from node beta",
    "Deleting block <*> file <*>",
    "Exception while serving <*> to <*>",  # only in test
]


def _folder(tmp_path: Path, train_ids: list[list[int]], overwrite: bool = False) -> Path:
    import polars as pl

    def table(rows: list[list[int]], label: int) -> pl.DataFrame:
        return pl.DataFrame({
            "sequence_id": [f"s{i}" for i in range(len(rows))],
            "label": [label] * len(rows),
            "message_ids": rows,
            "file_index": [[0] * len(r) for r in rows],
            "line_numbers": [list(range(1, len(r) + 1)) for r in rows],
        })

    return write_prepared(tmp_path / "prep", MESSAGES, {"train": table(train_ids, 0), "test": table([[0, 3]], 1)},
                          {"seed": 0, "inputs": []}, overwrite=overwrite)


def test_drain_merges_variants_and_maps_unseen_to_unknown() -> None:
    table = fit_templates(MESSAGES, [np.array([0, 1, 2]), np.array([2, 0])])
    tom = table.template_of_message
    assert tom[0] == tom[1] != 0  # differ in one word of six: one template
    assert table.template_texts[tom[0]] == "Receiving block <*> from node <*>"
    assert tom[2] not in (0, tom[0])
    assert tom[3] == 0 and table.template_texts[0] == templates.UNKNOWN  # test-only message
    # sizes count training occurrences: messages 0 and 1 appear 3 times, message 2 twice
    assert table.sizes[tom[0]] == 3 and table.sizes[tom[2]] == 2


def test_test_messages_do_not_create_templates() -> None:
    # The same message set, but message 3 now also appears in training: it gets its own template.
    with_test = fit_templates(MESSAGES, [np.array([0, 3])])
    without = fit_templates(MESSAGES, [np.array([0])])
    assert with_test.template_of_message[3] != 0
    assert without.template_of_message[3] == 0
    assert without.template_of_message[2] == 0  # never in training either


def test_templates_are_stored_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path, [[0, 1, 2]])
    first = load_or_fit_templates(PreparedData(root))
    assert (root / "templates" / "message_templates.parquet").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("refitted although the stored templates match")

    monkeypatch.setattr(templates, "fit_templates", refuse)
    again = load_or_fit_templates(PreparedData(root))
    assert again.template_texts == first.template_texts
    assert (again.template_of_message == first.template_of_message).all()


def test_templates_refit_when_the_train_split_changes(tmp_path: Path) -> None:
    root = _folder(tmp_path, [[0, 1, 2]])
    assert load_or_fit_templates(PreparedData(root)).template_of_message[2] != 0
    stored = tmp_path / "stored"
    shutil.copytree(root / "templates", stored)
    root = _folder(tmp_path, [[0, 1]], overwrite=True)  # re-prepared with another training split
    shutil.copytree(stored, root / "templates")  # (replaced whole: put the earlier split's templates back)
    assert load_or_fit_templates(PreparedData(root)).template_of_message[2] == 0


def test_resources_from_a_prepared_folder(tmp_path: Path) -> None:
    root = _folder(tmp_path, [[0, 1, 2]])
    res = build_resources(PreparedData(root), vector_fn=lambda texts: np.ones((len(texts), 3)))
    assert res.n_templates == 3  # unknown + two
    assert res.message_vectors().shape == (4, 3)


def test_bad_drain_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="sim_th"):
        DrainConfig(sim_th=1.5)


def test_hdfs_slice_templates(hdfs_prepared: Path) -> None:
    data = PreparedData(hdfs_prepared)
    table = load_or_fit_templates(data, store=False)
    train_msgs = np.unique(np.concatenate(data.sequences("train").message_ids))
    assert (table.template_of_message[train_msgs] > 0).all()  # every training message has a template
    assert 5 <= len(table.template_texts) - 1 <= len(train_msgs)
