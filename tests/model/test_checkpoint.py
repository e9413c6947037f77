"""Checkpoints: the training state as safetensors + JSON (never pickle), checksums.json, and `--resume`
falling back from a damaged newest checkpoint."""

from __future__ import annotations

import json
import logging
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from logllm.errors import ConfigError
from logllm.training.checkpoint import (
    CHECKSUMS,
    checkpoint_problem,
    latest_checkpoint,
    load_optimizer,
    load_rng,
    load_scheduler,
    safetensors_problem,
    save_optimizer,
    save_rng,
    save_scheduler,
    write_checksums,
)
from logllm.training.trainer import Trainer, train_run

from . import test_training
from .test_training import losses, tiny_config, weights

tiny_encoder = test_training.tiny_encoder  # the fixture: a random 1-layer width-16 BERT

STAGES = [{"name": n, "max_samples": 16, "epochs": 1} for n in ("1", "2a", "2b", "3")]  # 2 steps each


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _interrupted(config, data: Path, run: Path, steps: int) -> Path:
    trainer = Trainer(config, data, run, progress=False)
    trainer.setup()
    assert trainer.train(max_steps=steps) is False
    return run / "checkpoints"


DAMAGES = {
    "truncated safetensors": lambda ckpt: _truncate(ckpt / "optimizer.safetensors"),
    "truncated model file": lambda ckpt: _truncate(ckpt / "model" / "projector.safetensors"),
    "broken JSON": lambda ckpt: (ckpt / "trainer_state.json").write_text('{"state": {"global_'),
    "missing file": lambda ckpt: (ckpt / "rng.json").unlink(),
}


BAD_FILE = {"truncated safetensors": "optimizer.safetensors", "truncated model file": "projector.safetensors",
            "broken JSON": "trainer_state.json", "missing file": "rng.json"}


def _damaged_run(config, data: Path, run: Path, damage: str) -> Path:
    # killed after step 5 (stage 2b's first): checkpoints step-1, stage-1 (step 2), step-3, stage-2a (4), step-5
    root = _interrupted(config, data, run, 5)
    assert latest_checkpoint(run) == root / "step-0000005"
    DAMAGES[damage](root / "step-0000005")
    return root


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_names_the_damaged_file_and_falls_back(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path,
                                                      damage: str, caplog):
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=1)
    run = tmp_path / "run"
    _damaged_run(config, tiny_prepared, run, damage)
    with caplog.at_level(logging.WARNING, logger="logllm.training"):
        resumed = Trainer(config, tiny_prepared, run, progress=False)
        resumed.setup(resume=True)
    assert resumed.state.global_step == 4 and resumed.state.stage_index == 2  # from stage-2a
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("step-0000005" in w and "damaged" in w and BAD_FILE[damage] in w for w in warnings), warnings
    records = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r for r in records if r.get("event") == "resume"][-1]["skipped_damaged"] == ["step-0000005"]


def test_resume_from_the_previous_checkpoint_ends_with_the_same_weights(tiny_prepared: Path, tiny_encoder: Path,
                                                                         tmp_path: Path):
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=1)
    full = train_run(config, tiny_prepared, tmp_path / "full", progress=False)
    run = tmp_path / "run"
    root = _damaged_run(config, tiny_prepared, run, "truncated safetensors")
    resumed = train_run(config, tiny_prepared, run, resume=True, progress=False)
    expected, got = weights(full.model), weights(resumed.model)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert losses(tmp_path / "full") == losses(run)  # each step logged once, with the same values
    assert checkpoint_problem(root / "step-0000005") is None  # written again on the way


def test_no_usable_checkpoint_is_one_clear_error(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=1)
    root = _interrupted(config, tiny_prepared, tmp_path / "run", 3)
    assert sorted(p.name for p in root.iterdir()) == ["stage-1", "step-0000001", "step-0000003"]
    _truncate(root / "stage-1" / "rng.safetensors")
    (root / "step-0000001" / "model" / "logllm_config.json").unlink()
    (root / "step-0000003" / "trainer_state.json").write_text("{")
    with pytest.raises(ConfigError) as err:
        Trainer(config, tiny_prepared, tmp_path / "run", progress=False).setup(resume=True)
    message = str(err.value)
    assert f"no usable checkpoint in {root}" in message
    for name, bad in (("stage-1", "rng.safetensors"), ("step-0000001", "model/logllm_config.json is missing"),
                      ("step-0000003", "trainer_state.json")):
        assert f"{name}: {bad}" in message, message
    assert "new --out folder" in message


def test_checksums_list_every_file_and_catch_changes(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=0)
    root = _interrupted(config, tiny_prepared, tmp_path / "run", 2)
    ckpt = root / "stage-1"
    listed = json.loads((ckpt / CHECKSUMS).read_text())["files"]
    on_disk = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()} - {CHECKSUMS}
    assert set(listed) == on_disk and "model/projector.safetensors" in listed
    assert all(len(v["sha256"]) == 64 and v["bytes"] >= 0 for v in listed.values())
    assert checkpoint_problem(ckpt) is None
    # same size, one byte changed: only the sha256 tells
    path = ckpt / "model" / "projector.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "model/projector.safetensors does not match its sha256" in checkpoint_problem(ckpt)


def test_checkpoint_without_checksums_still_loads(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    """Checkpoints written before checksums.json existed: a structure check, then they resume as before."""
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=1)
    full = train_run(config, tiny_prepared, tmp_path / "full", progress=False)
    run = tmp_path / "run"
    root = _interrupted(config, tiny_prepared, run, 3)
    for folder in root.iterdir():
        (folder / CHECKSUMS).unlink()
    assert latest_checkpoint(run) == root / "step-0000003"
    _truncate(root / "step-0000003" / "optimizer.safetensors")  # the structure check sees a truncated file
    assert "optimizer.safetensors" in checkpoint_problem(root / "step-0000003", ["optimizer.safetensors"])
    assert latest_checkpoint(run) == root / "stage-1"
    resumed = Trainer(config, tiny_prepared, run, progress=False)
    resumed.setup(resume=True)
    assert resumed.state.global_step == 2
    assert resumed.train() is True
    resumed.finish()
    expected, got = weights(full.model), weights(resumed.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_a_checkpoint_that_does_not_load_falls_back(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path,
                                                     caplog):
    """A damage no check sees (an old checkpoint, without checksums): the load fails and the previous one is used."""
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=1)
    run = tmp_path / "run"
    root = _interrupted(config, tiny_prepared, run, 3)
    newest = root / "step-0000003"
    (newest / CHECKSUMS).unlink()
    (newest / "optimizer.json").write_text('{"unexpected": 1}\n')  # valid JSON, not an optimizer state
    assert latest_checkpoint(run) == newest
    with caplog.at_level(logging.WARNING, logger="logllm.training"):
        resumed = Trainer(config, tiny_prepared, run, progress=False)
        resumed.setup(resume=True)
    assert resumed.state.global_step == 2
    assert any("step-0000003 does not load" in r.getMessage() for r in caplog.records)


def test_safetensors_structure_check(tmp_path: Path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(10), "b": torch.ones(3, 2)}, str(path))
    assert safetensors_problem(path) is None
    full = path.read_bytes()
    path.write_bytes(full[:-1])
    assert "truncated" in safetensors_problem(path)
    path.write_bytes(full[:5])
    assert "truncated" in safetensors_problem(path)
    path.write_bytes(full + b"\0")
    assert "extra bytes" in safetensors_problem(path)


def test_unfinished_save_folders_are_ignored(tiny_prepared: Path, tiny_encoder: Path, tmp_path: Path):
    """A `.tmp-NAME` folder (a save killed before its rename) is never resumed from, however complete it looks."""
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=1)
    root = _interrupted(config, tiny_prepared, tmp_path / "run", 3)
    state = json.loads((root / "step-0000003" / "trainer_state.json").read_text())
    state["state"]["global_step"] = 99
    (root / ".tmp-step-0000099").mkdir()
    (root / ".tmp-step-0000099" / "trainer_state.json").write_text(json.dumps(state))
    assert latest_checkpoint(tmp_path / "run") == root / "step-0000003"


def _adamw_after_steps(steps: int) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.StepLR]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    optimizer = torch.optim.AdamW(params, lr=0.01, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)
    for _ in range(steps):
        optimizer.zero_grad()
        (params[0].sum() ** 2 + params[1].prod()).backward()
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def _same(a: Any, b: Any) -> bool:
    """Equal nested state dicts, tensors compared with torch.equal (and types kept: a tuple stays a tuple)."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_optimizer_scheduler_and_rng_round_trip_without_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    optimizer, scheduler = _adamw_after_steps(3)
    save_optimizer(optimizer, tmp_path)
    save_scheduler(scheduler, tmp_path)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    save_rng(tmp_path)
    drawn = (random.random(), np.random.rand(), torch.rand(3))
    meta = json.loads((tmp_path / "optimizer.json").read_text())  # readable: the param groups, by name
    assert meta["param_groups"][0]["lr"] == optimizer.param_groups[0]["lr"]
    assert {"0.exp_avg", "0.exp_avg_sq", "0.step", "1.exp_avg"} <= set(
        load_file(str(tmp_path / "optimizer.safetensors")))

    _no_pickle(monkeypatch)
    fresh, fresh_scheduler = _adamw_after_steps(0)
    load_optimizer(fresh, tmp_path)
    load_scheduler(fresh_scheduler, tmp_path)
    assert _same(optimizer.state_dict(), fresh.state_dict())
    assert _same(scheduler.state_dict(), fresh_scheduler.state_dict())
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    load_rng(tmp_path)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert drawn[:2] == again[:2] and torch.equal(drawn[2], again[2])


# -- checkpoints of the earlier layout: one tree per state, dicts/tuples/tensors marked in the JSON --

def _legacy_flatten(state: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """The encoding logllm used before STATE_FORMAT (the writer, kept here to make such checkpoints)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> Any:
        if torch.is_tensor(value):
            tensors[key] = value.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(value, dict):
            return {"__dict__": [[walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")]
                                 for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    return tensors, walk(state, "s")


def _write_legacy(state: Any, folder: Path, name: str) -> None:
    tensors, meta = _legacy_flatten(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(meta) + "\n")


def _legacy_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
            "torch": torch.get_rng_state()}


def test_states_of_the_earlier_layout_still_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    optimizer, scheduler = _adamw_after_steps(3)
    _write_legacy(optimizer.state_dict(), tmp_path, "optimizer")
    _write_legacy(scheduler.state_dict(), tmp_path, "scheduler")
    torch.manual_seed(5)
    _write_legacy(_legacy_rng(), tmp_path, "rng")
    drawn = torch.rand(3)
    _no_pickle(monkeypatch)
    fresh, fresh_scheduler = _adamw_after_steps(0)
    load_optimizer(fresh, tmp_path)
    load_scheduler(fresh_scheduler, tmp_path)
    load_rng(tmp_path)
    assert _same(optimizer.state_dict(), fresh.state_dict())
    assert _same(scheduler.state_dict(), fresh_scheduler.state_dict())
    assert torch.equal(torch.rand(3), drawn)


def test_a_run_checkpointed_in_the_earlier_layout_resumes_exactly(tiny_prepared: Path, tiny_encoder: Path,
                                                                  tmp_path: Path):
    """A run interrupted before this layout (and before the optimizer/scheduler options) ends as an uninterrupted one."""
    config = tiny_config(tiny_encoder, stages=STAGES, checkpoint_every=1)
    full = train_run(config, tiny_prepared, tmp_path / "full", progress=False)
    run = tmp_path / "run"
    interrupted = Trainer(config, tiny_prepared, run, progress=False)
    interrupted.setup()
    assert interrupted.train(max_steps=3) is False  # within stage 2a: optimizer and scheduler are saved
    ckpt = latest_checkpoint(run)
    assert ckpt.name == "step-0000003"
    _write_legacy(interrupted.optimizer.state_dict(), ckpt, "optimizer")
    _write_legacy(interrupted.scheduler.state_dict(), ckpt, "scheduler")
    load_rng(ckpt)
    _write_legacy(_legacy_rng(), ckpt, "rng")
    saved = json.loads((ckpt / "trainer_state.json").read_text())
    del saved["config"]["optimizer"], saved["config"]["scheduler"]
    (ckpt / "trainer_state.json").write_text(json.dumps(saved, indent=2) + "\n")
    write_checksums(ckpt)
    resumed = Trainer(config, tiny_prepared, run, progress=False)
    resumed.setup(resume=True)
    assert resumed.state.global_step == 3
    assert resumed.train() is True
    resumed.finish()
    expected, got = weights(full.model), weights(resumed.model)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
