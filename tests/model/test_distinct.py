"""Training once per distinct (sequence, label) pair with weights, and exact resume with a LoRA decoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from logllm.model import LogLLM, LoraSpec, ModelConfig
from logllm.training.checkpoint import latest_checkpoint
from logllm.training.oversample import distinct_samples, oversample
from logllm.training.trainer import Trainer, train_run

from .conftest import MESSAGES
from .test_training import losses, tiny_config, tiny_encoder, weights  # noqa: F401 - tiny_encoder is a fixture


def test_distinct_samples_keeps_one_of_each_pair_with_its_count():
    labels = np.array([0, 1, 0, 0, 1, 0])
    seqs = [(1, 2), (1, 2), (1, 2), (3,), (1, 2), (3,)]
    samples, _ = oversample(labels, beta=0.5, seed=0)  # anomalous 2 of 6 -> 3 of 7... repeated
    keys = [(s, int(y)) for s, y in zip(seqs, labels, strict=True)]
    reps, counts = distinct_samples(samples, keys)
    assert reps.tolist() == [0, 1, 3]  # first index of each pair, in index order
    expected = {k: sum(keys[i] == k for i in samples) for k in {keys[i] for i in samples}}
    assert {keys[i]: c for i, c in zip(reps.tolist(), counts.tolist(), strict=True)} == expected
    assert counts.sum() == len(samples)


def test_weighted_loss_equals_the_loss_of_the_repeated_rows(tiny_models):
    model = LogLLM.build(ModelConfig(encoder=str(tiny_models.encoder), decoder="tiny-llama", decoder_width=32,
                                     decoder_heads=2, device="cpu"), seed=0).eval()
    seqs, labels, w = [[0, 1, 2], [3, 1], [4, 4, 0]], [0, 1, 0], [3, 1, 2]
    expanded = [s for s, k in zip(seqs, w, strict=True) for _ in range(k)]
    expanded_labels = [y for y, k in zip(labels, w, strict=True) for _ in range(k)]
    weighted = model.loss(MESSAGES, seqs, labels, w)
    plain = model.loss(MESSAGES, expanded, expanded_labels)
    assert torch.allclose(weighted, plain, rtol=1e-6)
    assert not torch.allclose(weighted, model.loss(MESSAGES, seqs, labels), rtol=1e-4)  # weights matter


def test_the_trainer_steps_over_distinct_pairs(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):  # noqa: F811
    config = tiny_config(tiny_encoder, distinct_samples=True, distinct_weight="count")
    trainer = Trainer(config, tiny_prepared, tmp_path / "run", progress=False)
    trainer.setup()
    plain = Trainer(tiny_config(tiny_encoder, distinct_samples=False), tiny_prepared, tmp_path / "plain", progress=False)
    plain.setup()
    keys = {(tuple(plain.train_ids[i]), int(plain.train_labels[i])) for i in plain.samples}
    assert len(trainer.samples) == len(keys) < len(plain.samples)
    assert trainer.sample_weight[trainer.samples].sum() == len(plain.samples)
    order = trainer.epoch_order(0, 0)
    assert len(set(order.tolist())) == len(order)  # each pair once per epoch


def test_resume_in_stage_3_is_exact_with_a_lora_decoder(tiny_prepared: Path, tiny_encoder: Path,  # noqa: F811
                                                        tiny_models, tmp_path: Path):
    config = tiny_config(tiny_encoder, distinct_samples=True)
    config.model = config.model.replace(decoder=str(tiny_models.llama), decoder_lora=LoraSpec(r=4, alpha=8, dropout=0.1))
    full = train_run(config, tiny_prepared, tmp_path / "full", progress=False)
    expected = weights(full.model)
    total = full.state.global_step
    stop_after = total - 2  # inside stage 3's second epoch
    run = tmp_path / "resumed"
    interrupted = Trainer(config, tiny_prepared, run, progress=False)
    interrupted.setup()
    assert interrupted.train(max_steps=stop_after) is False
    assert interrupted.config.stages[interrupted.state.stage_index].name == "3"
    resumed = Trainer(config, tiny_prepared, run, progress=False)
    resumed.setup(resume=True)
    assert latest_checkpoint(run) is not None and 0 < resumed.state.global_step < total
    assert resumed.train() is True
    resumed.finish()
    got = weights(resumed.model)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert losses(tmp_path / "full") == losses(run)
    adapter = json.loads((run / "model" / "decoder" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_models.llama)  # the config's setting, not a cache path


def test_distinct_samples_is_on_in_small_only():
    # Off by default and in `paper`; on in `small`, with weight "one" (chosen on validation, docs/model.md).
    from logllm.config import TrainConfig, preset

    assert TrainConfig().distinct_samples is False and preset("paper").distinct_samples is False
    assert preset("small").distinct_samples is True and preset("small").distinct_weight == "one"


def test_distinct_weight_count_sqrt_one_and_bad_value():
    import dataclasses

    import pytest

    from logllm.config import preset
    from logllm.errors import ConfigError
    from logllm.training.sampling import training_samples

    ids = [[1, 2], [1, 2], [1, 2], [3], [3], [4]]
    labels = np.array([0, 0, 0, 0, 0, 1])
    base = dataclasses.replace(preset("small"), distinct_samples=True, beta=0.0)
    got = {}
    for rule in ("count", "sqrt", "one"):
        samples, weight, _ = training_samples(ids, labels, dataclasses.replace(base, distinct_weight=rule).validate())
        got[rule] = [float(weight[i]) for i in samples.tolist()]
    assert got["count"] == [3.0, 2.0, 1.0]
    assert got["sqrt"] == pytest.approx([3 ** 0.5, 2 ** 0.5, 1.0])
    assert got["one"] == [1.0, 1.0, 1.0]
    from logllm.config import DISTINCT_WEIGHTS
    from logllm.training.sampling import PAIR_WEIGHTS

    assert tuple(PAIR_WEIGHTS) == DISTINCT_WEIGHTS  # every accepted value has its rule
    with pytest.raises(ConfigError, match="distinct_weight"):
        dataclasses.replace(base, distinct_weight="log").validate()
