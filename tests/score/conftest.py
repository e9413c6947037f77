"""Fixtures for `logllm score`: pieces of the Thunderbird slices and a tiny untrained LogLLM run over them.

The pieces are cut from ``../shared/data/Thunderbird`` at test time (never copied into the repository):
1,500 lines of the 11-09 slice and 1,500 lines of the 11-15 slice around its first alerts. An untrained
model is enough: the tests compare `score` with `detect`, not with the labels.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

PIECES = {"tb_a.log": ("Thunderbird_slice_20051109_10219.log", 1, 1500),
          "tb_b.log": ("Thunderbird_slice_20051115_19350.log", 9001, 10500)}


def _tiny_encoder(folder: Path) -> Path:
    """A random 2-layer, width-32 BERT with a small WordPiece vocabulary (most log words are [UNK])."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ("below is a sequence of system log messages : . is this normal or anomalous ? the < * > "
             "kernel failed error data thread got not answer from any datasource synchronized to").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=128, pad_token_id=0))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def _untrained_run(run: Path, encoder: Path, prepared: Path) -> Path:
    """A run folder of an untrained tiny model (``encoder`` + a 1-layer tiny-llama) on ``prepared``,
    threshold 0.5: what `detect` and `score` need to read it."""
    from logllm.data.dataset import PreparedData
    from logllm.model.config import ModelConfig
    from logllm.model.logllm import LogLLM

    config = ModelConfig(encoder=str(encoder), decoder="tiny-llama", decoder_layers=1, decoder_width=32,
                         decoder_heads=2, device="cpu")
    LogLLM.build(config, seed=0).save_pretrained(run / "model")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    (run / "data_manifest.json").write_text(json.dumps(PreparedData(prepared).manifest))
    return run


@pytest.fixture(scope="session")
def tb_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    """``{"run", "logs": [tb_a.log, tb_b.log], "gz": tb_b.log.gz, "root"}``: a run with 100-line windows."""
    from logllm.data.prepare import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("score_run")
    logs = []
    for name, (source, first, last) in PIECES.items():
        with open(shared_data / "Thunderbird" / source, "rb") as f:
            lines = [line for n, line in enumerate(f, 1) if first <= n <= last]
        (root / name).write_bytes(b"".join(lines))
        logs.append(root / name)
    gz = root / "tb_b.log.gz"
    gz.write_bytes(gzip.compress(logs[1].read_bytes()))
    prepare(PrepareOptions(family="thunderbird", inputs=(str(logs[0]),), window=100, train_ratio=0.5),
            root / "prepared")
    run = _untrained_run(root / "run", _tiny_encoder(root / "encoder"), root / "prepared")
    return {"run": run, "logs": logs, "gz": gz, "root": root}


@pytest.fixture(scope="session")
def bad_gz(tmp_path_factory: pytest.TempPathFactory, tb_run: dict) -> Path:
    """A gzip file cut in the middle of its stream (a truncated download or copy)."""
    data = gzip.compress(tb_run["logs"][0].read_bytes())
    path = tmp_path_factory.mktemp("bad") / "truncated.log.gz"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def hdfs_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, tb_run: dict) -> dict:
    """``{"run", "parts": [3 files], "whole": the same lines in one file, "bad": a truncated .gz}``: the
    first 3,000 lines of HDFS_2pct cut into three files of 1,000 lines (most blocks' lines lie in two or
    three of them), and a tiny untrained run prepared on them (sessions by ``blk_`` id)."""
    from logllm.data.prepare import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("hdfs_run")
    with open(shared_data / "HDFS_2pct" / "HDFS_2pct.log", "rb") as f:
        lines = [next(f) for _ in range(3000)]
    whole = root / "whole.log"
    whole.write_bytes(b"".join(lines))
    parts = []
    for k in range(3):
        parts.append(root / f"hdfs.{k}.log")
        parts[-1].write_bytes(b"".join(lines[k * 1000:(k + 1) * 1000]))
    bad = root / "hdfs.1.log.gz"
    data = gzip.compress(parts[1].read_bytes())
    bad.write_bytes(data[: len(data) // 2])
    prepare(PrepareOptions(family="hdfs", inputs=(str(whole),), train_ratio=0.5,
                           labels=str(shared_data / "HDFS_2pct" / "anomaly_label.csv")), root / "prepared")
    run = _untrained_run(root / "run", tb_run["root"] / "encoder", root / "prepared")
    return {"run": run, "parts": parts, "whole": whole, "bad": bad}


@pytest.fixture(scope="session")
def hdfs_json_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, hdfs_run: dict, hdfs_as) -> dict:
    """``{"run", "parts": [2 files], "whole"}``: the 3,000 lines of ``hdfs_run`` as JSON lines whose key
    ``block`` holds the block id (``hdfs_as``), cut into two files of 1,500 lines (many blocks' lines lie
    in both; the first ends with 3 lines in no session: no key, an empty key, no JSON), and a run prepared with ``--format json --session-field block`` that holds ``hdfs_run``'s
    model (the same weights, so its sessions score as the text run's)."""
    import shutil

    from logllm.data.dataset import PreparedData
    from logllm.data.prepare import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("hdfs_json_run")
    records = [r + "\n" for r in hdfs_as(hdfs_run["whole"].read_text().splitlines(), "json")]
    whole = root / "whole.jsonl"
    whole.write_text("".join(records))
    parts = [root / "hdfs.0.jsonl", root / "hdfs.1.jsonl"]
    no_key = ['{"msg": "heartbeat from 10.251.73.220"}\n', '{"msg": "heartbeat", "block": ""}\n', "{not json\n"]
    parts[0].write_text("".join(records[:1500] + no_key))
    parts[1].write_text("".join(records[1500:]))
    prepare(PrepareOptions(family="hdfs", format="json", message_field="msg", session_field="block",
                           inputs=(str(whole),), train_ratio=0.5,
                           labels=str(shared_data / "HDFS_2pct" / "anomaly_label.csv")), root / "prepared")
    run = root / "run"
    shutil.copytree(hdfs_run["run"] / "model", run / "model")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    (run / "data_manifest.json").write_text(json.dumps(PreparedData(root / "prepared").manifest))
    return {"run": run, "parts": parts, "whole": whole}
