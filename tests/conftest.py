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


def _write_tiny_config(root: Path, extra: str = "") -> Path:
    """A TOML config in ``root``: the small preset with a random width-16 encoder (saved in ``root``) and
    a 1-layer tiny-llama decoder, 16 samples per stage; ``extra`` adds top-level lines."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from logllm.model.hub import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.save_pretrained(root / "encoder")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(root / "encoder")
    stages = "".join(f'\n[[stages]]\nname = "{n}"\nmax_samples = 16\nepochs = 1\n' for n in ("1", "2a", "2b", "3"))
    path = root / "tiny.toml"
    path.write_text(f'preset = "small"\nmicro_batch = 4\ngrad_accum = 2\n{extra}\n[model]\n'
                    f'encoder = "{root / "encoder"}"\ndecoder = "tiny-llama"\ndecoder_lora = "none"\ndecoder_layers = 1\n'
                    f'decoder_width = 16\ndecoder_heads = 2\ndevice = "cpu"\n{stages}')
    return path


@pytest.fixture(scope="session")
def write_tiny_config():
    """The function that writes a tiny TOML config (see ``_write_tiny_config``)."""
    return _write_tiny_config


def _hdfs_as(lines: list[str], fmt: str) -> list[str]:
    """HDFS text lines written as structured lines of ``fmt`` (json, logfmt or syslog): the message
    (``msg``; syslog's MSG) is the line's ``<Content>``, the block id it names is the key ``block``
    (syslog: RFC 5424 structured data ``[hdfs@32473 block="..."]``, key ``sd.hdfs@32473.block``);
    a line naming no block has no such key, one naming several has a JSON array (json only)."""
    import json

    import polars as pl

    from logllm.data.formats import FAMILY_FORMATS, LogFormat
    from logllm.data.options import HDFS_SESSION_REGEX

    fields = LogFormat.parse(FAMILY_FORMATS["hdfs"]).extract(
        pl.Series(lines), ["Date", "Time", "Pid", "Level", "Component", "Content"])
    ids = pl.Series(lines).str.extract_all(HDFS_SESSION_REGEX).list.unique(maintain_order=True).to_list()
    severity = {"INFO": 6, "WARN": 4, "ERROR": 3}
    out = []
    for row, blocks in zip(fields.iter_rows(named=True), ids):
        if fmt != "json" and len(blocks) > 1:
            raise ValueError(f"a line names {len(blocks)} blocks: only JSON holds several ({row['Content']!r})")
        if fmt == "json":
            record = {"date": row["Date"], "time": row["Time"], "pid": int(row["Pid"]), "level": row["Level"],
                      "component": row["Component"], "msg": row["Content"]}
            if blocks:
                record["block"] = blocks[0] if len(blocks) == 1 else blocks
            out.append(json.dumps(record))
        elif fmt == "logfmt":
            block = f" block={blocks[0]}" if blocks else ""
            out.append(f"date={row['Date']} time={row['Time']} pid={row['Pid']} level={row['Level']} "
                       f"component={row['Component']} msg={json.dumps(row['Content'])}{block}")
        elif fmt == "syslog":
            d, t = row["Date"], row["Time"]
            stamp = f"20{d[:2]}-{d[2:4]}-{d[4:]}T{t[:2]}:{t[2:4]}:{t[4:]}Z"
            sd = f'[hdfs@32473 block="{blocks[0]}"]' if blocks else "-"
            out.append(f"<{8 + severity[row['Level']]}>1 {stamp} - {row['Component']} {row['Pid']} - {sd} "
                       f"{row['Content']}")
        else:
            raise ValueError(f"no such structured format {fmt!r}")
    return out


@pytest.fixture(scope="session")
def hdfs_as():
    """The function that writes HDFS text lines as json, logfmt or syslog lines (see ``_hdfs_as``)."""
    return _hdfs_as
