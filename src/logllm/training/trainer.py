"""The training recipe: stages 1, 2a, 2b, 3 with checkpoints, exact resume and a validation threshold.

``Trainer(config, data_dir, run_dir)`` follows torchtune's recipe shape: ``setup()`` builds (or, with
``resume=True``, reloads) the model and the run folder, ``train()`` runs the stages, and
``save_checkpoint()`` writes a self-contained folder. What makes resume exact:

- the order of samples is a pure function of (seed, stage, epoch), so the sampler's position is just
  (stage, epoch, optimiser step within the epoch);
- checkpoints are taken only between optimiser steps and hold the model (``save_pretrained``), the
  AdamW and lr-scheduler state and the python / numpy / torch RNG states (dropout), all as
  safetensors and JSON, never pickle;
- the train log is cut back to the checkpoint's step when resuming, so no step is logged twice.

Learning-rate schedule, as the reference: a stage starts at its ``lr`` and multiplies it by
``lr_decay`` (0.7) after every ``ceil(steps / lr_decays)`` optimiser steps, i.e. about ten times per
stage, without warm-up.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from logllm.config import TrainConfig
from logllm.data.dataset import PreparedData
from logllm.data.manifest import RUN_DATA_MANIFEST, check_run_data
from logllm.errors import ConfigError, LogLLMError
from logllm.evaluate import DEFAULT_THRESHOLD, THRESHOLD_FILE, choose_threshold
from logllm.training.checkpoint import checkpoint_problem, write_checksums
from logllm.training.oversample import distinct_samples, oversample
from logllm.versions import library_versions

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAIN_LOG = "train_log.jsonl"
STATE_FILE = "trainer_state.json"
BEST_FILE = "best_weights.safetensors"
"""In a checkpoint, with early stopping: the best validation weights so far (the parameters the last stage trains)."""


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


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _flatten_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer/scheduler state dict into tensors (for safetensors) and JSON-able values."""
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
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(f"cannot checkpoint a value of type {type(value).__name__} at {key}")

    return tensors, walk(state, "s")


def _unflatten_state(meta: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(meta, dict):
        if "__tensor__" in meta:
            return tensors[meta["__tensor__"]]
        if "__dict__" in meta:
            return {_unflatten_state(k, tensors): _unflatten_state(v, tensors) for k, v in meta["__dict__"]}
        if "__tuple__" in meta:
            return tuple(_unflatten_state(v, tensors) for v in meta["__tuple__"])
    if isinstance(meta, list):
        return [_unflatten_state(v, tensors) for v in meta]
    return meta


def _save_state(state: dict[str, Any], folder: Path, name: str) -> None:
    tensors, meta = _flatten_state(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(meta) + "\n")


def _load_state(folder: Path, name: str) -> Any:
    tensors = load_file(str(folder / f"{name}.safetensors"))
    return _unflatten_state(json.loads((folder / f"{name}.json").read_text()), tensors)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    out: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (AVX512-BF16 or AMX, through oneDNN)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_autocast(choice: str | None, device: torch.device) -> torch.dtype | None:
    """The dtype training's forward passes autocast to (None: none), from ``TrainConfig.autocast``.

    "auto" means a CPU with native bfloat16 only. On CUDA it stays float32: there the decoder's attention
    kernel is picked when the model is built, from its dtype (eager attention in half precision, see
    ``logllm.model.build``), and the fused kernel gave NaN gradients at padded positions in bfloat16;
    ``dtype = "bfloat16"`` is the way to train in half precision on a GPU."""
    if choice == "bfloat16" or (choice == "auto" and device.type == "cpu" and cpu_has_native_bfloat16()):
        return torch.bfloat16
    return None


def _required_files(folder: Path) -> list[str]:
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


def _checkpoint_folders(run_dir: str | Path) -> tuple[list[Path], dict[Path, str]]:
    """The run's checkpoint folders newest first (highest step, then latest stage), and those whose
    state file cannot be read (so cannot be placed), each with what is wrong with it."""
    root = Path(run_dir) / CHECKPOINTS
    ranked, unreadable = [], {}
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir() or folder.name.startswith("."):  # .tmp-NAME: a save that did not finish
            continue
        order = _checkpoint_order(folder)
        if order is None:
            unreadable[folder] = (checkpoint_problem(folder, _required_files(folder))
                                  or f"{STATE_FILE} has no readable global_step and stage_index")
        else:
            ranked.append((order, folder))
    return [folder for _, folder in sorted(ranked, reverse=True)], unreadable


def latest_checkpoint(run_dir: str | Path, *, exclude: dict[Path, str] | None = None) -> Path | None:
    """The newest usable checkpoint folder of a run (highest step, then latest stage), or None if it has none.

    Folders are checked newest first (``checksums.json``, or a structure check for checkpoints written
    without one; see ``logllm.training.checkpoint``); a damaged one is logged as a warning naming the
    bad file, and the one before it is tried. ``exclude`` maps folders already found unusable to why.
    Raises ConfigError, naming the folder, when there are checkpoints but none is usable.
    """
    ordered, damaged = _checkpoint_folders(run_dir)
    for folder, problem in damaged.items():
        log.warning("checkpoint %s is damaged: %s; skipped", folder, problem)
    damaged.update(exclude or {})
    for folder in ordered:
        if folder in damaged:
            continue
        problem = checkpoint_problem(folder, _required_files(folder))
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


def make_adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where torch has one for these tensors (CPU and CUDA floats).

    The fused step is the same update rule as the per-tensor loop (equal up to float rounding, and
    deterministic); on the `small` preset's 45M trained parameters it takes about 0.04 s per step on
    2 CPU cores against 0.2-0.3 s for the loop. Falls back to torch's default elsewhere.
    """
    devices = {p.device.type for p in params}
    dtypes = {p.dtype for p in params}
    if len(devices) == 1 and devices <= {"cpu", "cuda"} and dtypes <= {torch.float32, torch.bfloat16, torch.float16}:
        try:
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError) as err:  # an older torch, or tensors it cannot fuse
            log.debug("fused AdamW unavailable (%s); using the per-tensor loop", err)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

class Trainer:
    """Train LogLLM on a prepared folder into a run folder (docs/architecture.md, contract 2).

    ``model_cls`` defaults to :class:`logllm.model.logllm.LogLLM`; anything with its ``build``,
    ``from_pretrained``, ``parts``, ``loss``, ``score``, ``freeze_encoder_cache``, ``clear_cache`` and
    ``save_pretrained`` works.
    """

    _best: dict[str, torch.Tensor] | None = None
    """With early stopping: a CPU copy of the trained parameters at the best validation loss so far."""

    def __init__(
        self,
        config: TrainConfig,
        data_dir: str | Path,
        run_dir: str | Path,
        *,
        model_cls: Any | None = None,
        progress: bool = True,
    ):
        from logllm.model.build import pin_decoder_source

        # A GGUF decoder is named by its file's sha256 and package version in the run's config.json.
        config = replace(config.validate(), model=pin_decoder_source(config.model))
        self.config = config
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        self.progress = progress
        if model_cls is None:
            from logllm.model.logllm import LogLLM as model_cls
        self.model_cls = model_cls
        self.model: Any = None
        self.state = TrainState()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self._session_start = 0.0
        self.autocast_dtype: torch.dtype | None = None
        self._device = torch.device("cpu")

    # -- setup ---------------------------------------------------------------------------------

    def setup(self, resume: bool = False, allow_other_data: bool = False) -> None:
        """Load the data, create the run folder and build the model (or reload the last checkpoint).

        A fresh run removes the outputs of an earlier run in the folder (eval/, model/, threshold.json,
        report.html); a resumed one must continue on the data it was trained on unless
        ``allow_other_data`` (then logged in train_log.jsonl, and data_manifest.json is kept).
        """
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if not self.progress:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # its per-checkpoint "Writing model shards" bars
        self.data = PreparedData(self.data_dir)
        self.texts = self.data.messages
        train = self.data.sequences("train")
        if len(train) == 0:
            raise ConfigError(f"{self.data_dir}/train.parquet has no sequences; nothing to train on")
        self.train_ids = [m.tolist() for m in train.message_ids]
        self.train_labels = train.labels.astype(np.int64)
        self.samples, self.oversampling = oversample(self.train_labels, cfg.beta, cfg.seed)
        if len(self.samples) == 0:
            raise ConfigError(f"{self.data_dir}/train.parquet: no labeled training sequence")
        self.sample_weight: np.ndarray | None = None
        if cfg.distinct_samples:
            limit = cfg.model.max_messages
            keys = [(tuple(s[:limit]), int(y)) for s, y in zip(self.train_ids, self.train_labels, strict=True)]
            self.samples, counts = distinct_samples(self.samples, keys)
            self.sample_weight = np.zeros(len(self.train_ids))
            self.sample_weight[self.samples] = counts
        long = sum(len(s) > cfg.model.max_messages for s in self.train_ids)
        if long:
            log.warning("%d of %d training sequences are longer than max_messages=%d and keep their first %d "
                        "messages", long, len(self.train_ids), cfg.model.max_messages, cfg.model.max_messages)
        self.val = self.data.sequences("val") if self.data.has_split("val") else None

        ckpt = latest_checkpoint(self.run_dir) if resume else None
        if resume and ckpt is None:
            log.warning("--resume: no checkpoint in %s; starting from the beginning", self.run_dir / CHECKPOINTS)
        if not resume and (self.run_dir / CHECKPOINTS).is_dir() and any((self.run_dir / CHECKPOINTS).iterdir()):
            raise ConfigError(f"--out {self.run_dir} already holds a run with checkpoints; pass --resume to "
                              "continue it, or choose a new --out folder")
        if ckpt is not None:
            other_data = check_run_data(self.run_dir, self.data, allow_other_data=allow_other_data,
                                        command="train --resume")
        else:
            other_data = None
            self.data.verify()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config.save(self.run_dir / "config.json")
        if ckpt is None:  # a fresh run: what an earlier run left here would be shown as this one's
            for name in ("eval", "model"):
                shutil.rmtree(self.run_dir / name, ignore_errors=True)
            for name in (THRESHOLD_FILE, "report.html"):
                (self.run_dir / name).unlink(missing_ok=True)
        if other_data is None:
            shutil.copyfile(self.data_dir / "manifest.json", self.run_dir / RUN_DATA_MANIFEST)

        if ckpt is None:
            _set_seed(cfg.seed)
            self.model = self.model_cls.build(cfg.model, seed=cfg.seed)
            _set_seed(cfg.seed)
        else:
            self._load_checkpoint(ckpt)
        device = self._device = torch.device(getattr(self.model, "device", "cpu"))
        self.autocast_dtype = resolve_autocast(cfg.autocast, device)
        log.info("training forward passes: autocast %s (config %r, %s)", self.autocast_name, cfg.autocast, device)
        if self.autocast_dtype is not None and device.type == "cuda" and cfg.model.dtype == "float32":
            log.warning("autocast to bfloat16 on CUDA with a float32 model keeps the fused attention kernel, "
                        "which gave NaN gradients at padded positions; [model] dtype = \"bfloat16\" uses eager "
                        "attention")
        if ckpt is None:
            (self.run_dir / TRAIN_LOG).write_text("")
            self._log({"event": "start", "seed": cfg.seed, "preset": cfg.preset, "autocast": self.autocast_name,
                       "oversampling": asdict(self.oversampling), "versions": library_versions()})
        if other_data is not None:
            self._log({"event": "other_data", **other_data})
        self._session_start = time.perf_counter()

    def _load_checkpoint(self, ckpt: Path) -> None:
        """Resume from ``ckpt``, or from the checkpoint before it when ``ckpt`` does not load (logged)."""
        failed: dict[Path, str] = {}
        while True:
            saved = json.loads((ckpt / STATE_FILE).read_text())  # checked by latest_checkpoint
            if saved["config"] != self.config.to_dict():
                raise ConfigError(f"--resume: the config differs from the one of {ckpt} (leave out --preset, "
                                  "--config and overrides, or start a new --out folder)")
            try:
                self._load_checkpoint_files(ckpt, saved)
                break
            except torch.cuda.OutOfMemoryError:
                raise
            except (LogLLMError, OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
                failed[ckpt] = f"does not load ({type(err).__name__}: {err})"
                log.warning("checkpoint %s %s; falling back to the previous checkpoint", ckpt, failed[ckpt])
                ckpt = latest_checkpoint(self.run_dir, exclude=failed)  # raises when none is left
                assert ckpt is not None
        # Steps logged after this checkpoint were lost with the interrupted session.
        log_path = self.run_dir / TRAIN_LOG
        kept = [line for line in log_path.read_text().splitlines()
                if json.loads(line).get("step", 0) <= self.state.global_step] if log_path.is_file() else []
        log_path.write_text("".join(line + "\n" for line in kept))
        ordered, unreadable = _checkpoint_folders(self.run_dir)
        skipped = sorted(p.name for p in [*ordered[: ordered.index(ckpt)], *unreadable]) if ckpt in ordered else []
        self._log({"event": "resume", "checkpoint": ckpt.name, "step": self.state.global_step,
                   **({"skipped_damaged": skipped} if skipped else {})})
        log.info("resumed from %s (stage %s, epoch %d, step %d)", ckpt,
                 self.config.stages[min(self.state.stage_index, len(self.config.stages) - 1)].name,
                 self.state.epoch, self.state.global_step)

    def _load_checkpoint_files(self, ckpt: Path, saved: dict[str, Any]) -> None:
        self.state = TrainState(**saved["state"])
        self.model = self.model_cls.from_pretrained(ckpt / "model")
        if self.state.stage_index < len(self.config.stages) and (ckpt / "optimizer.json").is_file():
            stage = self.config.stages[self.state.stage_index]
            self._start_stage(stage)
            self.optimizer.load_state_dict(_load_state(ckpt, "optimizer"))
            self.scheduler.load_state_dict(_load_state(ckpt, "scheduler"))
        self._best = load_file(str(ckpt / BEST_FILE)) if (ckpt / BEST_FILE).is_file() else None
        if self._best is None and self.state.best_val_loss is not None:
            log.warning("checkpoint %s holds no copy of the best validation weights (validation loss %.5f); unless "
                        "a later check improves on it, training ends with its last weights", ckpt,
                        self.state.best_val_loss)
        _set_rng_state(_load_state(ckpt, "rng"))

    # -- sampling ------------------------------------------------------------------------------

    def epoch_order(self, stage_index: int, epoch: int) -> np.ndarray:
        """Training-sample indices of one epoch: a seeded permutation, capped at the stage's max_samples.

        With ``group_by_length`` each window of that many micro-batches is sorted by (length, label,
        messages), cut into micro-batches, and the epoch's micro-batches are shuffled (seeded).
        """
        cfg = self.config
        stage = cfg.stages[stage_index]
        rng = np.random.default_rng([cfg.seed, stage_index, epoch])
        order = self.samples[rng.permutation(len(self.samples))]
        if stage.max_samples is not None:
            order = order[: stage.max_samples]
        if not cfg.group_by_length:
            return order
        window, mb = cfg.group_by_length * cfg.micro_batch, cfg.micro_batch
        batches = []
        for start in range(0, len(order), window):
            part = sorted(order[start: start + window].tolist(), key=self._length_key)
            batches += [part[i: i + mb] for i in range(0, len(part), mb)]
        # The last (possibly short) micro-batch stays last, so every group keeps micro_batch rows but one.
        head, tail = batches[:-1], batches[-1:]
        head = [head[i] for i in rng.permutation(len(head))]
        return np.asarray([i for b in head + tail for i in b], dtype=self.samples.dtype)

    def _length_key(self, i: int) -> tuple[int, int, list[int]]:
        seq = self.train_ids[i][: self.config.model.max_messages]
        return len(seq), int(self.train_labels[i]), seq

    def _groups(self, order: np.ndarray) -> list[list[np.ndarray]]:
        mb, ga = self.config.micro_batch, self.config.grad_accum
        batches = [order[i: i + mb] for i in range(0, len(order), mb)]
        return [batches[i: i + ga] for i in range(0, len(batches), ga)]

    def steps_in_stage(self, stage_index: int) -> int:
        stage = self.config.stages[stage_index]
        n = len(self.samples) if stage.max_samples is None else min(stage.max_samples, len(self.samples))
        per_epoch = math.ceil(math.ceil(n / self.config.micro_batch) / self.config.grad_accum)
        return per_epoch * stage.epochs

    # -- stages --------------------------------------------------------------------------------

    def _start_stage(self, stage: Any) -> None:
        """Freeze everything but the stage's parts; fresh AdamW and lr schedule; encoder cache if frozen."""
        parts = self.model.parts()
        missing = [p for p in stage.trainable if p not in parts]
        if missing:
            raise ConfigError(f"stage {stage.name}: the model has no part(s) {missing} (has {sorted(parts)})")
        for p in self.model.parameters():
            p.requires_grad_(False)
        params, seen = [], set()
        for name in stage.trainable:
            for p in parts[name]:
                if id(p) not in seen:
                    seen.add(id(p))
                    params.append(p)
                    p.requires_grad_(True)
        if not params:
            raise ConfigError(f"stage {stage.name}: parts {stage.trainable} have no parameters to train")
        cfg = self.config
        self.optimizer = make_adamw(params, lr=stage.lr, weight_decay=cfg.weight_decay)
        total = self.steps_in_stage(self.config.stages.index(stage))
        interval = max(1, math.ceil(total / cfg.lr_decays)) if cfg.lr_decays else total + 1
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=interval, gamma=cfg.lr_decay)
        if "encoder" in stage.trainable:
            self.model.clear_cache()
        else:
            self.model.freeze_encoder_cache(self.texts)
        log.info("stage %s: training %s (%d tensors, %d parameters), lr %g, %d steps", stage.name,
                 "+".join(stage.trainable), len(params), sum(p.numel() for p in params), stage.lr, total)

    def _last_trained_stage(self) -> int:
        return max(i for i, s in enumerate(self.config.stages) if not s.skip)

    def train(self, max_steps: int | None = None, on_step: Callable[[int], None] | None = None) -> bool:
        """Run (or continue) the stages; returns True when training finished.

        ``max_steps`` stops after that many optimiser steps in this call, as if interrupted (for tests and
        for splitting work); ``on_step`` is called with the global step after every optimiser step.
        """
        from tqdm.auto import tqdm

        cfg, st = self.config, self.state
        steps_this_call = 0
        self.model.train()
        while st.stage_index < len(cfg.stages):
            stage = cfg.stages[st.stage_index]
            if stage.skip or st.stopped_early:
                log.info("stage %s: skipped%s", stage.name, " (stopped early)" if st.stopped_early else "")
                st.stage_index += 1
                continue
            if st.epoch == 0 and st.group == 0 and st.stage_step == 0:
                self._start_stage(stage)
                self._log({"event": "stage_start", "stage": stage.name, "step": st.global_step})
            total = self.steps_in_stage(st.stage_index)
            bar = tqdm(total=total, initial=st.stage_step, desc=f"stage {stage.name}", disable=not self.progress,
                       dynamic_ncols=True, leave=True)
            try:
                while st.epoch < stage.epochs and not st.stopped_early:
                    groups = self._groups(self.epoch_order(st.stage_index, st.epoch))
                    while st.group < len(groups):
                        if max_steps is not None and steps_this_call >= max_steps:
                            return False
                        loss = self._step(groups[st.group])
                        st.group += 1
                        st.global_step += 1
                        st.stage_step += 1
                        steps_this_call += 1
                        lr = self.optimizer.param_groups[0]["lr"]
                        self.scheduler.step()
                        elapsed = st.elapsed + time.perf_counter() - self._session_start
                        self._log({"stage": stage.name, "step": st.global_step, "stage_step": st.stage_step,
                                   "epoch": st.epoch, "loss": loss, "lr": lr, "elapsed": round(elapsed, 3)})
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}")
                        epoch_end = st.group == len(groups)
                        if self._early_stopping_due(epoch_end):
                            self._validation_check(stage.name)
                        if on_step is not None:
                            on_step(st.global_step)
                        stage_end = st.stopped_early or (epoch_end and st.epoch + 1 == stage.epochs)
                        if epoch_end:
                            st.epoch += 1
                            st.group = 0
                        if stage_end:
                            break
                        if cfg.checkpoint_every and st.global_step % cfg.checkpoint_every == 0:
                            self.save_checkpoint(f"step-{st.global_step:07d}")
                        if epoch_end:
                            break  # the next epoch has its own order
            finally:
                bar.close()
            # Stage end: the state points at the next stage.
            st.stage_index += 1
            st.epoch = st.group = st.stage_step = 0
            self.save_checkpoint(f"stage-{stage.name}")
        return True

    @property
    def autocast_name(self) -> str:
        """The autocast dtype as written to the train log: "bfloat16" or "none"."""
        return str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "none"

    def autocast(self) -> torch.autocast:
        """The mixed-precision context of training's forward passes (a no-op without autocast)."""
        return torch.autocast(self._device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def _step(self, group: list[np.ndarray]) -> float:
        """One optimiser step over a group of micro-batches; returns the group's mean loss."""
        weights = [None if self.sample_weight is None else self.sample_weight[b].tolist() for b in group]
        sizes = [len(b) if w is None else sum(w) for b, w in zip(group, weights, strict=True)]
        n = sum(sizes)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for batch, w, size in zip(group, weights, sizes, strict=True):
            seqs = [self.train_ids[i] for i in batch]
            labels = [int(self.train_labels[i]) for i in batch]
            with self.autocast():
                loss = self.model.loss(self.texts, seqs, labels, w) if w is not None else \
                    self.model.loss(self.texts, seqs, labels)
            # Weight by micro-batch size (samples it stands for) so the step equals one over the whole group.
            (loss * (size / n)).backward()
            total += float(loss.detach()) * size
        if self.config.max_grad_norm is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        return total / n

    # -- validation: early stopping and the threshold ------------------------------------------

    def _early_stopping_due(self, epoch_end: bool) -> bool:
        cfg, st = self.config, self.state
        if cfg.early_stopping_patience is None or self.val is None or st.stage_index != self._last_trained_stage():
            return False
        return bool(st.global_step % cfg.eval_every == 0) if cfg.eval_every else epoch_end

    def validation_loss(self) -> float:
        """Mean loss on the labeled validation sequences (no gradients, eval mode)."""
        known = np.flatnonzero(self.val.labels >= 0)
        bs = self.config.score_batch_size
        total = 0.0
        self.model.eval()
        try:
            with torch.no_grad():
                for i in range(0, len(known), bs):
                    idx = known[i: i + bs]
                    seqs = [self.val.message_ids[j].tolist() for j in idx]
                    labels = [int(self.val.labels[j]) for j in idx]
                    total += float(self.model.loss(self.texts, seqs, labels)) * len(idx)
        finally:
            self.model.train()
        return total / max(1, len(known))

    def _validation_check(self, stage_name: str) -> None:
        st = self.state
        val_loss = self.validation_loss()
        improved = st.best_val_loss is None or val_loss < st.best_val_loss
        if improved:
            st.best_val_loss, st.best_step, st.bad_checks = val_loss, st.global_step, 0
            self._best = self._trained_parameters()
        else:
            st.bad_checks += 1
        self._log({"event": "validation", "stage": stage_name, "step": st.global_step, "val_loss": val_loss,
                   "best_val_loss": st.best_val_loss, "best_step": st.best_step})
        if st.bad_checks >= self.config.early_stopping_patience:
            st.stopped_early = True
            log.info("early stopping at step %d: validation loss %.5f has not improved on %.5f for %d checks",
                     st.global_step, val_loss, st.best_val_loss, st.bad_checks)
            self._restore_best()

    def _trained_parameters(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the parameters being trained (those of the stage in progress), by name."""
        return {name: p.detach().to("cpu", copy=True).contiguous()
                for name, p in self.model.named_parameters() if p.requires_grad}

    def _restore_best(self) -> None:
        """Load the parameters kept at the best validation loss into the model (logged, and in the train log)."""
        st = self.state
        if self._best is None:
            if st.best_val_loss is not None:
                log.warning("the best validation weights (validation loss %.5f) were not kept (a checkpoint from "
                            "before they were); the model keeps its last weights", st.best_val_loss)
            return
        params = dict(self.model.named_parameters())
        missing = sorted(set(self._best) - set(params))
        if missing:
            raise ConfigError(f"the kept best validation weights name parameters the model does not have: "
                              f"{missing[:3]}; the checkpoint does not belong to this model")
        with torch.no_grad():
            for name, value in self._best.items():
                params[name].copy_(value.to(params[name].device))
        self._log({"event": "restore_best", "step": st.global_step, "best_step": st.best_step,
                   "best_val_loss": st.best_val_loss})
        if st.best_step == st.global_step:
            log.info("early stopping: the last weights (step %d) have the best validation loss (%.5f); kept",
                     st.global_step, st.best_val_loss)
        else:
            log.info("early stopping: restored the weights of step %d, the best validation loss (%.5f), in place "
                     "of those of step %d", st.best_step, st.best_val_loss, st.global_step)

    def choose_threshold(self) -> dict[str, Any]:
        """Pick the decision threshold on the validation split (max F1), or 0.5 without one."""
        if self.val is None:
            return {"threshold": DEFAULT_THRESHOLD, "source": "default",
                    "reason": "the prepared folder has no val split; 0.5 is used (prepare with a validation split "
                              "to choose it by F1)"}
        known = self.val.labels >= 0
        labels = self.val.labels[known]
        if labels.sum() == 0:
            return {"threshold": DEFAULT_THRESHOLD, "source": "default",
                    "reason": "the val split has no anomalous sequence, so F1 cannot choose; 0.5 is used"}
        seqs = [m.tolist() for m, k in zip(self.val.message_ids, known) if k]
        scores = np.asarray(self.model.score(self.texts, seqs, batch_size=self.config.score_batch_size))
        threshold, f1 = choose_threshold(labels, scores)
        return {"threshold": threshold, "source": "val", "val_f1": f1, "val_sequences": int(known.sum()),
                "val_anomalous": int(labels.sum())}

    # -- saving --------------------------------------------------------------------------------

    def save_checkpoint(self, name: str) -> Path:
        """Write a self-contained checkpoint folder (atomically: a crash never leaves a half one)."""
        st = self.state
        root = self.run_dir / CHECKPOINTS
        tmp, final = root / f".tmp-{name}", root / name
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.model.save_pretrained(tmp / "model")
        if st.stage_index < len(self.config.stages) and self.optimizer is not None and st.stage_step > 0:
            _save_state(self.optimizer.state_dict(), tmp, "optimizer")
            _save_state(self.scheduler.state_dict(), tmp, "scheduler")
        _save_state(_rng_state(), tmp, "rng")
        if self._best is not None:
            save_file(self._best, str(tmp / BEST_FILE))
        saved_state = asdict(st)
        saved_state["elapsed"] = st.elapsed + time.perf_counter() - self._session_start
        (tmp / STATE_FILE).write_text(json.dumps({
            "state": saved_state, "config": self.config.to_dict(), "versions": library_versions(),
        }, indent=2) + "\n")
        write_checksums(tmp)  # last: a folder whose files all match it is complete
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        self._log({"event": "checkpoint", "name": name, "step": st.global_step})
        log.debug("checkpoint %s", final)
        self._prune_step_checkpoints()
        return final

    def _prune_step_checkpoints(self) -> None:
        keep = self.config.keep_step_checkpoints
        if keep is None:
            return
        steps = sorted((self.run_dir / CHECKPOINTS).glob("step-*"))
        for old in steps[: max(0, len(steps) - keep)]:
            shutil.rmtree(old)

    def finish(self) -> dict[str, Any]:
        """Write the final model and threshold.json (call after ``train()`` returned True).

        With early stopping on, the model first gets back its weights of the best validation check
        (when training stopped early that was done at the stop).
        """
        if self.config.early_stopping_patience is not None and not self.state.stopped_early:
            self._restore_best()
        self.model.clear_cache()
        self.model.eval()
        info = self.choose_threshold()
        info["seed"] = self.config.seed
        model_dir = self.run_dir / "model"
        shutil.rmtree(model_dir, ignore_errors=True)
        self.model.save_pretrained(model_dir)
        (self.run_dir / THRESHOLD_FILE).write_text(json.dumps(info, indent=2) + "\n")
        self.state.elapsed += time.perf_counter() - self._session_start
        self._session_start = time.perf_counter()
        self._log({"event": "finish", "step": self.state.global_step, "threshold": info["threshold"],
                   "threshold_source": info["source"], "elapsed": round(self.state.elapsed, 3)})
        log.info("training done: %d steps in %.1f s; threshold %.4g (%s)", self.state.global_step,
                 self.state.elapsed, info["threshold"], info["source"])
        return info

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / TRAIN_LOG, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def train_run(
    config: TrainConfig,
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    model_cls: Any | None = None,
    allow_other_data: bool = False,
) -> Trainer:
    """Set up, train every stage and finish: the whole of ``logllm train``. Returns the trainer."""
    trainer = Trainer(config, data_dir, run_dir, model_cls=model_cls, progress=progress)
    trainer.setup(resume=resume, allow_other_data=allow_other_data)
    trainer.train()
    trainer.finish()
    return trainer
