"""Shared fixtures: where the sample data lives, and a tiny prepared folder built in code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# polars and the data package are imported where used, so the GPU tests run where only torch is installed.

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOGLLM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def logllm_cache(tmp_path_factory: pytest.TempPathFactory):
    """A fresh logllm cache for the test session (GGUF decoders are converted into it once)."""
    old = os.environ.get("LOGLLM_CACHE")
    path = tmp_path_factory.mktemp("logllm_cache")
    os.environ["LOGLLM_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LOGLLM_CACHE", None)
    else:
        os.environ["LOGLLM_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (the labeled HDFS, BGL and Thunderbird slices); skips where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"sample data not found at {SHARED_DATA}")
    return SHARED_DATA


def make_sequences(rows: list[tuple[str, int | None, list[int]]]):
    """A split table (polars DataFrame) from (sequence_id, label, message_ids); line numbers made up, file 0."""
    import polars as pl

    line = 0
    files, lines = [], []
    for _, _, ids in rows:
        files.append([0] * len(ids))
        lines.append(list(range(line + 1, line + 1 + len(ids))))
        line += len(ids)
    return pl.DataFrame({
        "sequence_id": [r[0] for r in rows],
        "label": [r[1] for r in rows],
        "message_ids": [r[2] for r in rows],
        "file_index": files,
        "line_numbers": lines,
    })


@pytest.fixture
def tiny_prepared(tmp_path: Path) -> Path:
    """A prepared folder with a learnable pattern: sequences containing message 3 are anomalous."""
    from logllm.data.dataset import write_prepared

    rng = np.random.default_rng(0)
    messages = ["open file <*>", "read <*> bytes", "close file <*>", "disk failure on <*>", "retry <*>"]
    splits = {}
    for name, n in (("train", 64), ("val", 16), ("test", 32)):
        rows = []
        for i in range(n):
            ids = list(rng.choice([0, 1, 2, 4], size=int(rng.integers(3, 9))))
            label = int(i % 4 == 0)
            if label:
                ids.insert(int(rng.integers(0, len(ids))), 3)
            rows.append((f"{name}-{i}", label, [int(x) for x in ids]))
        splits[name] = make_sequences(rows)
    manifest = {"family": "synthetic", "seed": 0, "inputs": [{"path": "synthetic.log", "bytes": 0, "sha256": ""}]}
    return write_prepared(tmp_path / "prepared", messages, splits, manifest)
