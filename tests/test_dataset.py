from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from logllm.data.dataset import PreparedData, write_prepared
from logllm.errors import DataError


def test_roundtrip(tiny_prepared):
    data = PreparedData.load(tiny_prepared)
    train = data.sequences("train")
    assert len(train) == 64
    assert train.anomalous == 16
    assert all(3 in ids for ids, y in zip(train.message_ids, train.labels) if y == 1)
    assert data.messages[3] == "disk failure on <*>"
    counts = data.message_table["count"].to_numpy()
    total = sum(len(m) for s in ("train", "val", "test") for m in data.sequences(s).message_ids)
    assert counts.sum() == total


def test_missing_split_and_manifest(tiny_prepared, tmp_path):
    data = PreparedData.load(tiny_prepared)
    (tiny_prepared / "val.parquet").unlink()
    with pytest.raises(DataError, match="split 'val' not found"):
        data.split("val")
    with pytest.raises(DataError, match="manifest.json is missing"):
        PreparedData.load(tmp_path)


def forget_file_checks(root):
    """Drop the manifest's file sizes and checksums (a folder of an older logllm), so that a table
    replaced by hand reaches the column checks."""
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["files"]
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_schema_is_checked(tiny_prepared):
    bad = pl.read_parquet(tiny_prepared / "train.parquet").drop("line_numbers")
    bad.write_parquet(tiny_prepared / "train.parquet")
    forget_file_checks(tiny_prepared)
    with pytest.raises(DataError, match="'line_numbers' is missing"):
        PreparedData.load(tiny_prepared).split("train")


def test_out_of_range_message_id(tmp_path):
    df = pl.DataFrame({"sequence_id": ["a"], "label": [0], "message_ids": [[0, 5]],
                       "file_index": [[0, 0]], "line_numbers": [[1, 2]]})
    root = tmp_path / "q"
    write_prepared(root, ["x"] * 6, {"train": df}, {"seed": 1})
    pl.DataFrame({"message_id": np.array([0], dtype=np.uint32), "text": ["x"],
                  "count": np.array([1], dtype=np.uint64)}).write_parquet(root / "messages.parquet")
    assert set(json.loads((root / "manifest.json").read_text())) == {"seed", "files"}
    forget_file_checks(root)
    with pytest.raises(DataError, match="out of range"):
        PreparedData.load(root).split("train")
    assert json.loads((root / "manifest.json").read_text()) == {"seed": 1}
