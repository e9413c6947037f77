"""Checkpoint folders: what they hold, how the training state is written and read back, and their checks.

A checkpoint folder (``RUN/checkpoints/stage-NAME`` or ``step-NNNNNNN``) holds:

- ``model/``: the model's ``save_pretrained`` folder;
- ``trainer_state.json``: the sampler position and early-stopping state (``TrainState``), the config
  and the library versions;
- ``optimizer`` and ``scheduler`` (``.safetensors`` + ``.json``), only within a stage: torch's own
  ``state_dict()``, its tensors in the safetensors file and everything else in the JSON file;
- ``rng`` (``.safetensors`` + ``.json``): the python, numpy, torch (and CUDA) RNG states; with several
  training processes ``rng-1``, ``rng-2``, ... hold those of the other processes;
- ``best_weights.safetensors``, with early stopping: the trained parameters at the best validation loss;
- ``checksums.json``, written last.

Nothing is pickled: tensors are read with ``safetensors`` and the rest with ``json``, so loading a
checkpoint runs no code from it (what ``torch.load(weights_only=True)`` aims at). Checkpoints of the
earlier layout (one generic tree per state, with ``__dict__``/``__tuple__``/``__tensor__`` markers in
the JSON file) are still read.

A checkpoint folder is written to a temporary folder and renamed into place, so a killed process
never leaves half of one under its final name. A disk that fills up, a copy that stops early or a
file edited by hand can still damage one; ``checksums.json`` (the size and sha256 of every other
file, written after them) lets a reader tell. ``checkpoint_problem`` returns what is wrong with a
folder, or None:

- with ``checksums.json``: every listed file must exist with its size and sha256;
- without it (checkpoints written by older versions): a structure check only; the required files
  exist, every ``.json`` parses and every ``.safetensors`` file's header agrees with its size (a
  truncated file fails; a file with flipped bytes inside its tensors does not).

``latest_checkpoint`` picks the newest checkpoint of a run that passes these checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from logllm.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
"""The run folder's subfolder holding the checkpoint folders."""
STATE_FILE = "trainer_state.json"
BEST_FILE = "best_weights.safetensors"
"""In a checkpoint, with early stopping: the best validation weights so far (the parameters the last stage trains)."""
CHECKSUMS = "checksums.json"
STATE_FORMAT = {"format": "logllm-train-state", "version": 2}
"""Written at the top of optimizer.json, scheduler.json and rng.json."""
_CHUNK = 1 << 20


@dataclass
class TrainState:
    """Where training is: enough, with the seed, to rebuild the sampler exactly."""

    stage_index: int = 0
    """Index into ``config.stages`` of the stage in progress (or the next one after a stage end)."""
    epoch: int = 0
    group: int = 0
    """The next optimiser step within the epoch (a group of ``grad_accum`` micro-batches)."""
    global_step: int = 0
    stage_step: int = 0
    elapsed: float = 0.0
    """Training seconds so far, summed over interrupted sessions."""
    best_val_loss: float | None = None
    best_step: int | None = None
    """The step of the best validation loss; its trained parameters are kept to be restored at the end."""
    bad_checks: int = 0
    stopped_early: bool = False


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(folder: Path) -> Path:
    """Write ``folder/checksums.json``: size and sha256 of every file below ``folder`` (call it last)."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _files(folder)}
    path = folder / CHECKSUMS
    path.write_text(json.dumps({"format": "logllm-checksums", "version": 1, "files": files}, indent=1) + "\n")
    return path


def _read_json(path: Path) -> tuple[object, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path.name} is not readable JSON ({err})"


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's structure (header, size), or None. Reads the header only."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header (truncated)"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"header says {n} header bytes but the file has {size} (truncated)"
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"unreadable safetensors header ({err})"
    if not isinstance(header, dict):
        return "unreadable safetensors header (not a JSON object)"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{size} bytes where its header needs {expected} ({'truncated' if size < expected else 'extra bytes'})"
    return None


def _checksum_problem(folder: Path, listed: object) -> str | None:
    if not isinstance(listed, dict) or not isinstance(listed.get("files"), dict):
        return f"{CHECKSUMS} has no 'files' table"
    for name, want in sorted(listed["files"].items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size} bytes, {want.get('bytes')} were written (truncated or changed)"
        if sha256_file(path) != want.get("sha256"):
            return f"{name} does not match its sha256 in {CHECKSUMS} (changed or corrupted)"
    return None


def _structure_problem(folder: Path, required: Iterable[str]) -> str | None:
    for name in required:
        if not (folder / name).is_file():
            return f"{name} is missing"
    for path in _files(folder):
        name = path.relative_to(folder).as_posix()
        if path.suffix == ".json":
            _, problem = _read_json(path)
            if problem:
                return problem.replace(path.name, name, 1)
        elif path.suffix == ".safetensors":
            problem = safetensors_problem(path)
            if problem:
                return f"{name}: {problem}"
    return None


def checkpoint_problem(folder: Path, required: Iterable[str] = ()) -> str | None:
    """What makes a checkpoint folder unusable (naming the file), or None when it passes its checks.

    Uses ``checksums.json`` when the folder has one (plus the ``required`` files), and a structure
    check of the ``required`` files, the JSON files and the safetensors headers otherwise.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    required = list(required)
    if not (folder / CHECKSUMS).is_file():
        return _structure_problem(folder, required)
    listed, problem = _read_json(folder / CHECKSUMS)
    if problem:
        return problem
    problem = _checksum_problem(folder, listed)
    if problem:
        return problem
    for name in required:
        if not (folder / name).is_file():
            return f"{name} is missing"
    return None


# -- training state: optimizer, scheduler and RNG as safetensors + JSON --------------------------

def _write_state(folder: Path, name: str, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    """``NAME.safetensors`` with ``tensors`` (moved to the CPU) and ``NAME.json`` with ``rest``."""
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps({**STATE_FORMAT, **rest}) + "\n")


def _read_state(folder: Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the JSON of a state written by ``_write_state``; an earlier layout comes back as
    ``{"legacy": the decoded state}``."""
    tensors = load_file(str(folder / f"{name}.safetensors"))
    rest = json.loads((folder / f"{name}.json").read_text())
    if isinstance(rest, dict) and "__dict__" in rest:
        return {}, {"legacy": _legacy_decode(rest, tensors)}
    if not isinstance(rest, dict) or rest.get("format") != STATE_FORMAT["format"]:
        raise ValueError(f"{folder / name}.json is not a logllm training state")
    if rest.get("version") != STATE_FORMAT["version"]:
        raise ValueError(f"{folder / name}.json has version {rest.get('version')!r}; this logllm reads version "
                         f"{STATE_FORMAT['version']} (train with the logllm version that wrote it)")
    return tensors, rest


def _legacy_decode(meta: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A state written by logllm before STATE_FORMAT: a JSON tree whose dicts, tuples and tensors are marked."""
    if isinstance(meta, dict):
        if "__tensor__" in meta:
            return tensors[meta["__tensor__"]]
        if "__dict__" in meta:
            return {_legacy_decode(k, tensors): _legacy_decode(v, tensors) for k, v in meta["__dict__"]}
        if "__tuple__" in meta:
            return tuple(_legacy_decode(v, tensors) for v in meta["__tuple__"])
    if isinstance(meta, list):
        return [_legacy_decode(v, tensors) for v in meta]
    return meta


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Write ``optimizer.state_dict()``: its per-parameter tensors to ``optimizer.safetensors`` (named
    ``PARAM.KEY``, e.g. ``0.exp_avg``), the other per-parameter values and the param groups to ``optimizer.json``."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param, entry in state_dict["state"].items():
        plain[str(param)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{param}.{key}"] = value
            else:
                plain[str(param)][key] = value
    _write_state(folder, "optimizer", tensors, {"state": plain, "param_groups": state_dict["param_groups"]})


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Load what ``save_optimizer`` wrote into ``optimizer`` (built for the same parameters)."""
    tensors, saved = _read_state(folder, "optimizer")
    if "legacy" in saved:
        optimizer.load_state_dict(saved["legacy"])
        return
    state: dict[int, dict[str, Any]] = {int(param): dict(values) for param, values in saved["state"].items()}
    for name, value in tensors.items():
        param, key = name.split(".", 1)
        state[int(param)][key] = value
    # JSON has no tuples: give back the tuple values (AdamW's betas) where the optimizer has them.
    groups = [{k: tuple(v) if isinstance(live.get(k), tuple) and isinstance(v, list) else v for k, v in group.items()}
              for group, live in zip(saved["param_groups"], optimizer.param_groups, strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, folder: Path) -> None:
    """Write ``scheduler.state_dict()``: tensor values to ``scheduler.safetensors``, the rest to ``scheduler.json``."""
    state_dict = scheduler.state_dict()
    tensors = {k: v for k, v in state_dict.items() if torch.is_tensor(v)}
    _write_state(folder, "scheduler", tensors, {"state": {k: v for k, v in state_dict.items() if k not in tensors}})


def load_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, folder: Path) -> None:
    """Load what ``save_scheduler`` wrote into ``scheduler``."""
    tensors, saved = _read_state(folder, "scheduler")
    scheduler.load_state_dict(saved["legacy"] if "legacy" in saved else {**saved["state"], **tensors})


RngState = tuple[dict[str, torch.Tensor], dict[str, Any]]
"""A process's RNG states as (tensors, JSON-able rest), from ``rng_state``."""


def rng_file(rank: int) -> str:
    """The name (without suffix) of process ``rank``'s RNG state in a checkpoint: ``rng``, ``rng-1``, ..."""
    return "rng" if rank == 0 else f"rng-{rank}"


def rng_state() -> RngState:
    """This process's python, numpy, torch and (with CUDA) CUDA RNG states."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state(), "numpy.keys": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return tensors, {"python": [version, list(internal), gauss],
                     "numpy": [kind, int(pos), int(has_gauss), float(cached)]}


def save_rng(folder: Path, states: list[RngState] | None = None) -> None:
    """Write RNG states: ``rng.safetensors`` + ``rng.json`` for this process, or with ``states`` (one per
    training process, in rank order) process ``r``'s as ``rng_file(r)``."""
    for rank, (tensors, rest) in enumerate(states if states is not None else [rng_state()]):
        _write_state(folder, rng_file(rank), tensors, rest)


def load_rng(folder: Path, rank: int = 0) -> None:
    """Set the RNG states ``save_rng`` wrote for process ``rank`` (CUDA ones only where CUDA is available)."""
    tensors, saved = _read_state(folder, rng_file(rank))
    if "legacy" in saved:  # {"python": (...), "numpy": (kind, keys, pos, has_gauss, cached), "torch", "cuda"}
        old = saved["legacy"]
        kind, keys, pos, has_gauss, cached = old["numpy"]
        tensors = {"torch": old["torch"], "numpy.keys": keys,
                   **{f"cuda.{i}": s for i, s in enumerate(old.get("cuda", []))}}
        saved = {"python": list(old["python"]), "numpy": [kind, pos, has_gauss, cached]}
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# -- finding the checkpoint to resume from ------------------------------------------------------

def required_files(folder: Path) -> list[str]:
    """The files a checkpoint folder cannot resume without (optimizer and scheduler go together)."""
    names = [STATE_FILE, "rng.json", "rng.safetensors"]
    if any((folder / f"{n}{ext}").exists() for n in ("optimizer", "scheduler") for ext in (".json", ".safetensors")):
        names += [f"{n}{ext}" for n in ("optimizer", "scheduler") for ext in (".json", ".safetensors")]
    return names


def _checkpoint_order(folder: Path) -> tuple[int, int] | None:
    """(global step, stage index) from a checkpoint's state file; None when it cannot be read."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())["state"]
        return int(state["global_step"]), int(state["stage_index"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None


def checkpoint_folders(run_dir: str | Path) -> tuple[list[Path], dict[Path, str]]:
    """The run's checkpoint folders newest first (highest step, then latest stage), and those whose
    state file cannot be read (so cannot be placed), each with what is wrong with it."""
    root = Path(run_dir) / CHECKPOINTS
    ranked, unreadable = [], {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):  # .tmp-NAME: a save that did not finish
            continue
        order = _checkpoint_order(folder)
        if order is None:
            unreadable[folder] = (checkpoint_problem(folder, required_files(folder))
                                  or f"{STATE_FILE} has no readable global_step and stage_index")
        else:
            ranked.append((order, folder))
    return [folder for _, folder in sorted(ranked, reverse=True)], unreadable


def latest_checkpoint(run_dir: str | Path, *, exclude: dict[Path, str] | None = None) -> Path | None:
    """The newest usable checkpoint folder of a run (highest step, then latest stage), or None if it has none.

    Folders are checked newest first (``checksums.json``, or a structure check for checkpoints written
    without one); a damaged one is logged as a warning naming the bad file, and the one before it is
    tried. ``exclude`` maps folders already found unusable to why. Raises ConfigError, naming the
    folder, when there are checkpoints but none is usable.
    """
    ordered, damaged = checkpoint_folders(run_dir)
    for folder, problem in damaged.items():
        log.warning("checkpoint %s is damaged: %s; skipped", folder, problem)
    damaged.update(exclude or {})
    for folder in ordered:
        if folder in damaged:
            continue
        problem = checkpoint_problem(folder, required_files(folder))
        if problem is None:
            if damaged:
                log.warning("using checkpoint %s, the newest one that passes its checks", folder)
            return folder
        damaged[folder] = problem
        log.warning("checkpoint %s is damaged: %s; falling back to the previous checkpoint", folder, problem)
    if damaged:
        root = Path(run_dir) / CHECKPOINTS
        raise ConfigError(f"no usable checkpoint in {root}: "
                          + "; ".join(f"{p.name}: {why}" for p, why in sorted(damaged.items()))
                          + f". Restore the damaged files, or train from the start into a new --out folder "
                          f"(or after removing {root})")
    return None


# -- writing a checkpoint folder ------------------------------------------------------------------

def write_checkpoint(folder: Path, model: Any, trainer_state: dict[str, Any], *,
                     optimizer: torch.optim.Optimizer | None = None,
                     scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                     best: dict[str, torch.Tensor] | None = None,
                     rng_states: list[RngState] | None = None) -> Path:
    """Write a checkpoint folder atomically: into ``.tmp-NAME`` beside it, ``checksums.json`` last, then
    renamed to ``folder`` (replacing one of that name). The optimizer and scheduler go in only when given
    (within a stage); the RNG states always: this process's, or ``rng_states`` (every training process's,
    in rank order)."""
    tmp = folder.parent / f".tmp-{folder.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    if optimizer is not None and scheduler is not None:
        save_optimizer(optimizer, tmp)
        save_scheduler(scheduler, tmp)
    save_rng(tmp, rng_states)
    if best is not None:
        save_file(best, str(tmp / BEST_FILE))
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
    write_checksums(tmp)  # last: a folder whose files all match it is complete
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def prune_step_checkpoints(run_dir: str | Path, keep: int | None) -> None:
    """Remove all but the newest ``keep`` every-N-steps checkpoints (``step-*``) of a run; None keeps all."""
    if keep is None:
        return
    steps = sorted((Path(run_dir) / CHECKPOINTS).glob("step-*"))
    for old in steps[: max(0, len(steps) - keep)]:
        shutil.rmtree(old)
