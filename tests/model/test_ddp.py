"""Data-parallel training: 2 CPU processes (gloo) train like 1 at the same global batch, resume, and fail cleanly.

The runs are shared by the tests of this module: one process in-process, two processes through
``accelerate launch --multi_gpu`` (torchrun underneath) and two started here with the launcher's
environment variables, so that a process can be killed without a launcher stepping in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from logllm.config import apply_overrides, preset
from logllm.errors import ConfigError
from logllm.training import distributed
from logllm.training.trainer import Trainer, train_run

pytestmark = pytest.mark.multiprocess

PROCESS_TIMEOUT = 150  # seconds a launched run may take before the test fails (a hang)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **extra}


def train_args(data: Path, run: Path, config: Path | None, *more: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(run), *(["--config", str(config)] if config else []),
            "--no-progress", *more]


def start_processes(n: int, args: list[str], log_dir: Path) -> list[subprocess.Popen]:
    """``n`` processes of ``python -m logllm ARGS`` with the environment torchrun gives its workers."""
    port = str(_free_port())
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for rank in range(n):
        env = _env(RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(n),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        out = open(log_dir / f"rank{rank}.log", "w")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", "logllm", *args], env=env, stdout=out,
                                      stderr=subprocess.STDOUT))
    return procs


def wait_all(procs: list[subprocess.Popen], log_dir: Path, timeout: float = PROCESS_TIMEOUT) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"training processes still running after {timeout} s: {logs(log_dir)}")
    return codes


def logs(log_dir: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob("rank*.log")))


def step_losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "train_log.jsonl").read_text().splitlines()) if "loss" in r]


def model_tensors(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted((run / "model").rglob("*.safetensors")):
        out.update({f"{f.relative_to(run)}:{k}": v for k, v in load_file(str(f)).items()})
    return out


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-5) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name].float(), b[name].float(), rtol=rtol, atol=1e-7, msg=name)


def sequences_table(rows: list[tuple[str, int, list[int]]]):
    """A split table from (sequence_id, label, message_ids), lines numbered in order (as tests/conftest.py)."""
    import polars as pl

    starts = np.cumsum([0] + [len(ids) for _, _, ids in rows])
    return pl.DataFrame({"sequence_id": [r[0] for r in rows], "label": [r[1] for r in rows],
                         "message_ids": [r[2] for r in rows], "file_index": [[0] * len(r[2]) for r in rows],
                         "line_numbers": [list(range(int(s) + 1, int(s) + 1 + len(r[2])))
                                          for s, r in zip(starts, rows)]})


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A prepared folder, a tiny encoder, a config file, and the same run trained by 1 process (in this
    one) and by 2 processes started by ``accelerate launch``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from logllm.data.dataset import write_prepared
    from logllm.model.hub import minilm_path

    root = tmp_path_factory.mktemp("ddp")
    encoder = root / "encoder"
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    tokenizer.save_pretrained(encoder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(encoder)  # dropout 0.1: seeded per micro-batch
    rng = np.random.default_rng(0)
    messages = ["open file <*>", "read <*> bytes", "close file <*>", "disk failure on <*>", "retry <*>"]
    splits = {}
    for name, n in (("train", 64), ("val", 40), ("test", 8)):
        rows = []
        for i in range(n):
            ids = [int(x) for x in rng.choice([0, 1, 2, 4], size=int(rng.integers(3, 9)))]
            if i % 4 == 0:
                ids.insert(int(rng.integers(0, len(ids))), 3)
            rows.append((f"{name}-{i}", int(i % 4 == 0), ids))
        splits[name] = sequences_table(rows)
    data = write_prepared(root / "prepared", messages, splits,
                          {"family": "synthetic", "seed": 0, "inputs": [{"path": "s.log", "bytes": 0, "sha256": ""}]})
    # 4 stages x 2 epochs x 3 steps of 4 x 2 samples, the last step of an epoch 1 micro-batch (process 1
    # has none: it adds zero gradients); validation every 2 steps of the last stage (with batches of 16, so
    # the 2 processes share 3 batches unevenly) and early stopping.
    config = apply_overrides(preset("small"), {
        "model": {"encoder": str(encoder), "decoder": "tiny-llama", "decoder_layers": 1, "decoder_width": 16,
                  "decoder_heads": 2, "device": "cpu", "decoder_lora": None},
        "micro_batch": 4, "grad_accum": 2, "checkpoint_every": 2, "keep_step_checkpoints": None,
        "early_stopping_patience": 3, "eval_every": 2, "score_batch_size": 16, "autocast": "none",
        "stages": [{"name": n, "max_samples": 20, "epochs": 2} for n in ("1", "2a", "2b", "3")],
    }).validate()
    config_file = config.save(root / "config.json")

    one = root / "one"
    torch.set_num_threads(1)
    train_run(config, data, one, progress=False)

    two = root / "two"
    port = str(_free_port())
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", port,
         "-m", "logllm", *train_args(data, two, config_file)],
        env=_env(), capture_output=True, text=True, timeout=PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"data": data, "config": config_file, "one": one, "two": two, "root": root}


def test_two_processes_take_the_steps_of_one(case: dict[str, Path]):
    one, two = case["one"], case["two"]
    a, b = step_losses(one), step_losses(two)
    assert len(a) == len(b) == 24  # every step logged once, by the main process only
    np.testing.assert_allclose(b, a, rtol=1e-5)
    assert_close(model_tensors(one), model_tensors(two))
    records = [json.loads(line) for line in (two / "train_log.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["processes"] == 2
    vals = [r["val_loss"] for r in records if r.get("event") == "validation"]
    ref = [r["val_loss"] for r in map(json.loads, (one / "train_log.jsonl").read_text().splitlines())
           if r.get("event") == "validation"]
    assert len(vals) == len(ref) >= 3 and vals == pytest.approx(ref, rel=1e-5)  # gathered, not per shard
    ckpt = two / "checkpoints" / "step-0000002"
    assert json.loads((ckpt / "trainer_state.json").read_text())["processes"] == 2
    # every process's RNG state, written by the main process; a one-process run has only its own
    assert {p.name for p in ckpt.glob("rng*")} == {"rng.json", "rng.safetensors", "rng-1.json", "rng-1.safetensors"}
    assert not list((one / "checkpoints" / "step-0000002").glob("rng-1*"))


def test_same_seed_and_processes_give_a_byte_identical_threshold_file(case: dict[str, Path], tmp_path: Path):
    run = tmp_path / "again"
    procs = start_processes(2, train_args(case["data"], run, case["config"]), tmp_path / "logs")
    assert wait_all(procs, tmp_path / "logs") == [0, 0], logs(tmp_path / "logs")
    assert (run / "threshold.json").read_bytes() == (case["two"] / "threshold.json").read_bytes()
    assert json.loads((run / "threshold.json").read_text())["source"] == "val"
    assert step_losses(run) == step_losses(case["two"])


def test_resume_with_another_number_of_processes_is_refused(case: dict[str, Path], tmp_path: Path):
    run = tmp_path / "two"
    shutil.copytree(case["two"], run)
    config = json.loads((run / "config.json").read_text())
    from logllm.config import TrainConfig

    with pytest.raises(ConfigError, match=r"run of 2 training process\(es\) and this launch has 1") as err:
        train_run(TrainConfig.from_dict(config), case["data"], run, resume=True, progress=False)
    assert "--num_processes 2" in str(err.value) and "--resume" in str(err.value)


def test_killed_process_stops_the_other_and_resume_finishes(case: dict[str, Path], tmp_path: Path):
    run, log_dir = tmp_path / "killed", tmp_path / "logs"
    procs = start_processes(2, train_args(case["data"], run, case["config"], "--dist-timeout", "60"), log_dir)
    deadline = time.monotonic() + PROCESS_TIMEOUT
    while not (run / "checkpoints" / "step-0000004").is_dir():  # mid-run: past two checkpoints
        assert procs[0].poll() is None, logs(log_dir)
        assert time.monotonic() < deadline, logs(log_dir)
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    code = procs[0].wait(timeout=90)
    assert time.monotonic() - killed_at < 60  # well within the timeout: the closed connection is seen at once
    assert code == 2, logs(log_dir)
    text = (log_dir / "rank0.log").read_text()
    assert "training process 0 of 2" in text and "--resume" in text and "Traceback" not in text, text
    assert not (run / "threshold.json").exists()
    assert len(step_losses(run)) < 24

    log_dir = tmp_path / "resume_logs"
    procs = start_processes(2, train_args(case["data"], run, None, "--resume"), log_dir)
    assert wait_all(procs, log_dir) == [0, 0], logs(log_dir)
    assert step_losses(run) == pytest.approx(step_losses(case["two"]), rel=1e-6)
    assert_close(model_tensors(run), model_tensors(case["two"]), rtol=1e-6)


def test_hung_process_is_given_up_on_after_the_timeout(case: dict[str, Path], tmp_path: Path):
    run, log_dir = tmp_path / "hung", tmp_path / "logs"
    procs = start_processes(2, train_args(case["data"], run, case["config"], "--dist-timeout", "20"), log_dir)
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not (run / "checkpoints" / "step-0000002").is_dir():
            assert procs[0].poll() is None, logs(log_dir)
            assert time.monotonic() < deadline, logs(log_dir)
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGSTOP)  # alive, connections open, never answers
        stopped_at = time.monotonic()
        code = procs[0].wait(timeout=90)
        waited = time.monotonic() - stopped_at
    finally:
        for p in procs:
            p.kill()
    assert code == 2 and 15 < waited < 80, (code, waited, logs(log_dir))
    text = (log_dir / "rank0.log").read_text()
    assert "training process 0 of 2" in text and "20 s timeout" in text and "Traceback" not in text, text


def test_accelerate_cpu_launch_of_one_process_is_refused(monkeypatch: pytest.MonkeyPatch):
    # `accelerate launch --cpu --num_processes 2` without MPI: one process, MASTER_ADDR set, no WORLD_SIZE
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ConfigError, match="--multi_gpu --num_processes N"):
        distributed.launched_world_size()
    monkeypatch.delenv("MASTER_ADDR")
    assert distributed.launched_world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "x")
    with pytest.raises(ConfigError, match="WORLD_SIZE='x'"):
        distributed.launched_world_size()


def test_micro_batches_are_dealt_out_in_turn_and_seeded_by_place():
    ctx = distributed.DistContext(rank=1, world_size=3)
    assert ctx.mine(7) == [1, 4] and distributed.SINGLE.mine(3) == [0, 1, 2]
    seeds = {distributed.micro_batch_seed(0, s, e, g, k) for s in range(2) for e in range(2) for g in range(3)
             for k in range(2)}
    assert len(seeds) == 24
    assert distributed.micro_batch_seed(5, 1, 0, 2, 1) == distributed.micro_batch_seed(5, 1, 0, 2, 1)


def test_a_step_must_be_dealt_out_evenly_and_sharding_launchers_are_refused(monkeypatch: pytest.MonkeyPatch):
    distributed.check_grad_accum(4, 4, 2)
    distributed.check_grad_accum(16, 1, 1)
    with pytest.raises(ConfigError, match="micro_batch = 8, grad_accum = 2 keeps the global batch 16"):
        distributed.check_grad_accum(16, 1, 2)  # the small preset on 2 processes
    with pytest.raises(ConfigError, match="micro_batch = 2, grad_accum = 8"):
        distributed.check_grad_accum(4, 4, 8)  # the paper preset on 8 GPUs
    with pytest.raises(ConfigError, match="cannot be shared by 3 processes"):
        distributed.check_grad_accum(4, 4, 3)
    with pytest.raises(ConfigError, match="grad_accum = 1 with 2 training processes"):
        Trainer(preset("small"), "data", "run", dist=distributed.DistContext(rank=1, world_size=2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="FSDP.*does not shard it"):
        distributed.start(cpu=True)
