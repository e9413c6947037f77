"""Fixtures for the experiment tests: prepared folders per seed (from the tiny synthetic folder) and a
tiny LogLLM config."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def seed_folders(tiny_prepared: Path, tmp_path: Path) -> str:
    """``prep_s0`` and ``prep_s1``: the tiny folder copied through `mutate_prepared` at ratio 0 (which
    records the split sizes a run's data check compares); returns the ``{seed}`` pattern."""
    from logllm.data.mutate import MutateOptions, mutate_prepared

    for seed in (0, 1):
        mutate_prepared(tiny_prepared, tmp_path / f"prep_s{seed}", MutateOptions(ratio=0.0))
    return str(tmp_path / "prep_s{seed}")


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory, write_tiny_config) -> Path:
    return write_tiny_config(tmp_path_factory.mktemp("tiny_experiment"))
