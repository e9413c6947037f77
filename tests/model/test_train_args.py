"""`logllm train` refuses bad flags with one clear line and exit code 2, before loading any data."""

from __future__ import annotations

from pathlib import Path

import pytest

from logllm.cli import main


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    import logllm.training.trainer as trainer

    def refuse(*args, **kwargs):
        raise AssertionError("train_run was called: the flags should have been refused before")

    monkeypatch.setattr(trainer, "train_run", refuse)


@pytest.mark.parametrize(("flags", "words"), [
    (["--seed", "-1"], "--seed -1: must be an integer from 0"),
    (["--seed", str(2**64)], f"--seed {2**64}: must be an integer from 0"),
    (["--checkpoint-every", "-3"], "--checkpoint-every -3: must be >= 0"),
    (["--threads", "0"], "--threads 0: must be at least 1"),
])
def test_bad_flags_are_one_line_and_exit_2(tiny_prepared: Path, tmp_path: Path, no_training, capsys,
                                           flags: list[str], words: str):
    code = main(["train", "--data", str(tiny_prepared), "--out", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_folders_are_refused(tiny_prepared: Path, tmp_path: Path, no_training, capsys):
    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")]) == 2
    assert f"--data {tmp_path / 'missing'}: does not exist" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["train", "--data", str(tiny_prepared), "--out", str(tmp_path / "file")]) == 2
    assert f"--out {tmp_path / 'file'}: is a file" in capsys.readouterr().err


def test_a_bad_seed_in_a_config_file_is_refused(tiny_prepared: Path, tmp_path: Path, no_training, capsys):
    config = tmp_path / "c.toml"
    config.write_text("seed = -5\n")
    assert main(["train", "--data", str(tiny_prepared), "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    assert f"seed = -5 in {config}" in capsys.readouterr().err
