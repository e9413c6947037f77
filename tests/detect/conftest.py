"""Fixtures for the detect tests: stand-ins for a model and a preprocessing with known, exact behaviour (no torch needed)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest

from logllm.detect import ParsedBatch


class FakeModel:
    """P(anomalous) = 1 - prod(1 - w(message)): 0.9 for messages with "failure", 0.001 otherwise.

    Counts the sequences it was asked to score, to check deduplication and caching.
    """

    def __init__(self) -> None:
        self.scored = 0
        self.calls = 0

    @staticmethod
    def weight(text: str) -> float:
        return 0.9 if "failure" in text else 0.001

    def score(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        self.scored += len(sequences)
        out = []
        for seq in sequences:
            keep = 1.0
            for i in seq:
                keep *= 1.0 - self.weight(texts[i])
            out.append(1.0 - keep)
        return np.array(out)


class FakePreprocessor:
    """Lines are ``LABEL TIMESTAMP content``; anything else is unparsed (kept as content, or skipped)."""

    LINE = re.compile(r"^(\S+) (\d+) (.*)$")

    def __init__(self, keep_unparsed: bool = True):
        self.keep_unparsed = keep_unparsed

    def parse(self, lines: list[str]) -> ParsedBatch:
        content: list[str | None] = []
        stamps: list[float | None] = []
        unparsed = 0
        for line in lines:
            m = self.LINE.match(line)
            if m:
                content.append(m.group(3))
                stamps.append(float(m.group(2)))
            else:
                unparsed += 1
                content.append(line if self.keep_unparsed else None)
                stamps.append(None)
        return ParsedBatch(content, stamps, unparsed)

    def mask(self, contents: list[str]) -> list[str]:
        return [re.sub(r"\S*\d\S*", "<*>", c) for c in contents]


@pytest.fixture
def fake_model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def make_detector():
    """Build a Detector on the fakes: ``make_detector(policy, **kwargs)``."""
    from logllm.detect import Detector

    def make(policy, keep_unparsed: bool = True, threshold: float = 0.5, **kwargs):
        return Detector(FakeModel(), FakePreprocessor(keep_unparsed), policy, threshold, **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory):
    """A random 2-layer, width-32 BERT (with pooler) and a small WordPiece vocabulary, saved to disk."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ("below is a sequence of system log messages : . is this normal or anomalous ? the < * > "
             "job finished in ms disk failure on kernel sshd session opened closed for user root").split()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(words)]
    path = tmp_path_factory.mktemp("tiny_encoder")
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=128, pad_token_id=0))
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def write_tb_log(path, n: int = 200) -> list[str]:
    """Thunderbird-format lines (every 23rd an alert), written to ``path``; returns the lines."""
    rows = []
    for i in range(1, n + 1):
        head = f"{1131568278 + i} 2005.11.09 dn{i % 7} Nov 9 12:31:{i % 60:02d} dn{i % 7}/dn{i % 7}"
        if i % 23 == 0:
            rows.append(f"VAPI {head} kernel: disk failure on sda{i % 4}")
        else:
            rows.append(f"- {head} sshd[{1000 + i}]: session opened for user root")
    path.write_text("\n".join(rows) + "\n")
    return rows


@pytest.fixture(scope="session")
def stream_run(tmp_path_factory, tiny_encoder):
    """A tiny untrained LogLLM run (Thunderbird lines, windows of 20, threshold 0.5) for detect's CLI."""
    import json

    from logllm.data.dataset import PreparedData
    from logllm.data.prepare import PrepareOptions, prepare
    from logllm.model.config import ModelConfig
    from logllm.model.logllm import LogLLM

    root = tmp_path_factory.mktemp("stream_run")
    log = root / "tb.log"
    write_tb_log(log)
    prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=20, train_ratio=0.5), root / "prepared")
    run = root / "run"
    config = ModelConfig(encoder=str(tiny_encoder), decoder="tiny-llama", decoder_layers=1, decoder_width=32,
                         decoder_heads=2, device="cpu")
    LogLLM.build(config, seed=0).save_pretrained(run / "model")
    (run / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
    (run / "data_manifest.json").write_text(json.dumps(PreparedData(root / "prepared").manifest))
    return {"run": run, "log": log}
