"""Training: oversampling arithmetic, configs, stage freezing, skipping, lr schedule, exact resume, threshold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from logllm.config import (
    TrainConfig,
    apply_overrides,
    load_config_file,
    paper_stages,
    preset,
    resolve_config,
    to_toml,
)
from logllm.errors import ConfigError
from logllm.training.checkpoint import latest_checkpoint
from logllm.training.oversample import minority_target, oversample
from logllm.training.precision import cpu_has_native_bfloat16, resolve_autocast
from logllm.training.sampling import length_key
from logllm.training.trainer import Trainer, train_run


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 1-layer, width-16 BERT with the MiniLM tokenizer, saved to a folder (no network)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from logllm.model.hub import minilm_path

    path = tmp_path_factory.mktemp("tiny_encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(path)
    return path


def tiny_config(encoder: Path, **changes) -> TrainConfig:
    """The small preset shrunk to a 1-layer width-16 encoder and decoder, 24 samples per stage epoch."""
    data = {
        "model": {"encoder": str(encoder), "decoder": "tiny-llama", "decoder_layers": 1, "decoder_width": 16,
                  "decoder_heads": 2, "device": "cpu", "decoder_lora": None},
        "micro_batch": 4, "grad_accum": 2, "checkpoint_every": 2, "keep_step_checkpoints": None,
        "stages": [{"name": n, "max_samples": 24, "epochs": 2} for n in ("1", "2a", "2b", "3")],
    }
    data.update(changes)
    return apply_overrides(preset("small"), data).validate()


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


# -- oversampling ---------------------------------------------------------------------------------

def test_minority_target_follows_the_formula():
    # alpha = 30/1000 = 0.03 < beta = 0.3: 0.3 * 0.97 / 0.7 * 1000 = 415.71 -> 416
    assert minority_target(1000, 30, 0.3) == 416
    # the minority then makes up beta of the new set
    assert 416 / (416 + 970) == pytest.approx(0.3, abs=1e-3)
    assert minority_target(1000, 300, 0.3) == 300  # alpha == beta: unchanged
    assert minority_target(1000, 400, 0.3) == 400
    assert minority_target(1000, 30, 0.0) == 30


def test_oversample_anomalous_minority():
    labels = np.array([1] * 30 + [0] * 970)
    idx, report = oversample(labels, 0.3, seed=0)
    assert report.minority_label == 1 and report.minority_after == 416
    assert len(idx) == 970 + 416
    counts = np.bincount(idx, minlength=1000)
    assert (counts[30:] == 1).all()  # every normal sample once
    assert counts[:30].sum() == 416 and counts[:30].min() == 13 and counts[:30].max() == 14  # 416 = 13*30 + 26
    again, _ = oversample(labels, 0.3, seed=0)
    other, _ = oversample(labels, 0.3, seed=1)
    assert (again == idx).all() and not np.array_equal(np.bincount(other), counts)


def test_oversample_normal_minority_and_unlabeled():
    # Liberty-like: normal is the rarer class; unlabeled rows are left out and counted
    labels = np.array([0] * 50 + [1] * 900 + [-1] * 5)
    idx, report = oversample(labels, 0.3, seed=3)
    assert report.minority_label == 0 and report.unlabeled_dropped == 5
    expected = round(0.3 * (1 - 50 / 950) / 0.7 * 950)
    assert report.minority_after == expected == int((labels[idx] == 0).sum())
    assert not (labels[idx] == -1).any()


def test_no_oversampling_when_balanced_enough():
    labels = np.array([1] * 40 + [0] * 60)
    idx, report = oversample(labels, 0.3, seed=0)
    assert list(idx) == list(range(100)) and report.samples_after == 100


# -- configs --------------------------------------------------------------------------------------

def test_paper_stage_defaults():
    stages = {s.name: s for s in paper_stages()}
    assert stages["1"].trainable == ["decoder"] and stages["1"].max_samples == 1000 and stages["1"].lr == 5e-4
    assert stages["2a"].trainable == ["projector"] and stages["2a"].lr == 5e-4 and stages["2a"].epochs == 1
    assert set(stages["2b"].trainable) == {"projector", "encoder"} and stages["2b"].lr == 5e-5
    assert set(stages["3"].trainable) == {"encoder", "projector", "decoder"} and stages["3"].epochs == 2
    paper = preset("paper")
    assert paper.effective_batch == 16 and paper.beta == 0.3 and paper.model.quantize_4bit


@pytest.mark.parametrize("name", ["small", "paper"])
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_config_file_round_trip(tmp_path: Path, name: str, suffix: str):
    config = apply_overrides(preset(name), {"seed": 7, "max_grad_norm": 1.0,
                                            "stages": [{"name": "2a", "max_samples": None, "skip": True}]})
    path = config.save(tmp_path / f"config{suffix}")
    assert resolve_config(config_file=path) == config
    assert TrainConfig.from_dict(load_config_file(path)) == config


def test_config_file_overrides_and_cli_overrides(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "small"\nseed = 3\nmicro_batch = 2\n[model]\ndecoder = "minilm-causal"\n'
                    '[[stages]]\nname = "3"\nepochs = 3\nlr = 1e-4\n')
    config = resolve_config(config_file=path, overrides={"seed": 5})
    assert config.seed == 5 and config.micro_batch == 2 and config.model.decoder == "minilm-causal"
    assert config.stage("3").epochs == 3 and config.stage("3").lr == 1e-4
    assert config.stage("1") == preset("small").stage("1")  # untouched stages keep the preset's values


@pytest.mark.parametrize("text, words", [
    ("micro_batchh = 2\n", ["micro_batchh", "micro_batch"]),
    ("beta = 1.5\n", ["beta=1.5"]),
    ("seed = \"x\"\n", ["seed", "'x'"]),
    ("[[stages]]\nname = \"1\"\ntrainable = [\"decoderr\"]\n", ["trainable", "decoderr"]),
    ("[[stages]]\nname = \"1\"\nlr = -1\n", ["lr=-1"]),
    ("micro_batch = \n", ["invalid TOML"]),
    ("autocast = \"fp8\"\n", ["autocast='fp8'", '"bfloat16"']),
    ("optimizer = \"sgd\"\n", ["optimizer='sgd'", "adamw"]),
    ("scheduler = \"cosine\"\n", ["scheduler='cosine'", "step"]),
])
def test_config_errors_name_the_option(tmp_path: Path, text: str, words: list[str]):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        resolve_config(config_file=path)
    for word in words:
        assert word in str(err.value)


def test_to_toml_writes_none_as_none_string():
    text = to_toml({"a": None, "b": [1, 2], "t": {"x": "y"}, "s": [{"name": "1"}]})
    assert text == 'a = "none"\nb = [1, 2]\n\n[t]\nx = "y"\n\n[[s]]\nname = "1"\n'


# -- trainer --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage_name", ["1", "2a", "2b", "3"])
def test_each_stage_trains_exactly_its_parts(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path,
                                             stage_name: str):
    config = tiny_config(tiny_encoder)
    trainer = Trainer(config, tiny_prepared, tmp_path / "run", progress=False)
    trainer.setup()
    stage = config.stage(stage_name)
    trainer.start_stage(stage)
    trainer.model.train()
    parts = trainer.model.parts()
    owner = {id(p): name for name, ps in parts.items() for p in ps}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    group = trainer.epoch_groups(config.stages.index(stage), 0)[0]
    trainer.step(group)
    changed = {name: False for name in parts}
    for n, p in trainer.model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        part = owner.get(id(p))
        if part in stage.trainable:
            changed[part] |= moved
        else:
            assert not moved, f"stage {stage_name}: frozen parameter {n} ({part}) changed"
    for part in stage.trainable:
        assert changed[part], f"stage {stage_name}: no parameter of trainable part {part} changed"


def test_skipped_stages_are_not_run(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder, stages=[{"name": "1", "skip": True}, {"name": "2a", "skip": True},
                                               {"name": "2b", "max_samples": 8, "epochs": 1},
                                               {"name": "3", "max_samples": 8, "epochs": 1}])
    trainer = train_run(config, tiny_prepared, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records if "loss" in r} == {"2b", "3"}
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("stage-*")) == ["stage-2b", "stage-3"]
    assert trainer.state.global_step == 2  # 8 samples / (4 x 2) per step, two stages


def test_lr_decays_ten_times_per_stage_and_epochs_reshuffle(tiny_prepared: Path, tiny_encoder: Path,
                                                            tmp_path: Path):
    config = tiny_config(tiny_encoder, micro_batch=1, grad_accum=1, checkpoint_every=0,
                         stages=[{"name": n, "skip": n != "2a"} for n in ("1", "2b", "3")]
                         + [{"name": "2a", "max_samples": 20, "epochs": 1}])
    trainer = train_run(config, tiny_prepared, tmp_path / "run", progress=False)
    lrs = [r["lr"] for r in map(json.loads, (tmp_path / "run" / "train_log.jsonl").read_text().splitlines())
           if "lr" in r]
    assert lrs == pytest.approx([5e-4 * 0.7 ** (i // 2) for i in range(20)])
    first, second = trainer.epoch_order(1, 0), trainer.epoch_order(1, 1)
    assert len(first) == 20 and not np.array_equal(first, second)
    assert np.array_equal(first, trainer.epoch_order(1, 0))


def test_group_by_length_rearranges_the_same_samples_into_even_micro_batches(tiny_prepared: Path,
                                                                            tiny_encoder: Path, tmp_path: Path):
    plain = Trainer(tiny_config(tiny_encoder, group_by_length=0), tiny_prepared, tmp_path / "a", progress=False)
    whole = Trainer(tiny_config(tiny_encoder, group_by_length=100), tiny_prepared, tmp_path / "b", progress=False)
    for trainer in (plain, whole):
        trainer.setup()
    stage = 3  # 24 samples, micro-batches of 4
    before, after = plain.epoch_order(stage, 0), whole.epoch_order(stage, 0)
    assert np.array_equal(np.sort(before), np.sort(after)) and not np.array_equal(before, after)
    assert np.array_equal(after, whole.epoch_order(stage, 0)) and not np.array_equal(after, whole.epoch_order(stage, 1))
    key = length_key(whole.train_ids, whole.train_labels, whole.config.model.max_messages)
    batches = [after[i: i + 4].tolist() for i in range(0, len(after), 4)]
    # One window holds the whole epoch: sorted, the micro-batches follow one another without overlap.
    spans = sorted((min(map(key, b)), max(map(key, b))) for b in batches)
    assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))
    def padding(batches: list[list[int]]) -> int:
        return sum(max(key(i)[0] for i in b) - key(i)[0] for b in batches for i in b)

    assert padding(batches) < padding([before[i: i + 4].tolist() for i in range(0, len(before), 4)])


def test_resume_reaches_the_same_weights(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder)
    full = train_run(config, tiny_prepared, tmp_path / "full", progress=False)
    expected = weights(full.model)
    # 6 steps per stage: killed in stage 1's second epoch, and in stage 3's second epoch
    for stop_after in (5, 23):
        run = tmp_path / f"resumed_{stop_after}"
        interrupted = Trainer(config, tiny_prepared, run, progress=False)
        interrupted.setup()
        assert interrupted.train(max_steps=stop_after) is False  # killed after this step
        assert latest_checkpoint(run).name == f"step-{stop_after - 1:07d}"  # the work after it is lost
        resumed = Trainer(config, tiny_prepared, run, progress=False)
        resumed.setup(resume=True)
        assert resumed.state.global_step == stop_after - 1
        assert resumed.train() is True
        resumed.finish()
        got = weights(resumed.model)
        assert expected.keys() == got.keys()
        for name in expected:
            assert torch.equal(expected[name], got[name]), (stop_after, name)
        assert losses(tmp_path / "full") == losses(run)  # each step logged once, with the same values
        assert (json.loads((tmp_path / "full" / "threshold.json").read_text())["threshold"]
                == json.loads((run / "threshold.json").read_text())["threshold"])


def test_resume_refuses_a_different_config(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder)
    trainer = Trainer(config, tiny_prepared, tmp_path / "run", progress=False)
    trainer.setup()
    trainer.train(max_steps=2)
    with pytest.raises(ConfigError, match="config differs"):
        Trainer(apply_overrides(config, {"seed": 1}), tiny_prepared, tmp_path / "run", progress=False).setup(
            resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(config, tiny_prepared, tmp_path / "run", progress=False).setup(resume=False)


def test_same_seed_same_weights_other_seed_differs(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder, stages=[{"name": n, "max_samples": 8, "epochs": 1}
                                               for n in ("1", "2a", "2b", "3")])
    a = weights(train_run(config, tiny_prepared, tmp_path / "a", progress=False).model)
    b = weights(train_run(config, tiny_prepared, tmp_path / "b", progress=False).model)
    c = weights(train_run(apply_overrides(config, {"seed": 1}), tiny_prepared, tmp_path / "c",
                          progress=False).model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_optimizer_and_scheduler_are_built_from_their_names():
    from logllm.config import OPTIMIZER_NAMES, SCHEDULER_NAMES
    from logllm.training.optim import OPTIMIZERS, SCHEDULERS, build_optimizer

    assert set(OPTIMIZERS) == set(OPTIMIZER_NAMES) and set(SCHEDULERS) == set(SCHEDULER_NAMES)
    params = [torch.nn.Parameter(torch.zeros(3))]
    config = apply_overrides(TrainConfig(), {"optimizer": "adamw", "scheduler": "step", "weight_decay": 0.05,
                                             "lr_decay": 0.5, "lr_decays": 4})
    optimizer, scheduler = build_optimizer(config, params, 1e-3, steps=10)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]["weight_decay"] == 0.05
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert (scheduler.step_size, scheduler.gamma) == (3, 0.5)  # ceil(10 / 4) steps between decays
    _, constant = build_optimizer(apply_overrides(config, {"lr_decays": 0}), params, 1e-3, steps=10)
    assert constant.step_size == 11  # never within the stage
    with pytest.raises(ConfigError, match="optimizer='sgd'"):
        build_optimizer(apply_overrides(config, {"optimizer": "sgd"}), params, 1e-3, steps=10)


@pytest.mark.parametrize("cpuinfo, native", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_tile amx_bf16\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl avx512dq\n", False),  # emulated only
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm FEAT_BF16
    ("processor\t: 0\nFeatures\t: fp asimd\n", False),
    (None, False),  # no /proc/cpuinfo (macOS, Windows): "auto" stays float32
])
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path, cpuinfo: str | None, native: bool):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("torch without oneDNN: no CPU bfloat16 autocast")
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    assert cpu_has_native_bfloat16(path) is native


def test_no_private_torch_ops_in_the_package():
    import re

    import logllm

    private = re.compile(r"torch\.(ops\.|_(?!_version__))")
    found = [f"{path}:{i}" for path in Path(logllm.__file__).parent.rglob("*.py")
             for i, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert not found, found


def test_autocast_resolves_per_device():
    cpu = torch.device("cpu")
    assert resolve_autocast(None, cpu) is None
    assert resolve_autocast("bfloat16", cpu) is torch.bfloat16
    assert resolve_autocast("auto", cpu) is (torch.bfloat16 if cpu_has_native_bfloat16() else None)
    assert resolve_autocast("auto", torch.device("meta")) is None
    assert resolve_autocast("auto", torch.device("cuda")) is None  # GPUs: dtype = "bfloat16" instead


def test_bfloat16_autocast_trains_float32_weights_reproducibly(tiny_prepared: Path, tiny_encoder: Path,
                                                               tmp_path: Path):
    """Autocast changes the losses a little (its matmuls are bfloat16), keeps the weights float32, and the
    same seed still gives the same weights bit for bit."""
    stages = [{"name": n, "max_samples": 8, "epochs": 1} for n in ("1", "2a", "2b", "3")]
    plain = train_run(tiny_config(tiny_encoder, stages=stages, autocast=None), tiny_prepared, tmp_path / "fp32",
                      progress=False)
    config = tiny_config(tiny_encoder, stages=stages, autocast="bfloat16")
    a = train_run(config, tiny_prepared, tmp_path / "a", progress=False)
    b = train_run(config, tiny_prepared, tmp_path / "b", progress=False)
    assert plain.autocast_dtype is None and a.autocast_dtype is torch.bfloat16
    start = json.loads((tmp_path / "a" / "train_log.jsonl").read_text().splitlines()[0])
    assert start["autocast"] == "bfloat16"
    wa, wb = weights(a.model), weights(b.model)
    assert all(w.dtype in (torch.float32, torch.int64) for w in wa.values())
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "a")
    assert len(fp32) == len(bf16) and fp32 != bf16
    assert np.allclose(fp32[0], bf16[0], rtol=0.05)  # the first step starts from the same weights


def test_threshold_from_val_or_default(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder, stages=[{"name": n, "max_samples": 8, "epochs": 1}
                                               for n in ("1", "2a", "2b", "3")])
    trainer = train_run(config, tiny_prepared, tmp_path / "with_val", progress=False)
    info = json.loads((tmp_path / "with_val" / "threshold.json").read_text())
    assert info["source"] == "val" and info["val_sequences"] == 16 and info["val_anomalous"] == 4
    # the threshold is the one that maximises F1 on the val scores
    from logllm.evaluate import choose_threshold

    val = trainer.data.sequences("val")
    scores = trainer.model.score(trainer.texts, [m.tolist() for m in val.message_ids])
    assert info["threshold"] == pytest.approx(choose_threshold(val.labels, scores)[0])

    # The same folder prepared without a val split (the reader refuses a val.parquet deleted by hand).
    import polars as pl

    from logllm.data.dataset import write_prepared

    manifest = json.loads((tiny_prepared / "manifest.json").read_text())
    splits = {name: pl.read_parquet(tiny_prepared / f"{name}.parquet") for name in ("train", "test")}
    messages = pl.read_parquet(tiny_prepared / "messages.parquet")
    no_val = write_prepared(tmp_path / "prepared_no_val", messages, splits,
                            {k: v for k, v in manifest.items() if k not in ("files", "splits")})
    train_run(config, no_val, tmp_path / "no_val", progress=False)
    info = json.loads((tmp_path / "no_val" / "threshold.json").read_text())
    assert info["threshold"] == 0.5 and info["source"] == "default" and "no val split" in info["reason"]


def test_early_stopping_stops_the_last_stage(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder, early_stopping_patience=1, eval_every=1,
                         stages=[{"name": n, "skip": True} for n in ("1", "2a", "2b")]
                         + [{"name": "3", "max_samples": 24, "epochs": 20, "lr": 1.0}])
    trainer = train_run(config, tiny_prepared, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    checks = [r for r in records if r.get("event") == "validation"]
    assert trainer.state.stopped_early
    assert len(checks) == trainer.state.global_step < trainer.steps_in_stage(3)
    assert checks[-1]["val_loss"] >= checks[-2]["best_val_loss"]
