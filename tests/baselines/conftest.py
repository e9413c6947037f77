"""Fixtures for the baseline tests: an HDFS prepared slice and synthetic method inputs.

The HDFS slice is prepared with `logllm.data.prepare` from the first lines of ``HDFS_2pct.log``;
`hdfs_slice` (a simple masking regex, only the prepared-folder contract) is the fallback.
"""

from __future__ import annotations

import csv
import re
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.baselines.base import MethodInput, Resources
from logllm.data.dataset import write_prepared

# A small world of log keys for the sequence methods (DeepLog and its family): one template per
# message, ids 1..n (0 = unknown), and normal sessions with a fixed order, a loop and an optional tail.
KEY_TEXTS = ["open <*>", "alloc <*>", "write <*> bytes", "ack <*>", "close <*>", "verify <*>", "disk error <*>"]


def key_resources(texts: list[str] = KEY_TEXTS, vector_fn=None) -> Resources:
    """Resources with one template per message (ids 1..n, 0 = unknown); ``vector_fn`` stands in for
    the sentence encoder where a method needs message vectors."""
    return Resources(texts, np.arange(1, len(texts) + 1), ["<unknown>", *texts], _vector_fn=vector_fn)


def normal_keys(rng: np.random.Generator) -> np.ndarray:
    """open, alloc, write x1-4, ack, close[, verify]: a fixed order with a loop and an optional tail."""
    return np.asarray([0, 1] + [2] * int(rng.integers(1, 5)) + [3, 4] + ([5] if rng.random() < 0.5 else []))


def bag_of_words(texts: list[str], width: int = 32) -> np.ndarray:
    """A stand-in for the sentence encoder: sum of fixed random word vectors (similar texts, similar vectors)."""
    out = np.zeros((len(texts), width), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.split():
            out[i] += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(width)
    return out


_LINE = re.compile(r"^\d{6} \d{6} \d+ \w+ [^:]+: (?P<content>.*)$")
_BLOCK = re.compile(r"blk_-?\d+")
# paths and ip:port first, then any token that holds a digit
_MASK = re.compile(r"(?:/[^\s]+)|(?:\S*\d\S*)")


def fake_vectors(texts: list[str], width: int = 16) -> np.ndarray:
    """Deterministic stand-in for the encoder: a bag of hashed words, so equal words give equal parts."""
    out = np.zeros((len(texts), width), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.split():
            h = sum(ord(c) * (k + 1) for k, c in enumerate(word))
            out[i, h % width] += 1.0
            out[i, (h // width) % width] -= 0.5
    return out


def fake_token_vectors(texts: list[str], width: int = 16) -> list[np.ndarray]:
    """Token-level stand-in: one hashed vector per word."""
    return [fake_vectors(t.split() or [""], width) for t in texts]


def hdfs_slice(root: Path, log_path: Path, labels_path: Path, lines: int = 20000, seed: int = 0,
               train: float = 0.6, val: float = 0.2) -> Path:
    """A prepared folder of the HDFS blocks seen in the first ``lines`` lines; random train/val/test split."""
    labels = {r["BlockId"]: int(r["Label"] == "Anomaly") for r in csv.DictReader(labels_path.open())}
    texts: dict[str, int] = {}
    blocks: dict[str, tuple[list[int], list[int]]] = {}
    with log_path.open() as f:
        for number, line in enumerate(f, start=1):
            if number > lines:
                break
            match = _LINE.match(line.rstrip("\n"))
            assert match, f"line {number} does not parse: {line!r}"
            content = match["content"]
            masked = _MASK.sub("<*>", content)
            mid = texts.setdefault(masked, len(texts))
            for blk in dict.fromkeys(_BLOCK.findall(content)):
                ids, nums = blocks.setdefault(blk, ([], []))
                ids.append(mid)
                nums.append(number)
    names = sorted(blocks)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    cut1, cut2 = int(train * len(names)), int((train + val) * len(names))
    parts = {"train": order[:cut1], "val": order[cut1:cut2], "test": order[cut2:]}
    splits = {}
    for name, idx in parts.items():
        chosen = [names[i] for i in sorted(idx)]
        splits[name] = pl.DataFrame({
            "sequence_id": chosen,
            "label": [labels[b] for b in chosen],
            "message_ids": [blocks[b][0] for b in chosen],
            "file_index": [[0] * len(blocks[b][0]) for b in chosen],
            "line_numbers": [blocks[b][1] for b in chosen],
        })
    manifest = {"family": "hdfs", "seed": seed, "inputs": [{"path": str(log_path), "bytes": 0, "sha256": ""}]}
    return write_prepared(root, list(texts), splits, manifest)


@pytest.fixture(scope="session")
def hdfs_prepared(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """HDFS slice prepared by `logllm.data.prepare` (first 20,000 lines of HDFS_2pct: 1,324 blocks,
    59 anomalous; random split 80/20 with a fifth of train as validation, seed 0)."""
    folder = shared_data / "HDFS_2pct"
    out = tmp_path_factory.mktemp("hdfs") / "prepared"
    try:
        from logllm.data.options import PrepareOptions
        from logllm.data.prepare import prepare
    except ImportError:  # the data package without its prepare step: build the slice here
        return hdfs_slice(out, folder / "HDFS_2pct.log", folder / "anomaly_label.csv")
    options = PrepareOptions(family="hdfs", inputs=(str(folder / "HDFS_2pct.log"),),
                             labels=str(folder / "anomaly_label.csv"), end_line=20000,
                             train_ratio=0.8, val_ratio=0.2, seed=0)
    prepare(options, out)
    return out


def synthetic_split(n: int, seed: int, anomaly_every: int = 4) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences over messages 0,1,2,4 (normal flow: open, read..., close); anomalies insert message 3."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for i in range(n):
        reads = list(rng.choice([1, 4], size=int(rng.integers(2, 8))))
        ids = [0, *reads, 2]
        label = int(i % anomaly_every == 0)
        if label:
            ids.insert(int(rng.integers(1, len(ids))), 3)
        seqs.append(np.asarray(ids, dtype=np.int64))
        labels.append(label)
    return seqs, np.asarray(labels, dtype=np.int8)


SYNTHETIC_MESSAGES = ["open file <*>", "read <*> bytes", "close file <*>", "disk failure on <*>", "retry read <*>"]


@pytest.fixture
def synthetic() -> dict:
    """Supervised train / val / test inputs plus normal-only training input over one Resources."""
    from logllm.baselines.templates import BenchResources

    res = BenchResources(
        message_texts=list(SYNTHETIC_MESSAGES),
        template_of_message=np.array([1, 2, 3, 4, 5]),
        template_texts=["<unknown>", *SYNTHETIC_MESSAGES],
        _vector_fn=fake_vectors,
        _token_vector_fn=fake_token_vectors,
    )
    tr, trl = synthetic_split(200, 0)
    va, val = synthetic_split(60, 1)
    te, tel = synthetic_split(80, 2)
    return {
        "resources": res,
        "train": MethodInput(tr, res, trl),
        "train_normal": MethodInput([s for s, y in zip(tr, trl, strict=True) if y == 0], res),
        "val": MethodInput(va, res, val),
        "test": MethodInput(te, res),
        "test_labels": tel,
    }



def fit_and_measure(cls, params: dict, train, val, test, test_labels, seed: int = 0) -> dict:
    """Fit a method, score and predict the test input, return the bench's metrics."""
    from logllm.baselines.harness import metrics

    method = cls(seed=seed, **params)
    method.fit(train, val)
    scores = method.score(test)
    pred = method.predict(test)
    assert scores.shape == (len(test),) and pred.shape == (len(test),) and pred.dtype == bool
    return metrics(test_labels, pred, scores)


def hdfs_inputs(root: Path, supervision: str):
    """The harness's inputs for one kind of method on the HDFS slice, with the fake encoders."""
    from logllm.baselines.harness import build_inputs
    from logllm.baselines.templates import build_resources
    from logllm.data.dataset import PreparedData

    data = PreparedData(root)
    res = build_resources(data, vector_fn=fake_vectors, token_vector_fn=fake_token_vectors, store=False)
    return build_inputs(data, res, supervision)


def assert_batch_independent(method, inp) -> None:
    """A sequence's score must not depend on the other sequences in its batch (padding is masked)."""
    from logllm.baselines.base import MethodInput

    together = method.score(inp)
    for i in (0, 1, len(inp) - 1):
        alone = method.score(MethodInput([inp.messages[i]], inp.resources))
        assert abs(alone[0] - together[i]) < 1e-5, (i, alone[0], together[i])
