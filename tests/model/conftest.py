"""Tiny random models built in code for fast model tests (shared with the training tests).

``tiny_models`` holds paths of a 2-layer width-32 BERT encoder with a small WordPiece vocabulary, a
tiny Llama causal LM and a tiny GPT-2 (each saved with that tokenizer), so that every decoder kind
runs without network in well under a second per step. ``tiny_config`` is a ModelConfig over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from logllm.model.config import ModelConfig

MESSAGES = ["open file <*>", "read <*> bytes", "close file <*>", "disk failure on <*>", "retry <*>",
            "a very long message " + " ".join(["word"] * 40)]
_WORDS = ("below is a sequence of system log messages : . is this normal or anomalous ? the "
          "open file < * > read bytes close disk failure on retry very long message word")


@dataclass(frozen=True)
class TinyModels:
    encoder: Path   # BertModel with pooler, 2 layers, width 32
    llama: Path     # LlamaForCausalLM, 2 layers, width 32
    gpt2: Path      # GPT2LMHeadModel, 1 layer, width 32


def _tokenizer(folder: Path):
    from transformers import BertTokenizer

    words = list(dict.fromkeys(_WORDS.split()))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##ed"]
    folder.mkdir(parents=True, exist_ok=True)

    return BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    from transformers import (
        BertConfig,
        BertModel,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = tmp_path_factory.mktemp("tiny_models")
    tok = _tokenizer(root / "vocab")
    torch.manual_seed(0)
    enc = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=128, pad_token_id=0))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
                                         eos_token_id=3))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=512,
                                               bos_token_id=2, eos_token_id=3))
    paths = TinyModels(root / "encoder", root / "llama", root / "gpt2")
    for model, path in ((enc, paths.encoder), (llama, paths.llama), (gpt2, paths.gpt2)):
        model.save_pretrained(str(path))
        tok.save_pretrained(str(path))
    return paths


@pytest.fixture
def tiny_config(tiny_models: TinyModels) -> ModelConfig:
    """Tiny encoder + tiny-llama decoder built from config (width 32), on the CPU."""
    return ModelConfig(encoder=str(tiny_models.encoder), decoder="tiny-llama", decoder_layers=2,
                       decoder_width=32, decoder_heads=2, device="cpu")
