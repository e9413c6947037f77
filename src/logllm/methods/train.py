"""`logllm train --method NAME`: fit one bench method on a prepared folder into a deployable run folder.

The run folder has the contract of a LogLLM run (`logllm.methods.model`), so `evaluate`, `detect`
(with ``--follow``) and `report` work on it::

    RUN/config.json          method, supervision, paper, seed, params, features (Drain settings,
                             encoder, pooling), training (what was trained on, and whether labels
                             were used), threshold rule, versions
    RUN/data_manifest.json   the prepared folder's manifest (what `evaluate` checks --data against)
    RUN/method/              method.json + state.safetensors (`Method.save`)
    RUN/features/drain.json  Drain's training messages and templates (template-reading methods)
    RUN/threshold.json       threshold, source, reason
    RUN/train_log.jsonl      start and finish events (seconds)

What a method trains on follows the bench's rules (`logllm.baselines.harness`): a supervised method
the labelled training sequences with their labels; a semi-supervised or training-free method the
normal training sequences without labels, and, when the prepared folder has no labels at all, every
training sequence taken as normal (logged, and recorded as ``training.assumed_normal``). The
validation split is handed as in the bench (with its labels where it has them).

The run's decision threshold (``score >= threshold``, `logllm.metrics.predict`) is chosen by one rule
for every method (`run_threshold`): the best F1 on the labelled validation split when it holds both
classes (`logllm.metrics.best_f1_threshold`); else, for a supervised method, the same on its training
sequences; else the smallest score above the ``normal_quantile`` of the normal training sequences'
scores (`logllm.metrics.quantile_threshold`, default `logllm.metrics.NORMAL_QUANTILE`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logllm.baselines.base import Method, MethodInput
from logllm.baselines.common import val_labels
from logllm.baselines.templates import DrainConfig, DrainMatcher, training_order
from logllm.data.dataset import PreparedData
from logllm.data.manifest import RUN_DATA_MANIFEST
from logllm.embeddings import Pooling
from logllm.errors import ConfigError, DataError
from logllm.methods.features import FEATURES_DIR, FeatureSpec, RunFeatures
from logllm.methods.model import CONFIG_FILE, LOGLLM, METHOD_DIR, THRESHOLD_FILE
from logllm.metrics import NORMAL_QUANTILE, best_f1_threshold, quantile_threshold
from logllm.versions import library_versions

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"
MAX_SEED = 2**63 - 1


@dataclass
class MethodTrainOptions:
    """How ``logllm train --method NAME`` fits a bench method."""

    method: str
    """A method of `logllm bench` (not ``logllm``): cnn, deeplog, dt, fastlogad, knn, ..."""
    params: dict[str, object] = field(default_factory=dict)
    """The method's parameters (``--set PARAM=VALUE``), as in `logllm bench --set METHOD.PARAM=VALUE`."""
    seed: int = 0
    threads: int = 1
    """torch CPU threads (unless ``params`` sets ``threads``)."""
    drain: DrainConfig = field(default_factory=DrainConfig)
    encoder: str = "minilm"
    """Sentence encoder for the methods that read message or token vectors."""
    pooling: Pooling = "mean"
    normal_quantile: float = NORMAL_QUANTILE
    """Quantile of normal training scores for the threshold when no labelled validation split decides it."""

    def validate(self, known: list[str]) -> MethodTrainOptions:
        if self.method == LOGLLM:
            raise ConfigError("method logllm is trained by `logllm train` without --method (or --method logllm)")
        if self.method not in known:
            raise ConfigError(f"--method {self.method!r}: unknown; choose logllm or one of {', '.join(known)}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"--seed {self.seed}: must be an integer from 0 to {MAX_SEED}")
        if self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: must be at least 1")
        if not 0.0 < self.normal_quantile <= 1.0:
            raise ConfigError(f"--threshold-quantile {self.normal_quantile}: must be in (0, 1], e.g. 0.99")
        if self.pooling not in ("mean", "pooler", "cls"):
            raise ConfigError(f"--pooling {self.pooling!r}: choose mean, pooler or cls")
        return self


@dataclass
class MethodRunInfo:
    """What `train_method` did: the threshold and where it came from, seconds, what it trained on."""

    run_dir: Path
    method: str
    threshold: dict[str, Any]
    training: dict[str, Any]
    seconds: float


def training_inputs(data: PreparedData, resources: Any, supervision: str) -> tuple[MethodInput, MethodInput | None,
                                                                                   dict[str, Any]]:
    """The training and validation inputs of a method of kind ``supervision`` (the bench's rules), and a
    record of what was used (``labels_used``, ``assumed_normal``, counts) for ``config.json``."""
    train = data.sequences("train")
    labels = train.labels
    known = labels >= 0
    record: dict[str, Any] = {"train_sequences": len(train), "unlabelled": int((~known).sum())}
    if supervision == "supervised":
        if not known.any():
            raise DataError(f"{data.root}: train.parquet has no labels; a supervised method needs them (prepare "
                            "with --labels), or choose a semi-supervised method such as deeplog")
        keep = np.flatnonzero(known)
        tr = MethodInput([train.message_ids[i] for i in keep], resources, labels[keep].astype(np.int64))
        record.update(labels_used=True, assumed_normal=False, used=len(keep),
                      note=f"{len(keep)} labelled training sequences with their labels")
    elif not known.any():
        log.warning("%s has no labels: all %d training sequences are taken as normal", data.root, len(train))
        tr = MethodInput(list(train.message_ids), resources)
        record.update(labels_used=False, assumed_normal=True, used=len(train),
                      note=f"no labels: all {len(train)} training sequences taken as normal")
    else:
        keep = np.flatnonzero(labels == 0)
        if len(keep) == 0:
            raise DataError(f"{data.root}: train.parquet has no normal sequence to train a {supervision} method on")
        tr = MethodInput([train.message_ids[i] for i in keep], resources)
        record.update(labels_used=False, assumed_normal=False, used=len(keep),
                      note=f"{len(keep)} normal training sequences, without labels ({int((labels == 1).sum())} "
                           "anomalous withheld)")
    if record["unlabelled"] and known.any():
        log.info("train: %d of %d sequences have no label and are left out", record["unlabelled"], len(train))
    val = None
    if data.has_split("val"):
        v = data.sequences("val")
        keep = np.flatnonzero(v.labels >= 0)
        if len(keep):
            val = MethodInput([v.message_ids[i] for i in keep], resources, v.labels[keep].astype(np.int64))
        elif supervision != "supervised":  # unlabelled: still data for PLELog's pool
            val = MethodInput(list(v.message_ids), resources)
    return tr, val, record


def run_threshold(method: Method, train: MethodInput, val: MethodInput | None,
                  normal_quantile: float = NORMAL_QUANTILE) -> dict[str, Any]:
    """The run's decision threshold (the rule of the module docstring) as written to ``threshold.json``."""
    y = val_labels(val)
    if y is not None:
        assert val is not None
        t, f1 = best_f1_threshold(y, method.score(val))
        return {"threshold": t, "source": "val",
                "reason": f"best F1 ({f1:.3f}) on the {len(y)} labelled validation sequences"}
    y = val_labels(train)
    if y is not None:
        t, f1 = best_f1_threshold(y, method.score(train))
        return {"threshold": t, "source": "train",
                "reason": f"best F1 ({f1:.3f}) on the {len(y)} labelled training sequences (no labelled "
                          "validation split with both classes)"}
    normal = train if train.labels is None else MethodInput(
        [m for m, label in zip(train.messages, train.labels) if label == 0], train.resources)
    t = quantile_threshold(method.score(normal), normal_quantile)
    return {"threshold": t, "source": "train-normal-quantile", "quantile": normal_quantile,
            "reason": f"smallest score above the {normal_quantile} quantile of the {len(normal)} normal training "
                      "sequences' scores (no labelled validation split with both classes)"}


def _clear(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir``; refuse a LogLLM run with checkpoints."""
    ckpt = run_dir / "checkpoints"
    if ckpt.is_dir() and any(ckpt.iterdir()):
        raise ConfigError(f"--out {run_dir} holds a LogLLM run with checkpoints; choose a new --out folder")
    for name in ("eval", "model", METHOD_DIR, FEATURES_DIR):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in (THRESHOLD_FILE, "report.html", TRAIN_LOG, CONFIG_FILE):
        (run_dir / name).unlink(missing_ok=True)


def train_method(options: MethodTrainOptions, data_dir: str | Path, run_dir: str | Path, *,
                 vector_fn: Callable[[list[str]], np.ndarray] | None = None,
                 token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None) -> MethodRunInfo:
    """Fit ``options.method`` on the train split of ``data_dir`` and write the run folder ``run_dir``.

    ``vector_fn`` / ``token_vector_fn`` replace the sentence encoder (tests); a run trained with them
    must be loaded with the same (`logllm.methods.load_run`).
    """
    from logllm.baselines.harness import load_methods

    registry = load_methods()
    options.validate(sorted(registry))
    cls = registry[options.method]
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    data = PreparedData(data_dir)
    data.verify()
    start = time.perf_counter()
    spec = FeatureSpec.of(cls, options.encoder, options.pooling)
    matcher = None
    if spec.templates:
        train_ids = data.sequences("train").message_ids
        matcher = DrainMatcher.fit(training_order(data.messages, train_ids), options.drain)
        log.info("drain: %d templates from %d distinct training messages", len(matcher.template_texts) - 1,
                 len(matcher.added))
    features = RunFeatures(spec, matcher, vector_fn, token_vector_fn)
    resources = features.resources(data.messages)
    train, val, record = training_inputs(data, resources, cls.supervision)
    params = dict(options.params)
    params.setdefault("threads", options.threads)
    method = cls(seed=options.seed, **params)

    run_dir.mkdir(parents=True, exist_ok=True)
    _clear(run_dir)
    shutil.copyfile(data_dir / "manifest.json", run_dir / RUN_DATA_MANIFEST)
    _log(run_dir, {"event": "start", "method": cls.name, "seed": options.seed, "versions": library_versions()})
    log.info("train: %s (%s) on %s", cls.name, cls.supervision, record["note"])
    method.fit(train, val)
    threshold = run_threshold(method, train, val, options.normal_quantile)
    threshold["seed"] = options.seed
    seconds = time.perf_counter() - start
    method.save(run_dir / METHOD_DIR)
    features.save(run_dir)
    config = {
        "format_version": 1, "method": cls.name, "supervision": cls.supervision, "paper": cls.paper,
        "seed": options.seed, "params": method.params,
        "features": {**asdict(spec), "drain": asdict(options.drain) if spec.templates else None},
        "training": record, "threshold_rule": threshold["source"],
        "explanation": {"kind": str(method.explanation), "note": str(method.explanation_note)},
        "data": str(data_dir), "versions": library_versions(),
    }
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    (run_dir / THRESHOLD_FILE).write_text(json.dumps(threshold, indent=2) + "\n")  # last: the run is complete
    _log(run_dir, {"event": "finish", "threshold": threshold["threshold"], "threshold_source": threshold["source"],
                   "elapsed": round(seconds, 3)})
    log.info("train: %s done in %.1f s; threshold %.4g (%s)", cls.name, seconds, threshold["threshold"],
             threshold["reason"])
    return MethodRunInfo(run_dir, cls.name, threshold, record, seconds)


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / TRAIN_LOG, "a") as fh:
        fh.write(json.dumps(record) + "\n")


__all__ = ["MethodRunInfo", "MethodTrainOptions", "run_threshold", "train_method", "training_inputs"]
