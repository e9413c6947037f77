"""The training recipe: stages 1, 2a, 2b, 3 with checkpoints, exact resume and a validation threshold.

``Trainer(config, data_dir, run_dir)``: ``setup()`` builds (or, with ``resume=True``, reloads) the model
and the run folder, ``train()`` runs the stages and ``finish()`` writes the model and threshold.json.
A stage can also be driven by hand (tests, benchmarks): ``start_stage(stage)``, then ``step(group)``
for each group of ``epoch_groups(stage_index, epoch)``.

Its parts live beside it in ``logllm.training``: ``sampling`` (which samples, in which order),
``optim`` (the optimizer and lr schedule the config names), ``precision`` (autocast),
``early_stop`` and ``checkpoint`` (checkpoint folders: writing, reading, checks), ``distributed``
(several processes), ``estimate`` (the early estimate of the training time, per stage). Over 500 lines because one optimiser step (its micro-batches dealt out to the
processes, losses weighted by their share of the step, checkpoint and resume of that position) is
read here in one place. Resume is exact:

- the order of samples is a pure function of (seed, stage, epoch), so the sampler's position is just
  (stage, epoch, optimiser step within the epoch);
- checkpoints are taken only between optimiser steps and hold the model, the optimizer and
  lr-scheduler state and the python / numpy / torch RNG states (dropout), never pickled;
- the train log is cut back to the checkpoint's step when resuming, so no step is logged twice.

Launched as N processes (``distributed``), the processes deal out each step's micro-batches and sum
their gradients: the same steps as one process. Only the main process writes to the run folder.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from logllm.config import StageConfig, TrainConfig
from logllm.data.dataset import PreparedData
from logllm.data.manifest import RUN_DATA_MANIFEST, check_run_data
from logllm.errors import ConfigError, LogLLMError
from logllm.evaluate import THRESHOLD_FILE
from logllm.training import distributed, early_stop, sampling
from logllm.training.checkpoint import (
    BEST_FILE,
    CHECKPOINTS,
    STATE_FILE,
    TrainState,
    checkpoint_folders,
    latest_checkpoint,
    load_optimizer,
    load_rng,
    load_scheduler,
    prune_step_checkpoints,
    rng_state,
    write_checkpoint,
)
from logllm.training.distributed import SINGLE, DistContext
from logllm.training.estimate import DurationEstimator, StageCost
from logllm.training.optim import build_optimizer, unfreeze_stage
from logllm.training.precision import resolve_autocast
from logllm.training.sampling import length_key, step_groups, training_samples
from logllm.versions import library_versions

__all__ = ["BEST_FILE", "TrainState", "Trainer", "latest_checkpoint", "train_run"]

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _config_matches(saved: dict[str, Any], config: TrainConfig) -> bool:
    """Whether a checkpoint's config is ``config``; options it predates count as their defaults."""
    current, defaults = config.to_dict(), TrainConfig().to_dict()
    return {**{k: defaults[k] for k in current.keys() - saved.keys()}, **saved} == current


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
        dist: DistContext | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        from logllm.model.build import pin_decoder_source

        distributed.check_grad_accum(config.micro_batch, config.grad_accum, (dist or SINGLE).world_size)
        # A GGUF decoder is named by its file's sha256 and package version in the run's config.json.
        config = replace(config.validate(), model=pin_decoder_source(config.model))
        self.config = config
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        self.dist = dist or SINGLE
        """This process among the training processes (``distributed.start``); one process by default."""
        self.progress = progress and self.dist.is_main
        self.clock = clock
        """Times the steps for the duration estimate (``training.estimate``); a parameter for tests."""
        self._estimator: DurationEstimator | None = None
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
        self.samples, self.sample_weight, self.oversampling = training_samples(self.train_ids, self.train_labels, cfg)
        if len(self.samples) == 0:
            raise ConfigError(f"{self.data_dir}/train.parquet: no labeled training sequence")
        long = sum(len(s) > cfg.model.max_messages for s in self.train_ids)
        if long:
            log.info("%d of %d training sequences are longer than max_messages=%d: each is read as windows and "
                     "trains on its highest-scoring window (docs/model.md, long sequences)", long,
                     len(self.train_ids), cfg.model.max_messages)
        self.val = self.data.sequences("val") if self.data.has_split("val") else None

        main = self.dist.is_main  # only the main process writes to the run folder
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
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / "config.json")
        if ckpt is None and main:  # a fresh run: what an earlier run left here would be shown as this one's
            for name in ("eval", "model"):
                shutil.rmtree(self.run_dir / name, ignore_errors=True)
            for name in (THRESHOLD_FILE, "report.html"):
                (self.run_dir / name).unlink(missing_ok=True)
        if other_data is None and main:
            shutil.copyfile(self.data_dir / "manifest.json", self.run_dir / RUN_DATA_MANIFEST)

        if ckpt is None:
            _set_seed(cfg.seed)
            self.model = self.model_cls.build(cfg.model, seed=cfg.seed, **self._input_kwargs())
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
            if main:
                (self.run_dir / TRAIN_LOG).write_text("")
            self._log({"event": "start", "seed": cfg.seed, "preset": cfg.preset, "autocast": self.autocast_name,
                       "oversampling": asdict(self.oversampling), "versions": library_versions(),
                       **({"processes": self.dist.world_size} if self.dist.distributed else {})})
        if other_data is not None:
            self._log({"event": "other_data", **other_data})
        log.info("%s", self.plan_text())
        distributed.barrier(self.dist, "waiting for every process to set up")
        self._session_start = time.perf_counter()

    def _input_kwargs(self) -> dict[str, Any]:
        """What building the model needs for its input mode: the training messages for the template modes."""
        from logllm.model.inputs import check_masking, needs_training_texts, training_texts

        mode = self.config.model.input_mode
        check_masking(mode, self.data.manifest, str(self.data_dir))
        if not needs_training_texts(mode):
            return {}
        return {"training_texts": training_texts(self.texts, self.train_ids)}

    def plan_text(self) -> str:
        """The planned optimiser steps per stage, for the log before training starts."""
        cfg = self.config
        steps = [(s.name, 0 if s.skip else self.steps_in_stage(i)) for i, s in enumerate(cfg.stages)]
        return (f"training plan: {sum(n for _, n in steps):,} optimiser steps ("
                + ", ".join(f"stage {name} {n:,}" for name, n in steps)
                + f") over {len(self.samples):,} samples, {cfg.micro_batch} x {cfg.grad_accum} per step"
                + (f" shared by {self.dist.world_size} processes" if self.dist.distributed else "")
                + "; fewer: lower the stages' epochs or max_samples in the config")

    def _load_checkpoint(self, ckpt: Path) -> None:
        """Resume from ``ckpt``, or from the checkpoint before it when ``ckpt`` does not load (logged)."""
        failed: dict[Path, str] = {}
        while True:
            saved = json.loads((ckpt / STATE_FILE).read_text())  # checked by latest_checkpoint
            if not _config_matches(saved["config"], self.config):
                raise ConfigError(f"--resume: the config differs from the one of {ckpt} (leave out --preset, "
                                  "--config and overrides, or start a new --out folder)")
            processes = int(saved.get("processes", 1))
            if processes != self.dist.world_size:
                raise ConfigError(
                    f"--resume: {ckpt} was written by a run of {processes} training process(es) and this launch "
                    f"has {self.dist.world_size}; a run continues with the number it started with (each process "
                    f"restores its own RNG state): launch `{distributed.launch_hint(processes)} --data "
                    f"{self.data_dir} --out {self.run_dir} --resume`")
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
        if self.dist.is_main:
            kept = [line for line in log_path.read_text().splitlines()
                    if json.loads(line).get("step", 0) <= self.state.global_step] if log_path.is_file() else []
            log_path.write_text("".join(line + "\n" for line in kept))
        ordered, unreadable = checkpoint_folders(self.run_dir)
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
            self.start_stage(stage)
            load_optimizer(self.optimizer, ckpt)
            load_scheduler(self.scheduler, ckpt)
        self._best = load_file(str(ckpt / BEST_FILE)) if (ckpt / BEST_FILE).is_file() else None
        if self._best is None and self.state.best_val_loss is not None:
            log.warning("checkpoint %s holds no copy of the best validation weights (validation loss %.5f); unless "
                        "a later check improves on it, training ends with its last weights", ckpt,
                        self.state.best_val_loss)
        load_rng(ckpt, self.dist.rank)

    # -- sampling ------------------------------------------------------------------------------

    def epoch_order(self, stage_index: int, epoch: int) -> np.ndarray:
        """Training-sample indices of one epoch, seeded by (seed, stage, epoch) (``sampling.epoch_order``)."""
        key = length_key(self.train_ids, self.train_labels, self.config.model.max_messages)
        return sampling.epoch_order(self.samples, self.config, stage_index, epoch, key)

    def epoch_groups(self, stage_index: int, epoch: int) -> list[list[np.ndarray]]:
        """The optimiser steps of one epoch, each a list of ``grad_accum`` micro-batches (arguments of ``step``)."""
        return step_groups(self.epoch_order(stage_index, epoch), self.config)

    def steps_in_stage(self, stage_index: int) -> int:
        """Optimiser steps of a stage, all its epochs."""
        return sampling.steps_in_stage(len(self.samples), self.config, stage_index)

    # -- stages --------------------------------------------------------------------------------

    def start_stage(self, stage: StageConfig) -> None:
        """Freeze everything but the stage's parts, give them a fresh optimizer and lr schedule (the
        config's ``optimizer`` and ``scheduler``), and freeze the encoder cache when the encoder is frozen.

        ``train()`` calls it at the start of each stage; a test or benchmark calls it, then ``step``."""
        params = unfreeze_stage(self.model, stage)
        distributed.broadcast_parameters(params, self.dist)  # replicas start each stage identical
        total = self.steps_in_stage(self.config.stages.index(stage))
        self.optimizer, self.scheduler = build_optimizer(self.config, params, stage.lr, total)
        if "encoder" in stage.trainable:
            self.model.clear_cache()
        else:
            self.model.freeze_encoder_cache(self.texts)
        log.info("stage %s: training %s (%d tensors, %d parameters), lr %g, %d steps", stage.name,
                 "+".join(stage.trainable), len(params), sum(p.numel() for p in params), stage.lr, total)

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
                self.start_stage(stage)
                self._log({"event": "stage_start", "stage": stage.name, "step": st.global_step})
            total = self.steps_in_stage(st.stage_index)
            estimator = self.duration_estimator()
            estimator.stage_begins(st.stage_index, st.stage_step)
            bar = tqdm(total=total, initial=st.stage_step, desc=f"stage {stage.name}", disable=not self.progress,
                       dynamic_ncols=True, leave=True)
            try:
                while st.epoch < stage.epochs and not st.stopped_early:
                    groups = self.epoch_groups(st.stage_index, st.epoch)
                    while st.group < len(groups):
                        if max_steps is not None and steps_this_call >= max_steps:
                            return False
                        loss = self.step(groups[st.group])
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
                        estimate = estimator.step_done(st.stage_step, st.global_step)
                        if estimate is not None and self.dist.is_main:
                            log.info("%s", estimate.text())
                            self._log(estimate.record())
                        epoch_end = st.group == len(groups)
                        if early_stop.check_due(self.config, st, self.val is not None, epoch_end):
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

    def duration_estimator(self) -> DurationEstimator:
        """The run's :class:`~logllm.training.estimate.DurationEstimator` (one per trainer, on ``clock``)."""
        if self._estimator is None:
            self._estimator = DurationEstimator(
                [StageCost(s.name, 0 if s.skip else self.steps_in_stage(i), "encoder" in s.trainable)
                 for i, s in enumerate(self.config.stages)], clock=self.clock)
        return self._estimator

    @property
    def autocast_name(self) -> str:
        """The autocast dtype as written to the train log: "bfloat16" or "none"."""
        return str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "none"

    def autocast(self) -> torch.autocast:
        """The mixed-precision context of training's forward passes (a no-op without autocast)."""
        return torch.autocast(self._device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)

    def step(self, group: list[np.ndarray]) -> float:
        """One optimiser step over a group of micro-batches (one item of ``epoch_groups``), in the stage
        ``start_stage`` set up; returns the group's mean loss. The lr schedule is not advanced.

        With several processes this one runs micro-batches ``rank, rank + N, ...`` of the group and the
        gradients and loss are summed over the processes before the step."""
        weights = [None if self.sample_weight is None else self.sample_weight[b].tolist() for b in group]
        sizes = [len(b) if w is None else sum(w) for b, w in zip(group, weights, strict=True)]
        n = sum(sizes)
        self.optimizer.zero_grad(set_to_none=True)
        st, total = self.state, 0.0
        for k in self.dist.mine(len(group)):
            batch, w, size = group[k], weights[k], sizes[k]
            seqs = [self.train_ids[i] for i in batch]
            labels = [int(self.train_labels[i]) for i in batch]
            torch.manual_seed(distributed.micro_batch_seed(self.config.seed, st.stage_index, st.epoch, st.group, k))
            with self.autocast():
                loss = self.model.loss(self.texts, seqs, labels, w) if w is not None else \
                    self.model.loss(self.texts, seqs, labels)
            # Weight by micro-batch size (samples it stands for) so the step equals one over the whole group.
            (loss * (size / n)).backward()
            total += float(loss.detach()) * size
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.dist.distributed:
            distributed.all_reduce_gradients(params, self.dist)
            [total] = distributed.sum_floats([total], self.dist, "summing the step's loss")
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        self.optimizer.step()
        return total / n

    # -- validation: early stopping and the threshold ------------------------------------------

    def validation_loss(self) -> float:
        """Mean loss on the labeled validation sequences (no gradients, eval mode). Several processes
        each take every N-th batch and gather the batch losses: the same value as one process."""
        mine = early_stop.validation_batch_losses(self.model, self.texts, self.val, self.config.score_batch_size,
                                                  self.dist.rank, self.dist.world_size)
        parts = distributed.gather_objects(mine, self.dist, "gathering the validation loss")
        return early_stop.combine_batch_losses({k: v for part in parts for k, v in part.items()}, self.val)

    def _validation_check(self, stage_name: str) -> None:
        st = self.state
        val_loss = self.validation_loss()
        if early_stop.record_check(st, val_loss, self.config.early_stopping_patience):
            self._best = early_stop.trained_parameters(self.model)
        self._log({"event": "validation", "stage": stage_name, "step": st.global_step, "val_loss": val_loss,
                   "best_val_loss": st.best_val_loss, "best_step": st.best_step})
        if st.stopped_early:
            log.info("early stopping at step %d: validation loss %.5f has not improved on %.5f for %d checks",
                     st.global_step, val_loss, st.best_val_loss, st.bad_checks)
            self._restore_best()

    def _restore_best(self) -> None:
        """Load the parameters kept at the best validation loss into the model (logged, and in the train log)."""
        st, record = self.state, early_stop.restore_best(self.model, self._best, self.state)
        if record is None:
            return
        self._log(record)
        if st.best_step == st.global_step:
            log.info("early stopping: the last weights (step %d) have the best validation loss (%.5f); kept",
                     st.global_step, st.best_val_loss)
        else:
            log.info("early stopping: restored the weights of step %d, the best validation loss (%.5f), in place "
                     "of those of step %d", st.best_step, st.best_val_loss, st.global_step)

    def choose_threshold(self) -> dict[str, Any]:
        """Pick the decision threshold on the validation split (max F1), or 0.5 without one."""
        return early_stop.threshold_on_val(self.model, self.texts, self.val, self.config.score_batch_size)

    # -- saving --------------------------------------------------------------------------------

    def save_checkpoint(self, name: str) -> Path:
        """Write the checkpoint folder ``RUN/checkpoints/NAME`` (``checkpoint.write_checkpoint``: atomic),
        then drop the oldest every-N-steps checkpoints beyond ``keep_step_checkpoints``."""
        st = self.state
        within_stage = st.stage_index < len(self.config.stages) and self.optimizer is not None and st.stage_step > 0
        saved_state = {**asdict(st), "elapsed": st.elapsed + time.perf_counter() - self._session_start}
        rng = distributed.gather_objects(rng_state(), self.dist, "gathering the RNG states for a checkpoint")
        final = self.run_dir / CHECKPOINTS / name
        if not self.dist.is_main:
            return final
        write_checkpoint(final, self.model,
                         {"state": saved_state, "config": self.config.to_dict(), "versions": library_versions(),
                          "processes": self.dist.world_size},
                         optimizer=self.optimizer if within_stage else None, scheduler=self.scheduler,
                         best=self._best, rng_states=rng)
        self._log({"event": "checkpoint", "name": name, "step": st.global_step})
        log.debug("checkpoint %s", final)
        prune_step_checkpoints(self.run_dir, self.config.keep_step_checkpoints)
        return final

    def finish(self) -> dict[str, Any]:
        """Write the final model and threshold.json (call after ``train()`` returned True).

        With early stopping on, the model first gets back its weights of the best validation check
        (when training stopped early that was done at the stop). Only the main process does this (the
        threshold is chosen on the whole val split there); the others return an empty dict.
        """
        if not self.dist.is_main:
            return {}
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
        if not self.dist.is_main:
            return
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
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_S,
) -> Trainer:
    """Set up, train every stage and finish: the whole of ``logllm train``. Returns the trainer.

    Started by a launcher as several processes (``distributed.start``: accelerate or torchrun), it trains
    data-parallel; ``dist_timeout`` is how long a process waits for the others in an exchange."""
    dist = distributed.start(cpu=_trains_on_cpu(config), timeout_s=dist_timeout)
    trainer = Trainer(config, data_dir, run_dir, model_cls=model_cls, progress=progress, dist=dist)
    trainer.setup(resume=resume, allow_other_data=allow_other_data)
    trainer.train()
    trainer.finish()
    # Not in a `finally`: after a failed exchange the group is broken, and leaving it could wait on it.
    distributed.stop(dist)
    return trainer


def _trains_on_cpu(config: TrainConfig) -> bool:
    """Whether the model config puts the model on the CPU (then the processes exchange over gloo)."""
    return config.model.device == "cpu" or (config.model.device == "auto" and not torch.cuda.is_available())
