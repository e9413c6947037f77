"""Checkpoint integrity: checksums.json, and `--resume` falling back from a damaged newest checkpoint."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from logllm.errors import ConfigError
from logllm.training.checkpoint import CHECKSUMS, checkpoint_problem, safetensors_problem
from logllm.training.trainer import Trainer, latest_checkpoint, train_run

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
    with caplog.at_level(logging.WARNING, logger="logllm.training.trainer"):
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
    with caplog.at_level(logging.WARNING, logger="logllm.training.trainer"):
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
