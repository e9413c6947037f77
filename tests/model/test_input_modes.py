"""Input modes (Table IV): Drain templates fitted on training messages, the template-id encoder, and
`logllm train --input` on a tiny prepared folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from logllm.cli import main
from logllm.errors import ConfigError
from logllm.model.config import LoraSpec, ModelConfig
from logllm.model.inputs import UNSEEN, MessageInputs, check_masking, training_texts

TRAIN = ["open file <*>", "read <*> bytes", "close file <*>", "disk failure on <*>", "retry <*>",
         "open file <*> now"]


def test_unseen_templates_map_to_the_unseen_id():
    inputs = MessageInputs.fit("template-id", TRAIN)
    ids = inputs.template_ids(["read <*> bytes", "kernel panic at cpu <*>", "open file <*>", "read <*> bytes"])
    assert ids[1] == UNSEEN == 0
    assert ids[0] == ids[3] != UNSEEN and ids[2] not in (UNSEEN, ids[0])
    assert 1 <= min(i for i in ids if i) and max(ids) <= inputs.n_templates
    assert inputs.stats == {"mapped": 3, "unseen": 1}  # each distinct text matched once


def test_template_text_replaces_a_message_and_an_unseen_one_keeps_its_own():
    inputs = MessageInputs.fit("template", TRAIN)
    # A new variant of a known message (a number not masked) maps to that message's template.
    got = inputs.encoder_texts(["read <*> bytes", "read 42 bytes", "kernel panic at cpu <*>"])
    assert got[0] == "read <*> bytes" and got[1] == "read <*> bytes"
    assert got[2] == "kernel panic at cpu <*>"  # no training template: read as itself
    assert inputs.stats["unseen"] == 1


def test_training_texts_are_distinct_in_order_of_first_appearance():
    messages = ["a <*>", "b <*>", "c <*>", "d <*>"]
    assert training_texts(messages, [[2, 0, 2], [1, 0]]) == ["c <*>", "a <*>", "b <*>"]  # "d" only in test


def test_masking_must_fit_the_mode():
    paper = {"options": {"mask": "paper", "mask_instructions": [{"regex": "x", "mask_with": "*"}]}}
    none = {"options": {"mask": "none", "mask_instructions": []}}
    with pytest.raises(ConfigError, match="--mask none"):
        check_masking("raw", paper, "prep/")
    with pytest.raises(ConfigError, match="--input raw"):
        check_masking("regex", none, "prep/")
    for mode, manifest in (("raw", none), ("regex", paper), ("template", paper), ("template-id", none),
                           ("raw", {})):
        check_masking(mode, manifest, "prep/")  # accepted


def test_config_refuses_bad_modes():
    with pytest.raises(ConfigError, match="input_mode must be one of"):
        ModelConfig(input_mode="ids")
    with pytest.raises(ConfigError, match="encoder_lora = null"):
        ModelConfig(input_mode="template-id", encoder_lora=LoraSpec())
    with pytest.raises(ConfigError, match="template_width"):
        ModelConfig(input_mode="template-id", template_width=0)


@pytest.mark.parametrize("mode", ["template", "template-id"])
def test_template_model_saves_and_loads(tiny_config: ModelConfig, tmp_path: Path, mode: str):
    from logllm.model.logllm import LogLLM
    from logllm.model.template_encoder import TemplateEncoder

    config = tiny_config.replace(input_mode=mode)
    with pytest.raises(ConfigError, match="training_texts"):
        LogLLM.build(config)
    model = LogLLM.build(config, seed=0, training_texts=TRAIN)
    assert isinstance(model.encoder, TemplateEncoder) == (mode == "template-id")
    seqs = [["open file <*>", "read <*> bytes"], ["disk failure on <*>", "kernel panic at cpu <*>"],
            ["read 7 bytes", "retry <*>"]]
    before = model.score(seqs)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "inputs.json").read_text())["training_texts"] == TRAIN
    loaded = LogLLM.from_pretrained(tmp_path / "m")
    assert loaded.inputs.mode == mode and loaded.inputs.n_templates == model.inputs.n_templates
    assert np.allclose(loaded.score(seqs), before, atol=1e-6)
    if mode == "template-id":
        # The encoder's parts are the table itself; it trains in full in the stages that train the encoder.
        assert [p.shape for p in model.parts()["encoder"]] == [(model.inputs.n_templates + 1, config.template_width)]
        assert model.projector.in_features == config.template_width
        # An unseen message is read as row 0 of the table.
        vec = model.message_vectors(["kernel panic at cpu <*>"])
        assert torch.equal(vec[0], model.encoder.table.weight[UNSEEN].float())


def test_template_id_width_sets_the_projector(tiny_config: ModelConfig):
    from logllm.model.logllm import LogLLM

    model = LogLLM.build(tiny_config.replace(input_mode="template-id", template_width=12), training_texts=TRAIN)
    assert model.projector.in_features == 12 and model.encoder.table.weight.shape == (len(TRAIN) + 1, 12)


@pytest.fixture(scope="module")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory, write_tiny_config) -> Path:
    return write_tiny_config(tmp_path_factory.mktemp("tiny_inputs"))


@pytest.mark.parametrize("mode", ["template", "template-id"])
def test_train_input_mode_records_it_and_evaluates(tiny_prepared: Path, tiny_config_file: Path, tmp_path: Path,
                                                   mode: str):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_prepared), "--out", str(run), "--config", str(tiny_config_file),
                 "--input", mode, "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["model"]["input_mode"] == mode
    saved = json.loads((run / "model" / "inputs.json").read_text())
    assert saved["mode"] == mode and "disk failure on <*>" in saved["training_texts"]
    assert main(["evaluate", str(run), "--data", str(tiny_prepared), "--split", "test"]) == 0
    import polars as pl

    from logllm.data.dataset import PreparedData
    from logllm.model.logllm import LogLLM

    metrics = json.loads((run / "eval" / "test" / "metrics.json").read_text())
    assert 0.0 <= metrics["f1"] <= 1.0
    # The saved model, loaded on its own, maps the messages as training did: the same scores.
    data = PreparedData(tiny_prepared)
    model = LogLLM.from_pretrained(run)
    expected = model.score(data.messages, [m.tolist() for m in data.sequences("test").message_ids])
    scores = pl.read_parquet(run / "eval" / "test" / "scores.parquet")["score"].to_numpy()
    assert len(scores) == 32 and np.allclose(scores, expected, atol=1e-6)
    if mode == "template-id":
        # The table trained in the stages that train the encoder (2b, 3): it moved from its seeded start.
        fresh = LogLLM.build(model.config, seed=0, training_texts=model.inputs.matcher.training_texts)
        assert fresh.encoder.table.weight.shape == model.encoder.table.weight.shape
        assert not torch.allclose(fresh.encoder.table.weight, model.encoder.table.weight)


def test_train_input_refused_with_a_bench_method(tiny_prepared: Path, tmp_path: Path, capsys):
    assert main(["train", "--method", "dt", "--data", str(tiny_prepared), "--out", str(tmp_path / "r"),
                 "--input", "template"]) == 2
    assert "--input" in capsys.readouterr().err


def test_train_input_raw_needs_unmasked_data(tmp_path: Path, tiny_config_file: Path, capsys):
    log = tmp_path / "tb.log"
    log.write_text("".join(f"- {1131568278 + i} 2005.11.09 dn1 Nov 9 12:31:00 dn1/dn1 sshd[{i}]: session {i} opened\n"
                           for i in range(40)))
    prepared = tmp_path / "prepared"
    assert main(["-q", "prepare", "thunderbird", "--log", str(log), "--out", str(prepared), "--window", "10"]) == 0
    assert main(["train", "--data", str(prepared), "--out", str(tmp_path / "run"), "--config", str(tiny_config_file),
                 "--input", "raw", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--input raw" in err and "--mask none" in err and str(prepared) in err
    assert not (tmp_path / "run" / "model").exists()
