"""The bench: every baseline on the same prepared folder, by the same code path for data and metrics.

`run_bench(data_dir, methods, seeds, out)` loads the prepared folder, hands each method the inputs
its kind of supervision allows, times training and testing separately, and writes a
Table-II-style summary. Shared work (Drain templates fitted on the training split, MiniLM vectors)
is done once, just before the first method that declares a use of it (`shared`), and timed apart.

What each kind of method sees (the harness enforces it; the rules are those of `base`):

- every method: test sequences without labels; the validation split (when the folder has one)
  with labels, for choosing a decision threshold only (``semi_val`` restricts what semi-supervised
  and training-free methods get from it: ``labeled``, ``normal`` = its normal sequences without
  labels, or ``none``);
- supervised: the labeled training sequences with their labels;
- semi-supervised: the normal training sequences only, without labels;
- training-free: the normal training sequences as its reference set, without labels.

Sequences whose label is unknown are left out of training and of the metrics, and counted.

Metrics are those of the paper (precision, recall, F1 of the anomalous class, Eq. 2-4) plus accuracy,
and ROC-AUC and PR-AUC of the method's scores where both classes are present (`logllm.metrics`). Outputs in ``out``
(`outputs`, rewritten atomically after each method x seed, so a stopped bench keeps what finished and
``resume=True`` runs only the rest): ``runs.parquet`` / ``runs.csv`` (one row per method and seed),
``table.csv`` and ``table.md`` (mean and sample standard deviation over seeds), and ``bench.json``
(settings, data, seeds, versions, timings of the shared preprocessing, what is still missing).
A progress line is logged as each run starts and ends (with seconds).

LogLLM joins through the same interface: `RunFolderMethod` wraps a trained run folder
(``logllm train`` output) as a `Method`; pass run folders as ``logllm_runs``.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import pkgutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import polars as pl

from logllm.baselines.base import REGISTRY, Method, MethodInput, Resources, Supervision
from logllm.baselines.common import distinct
from logllm.baselines.outputs import BenchOutputs, BenchSettings, summarize, to_markdown
from logllm.baselines.shared import SharedWork
from logllm.baselines.templates import DrainConfig
from logllm.data.dataset import PreparedData
from logllm.embeddings import Pooling
from logllm.errors import ConfigError, DataError
from logllm.metrics import DEFAULT_THRESHOLD, classification_metrics, predict

log = logging.getLogger(__name__)

SemiVal = Literal["labeled", "normal", "none"]


def load_methods() -> dict[str, type[Method]]:
    """Import every module of `logllm.baselines` so that their ``@register`` decorators run.

    A module that fails to import raises (naming the module) instead of leaving its method out.
    """
    import logllm.baselines as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        name = f"{package.__name__}.{info.name}"
        try:
            importlib.import_module(name)
        except Exception as err:
            raise ImportError(f"baseline module {name} failed to import: {err!r}") from err
    return dict(REGISTRY)


def resolve_methods(names: str | Sequence[str]) -> list[str]:
    """Method names from a comma list or sequence; ``all`` is every registered method."""
    registry = load_methods()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for n in names:
        if n == "all":
            out.extend(m for m in sorted(registry) if m not in out)
        elif n == RunFolderMethod.name:
            out.append(n)
        elif n not in registry:
            raise ConfigError(f"--methods: unknown method {n!r}; registered: {', '.join(sorted(registry))}")
        elif n not in out:
            out.append(n)
    if not out:
        raise ConfigError("--methods: no method given; name some (e.g. knn,dt) or `all`")
    return out


@dataclass
class BenchInputs:
    """What one kind of supervision gets from a prepared folder, and the held-back test labels."""

    train: MethodInput
    val: MethodInput | None
    test: MethodInput
    test_labels: np.ndarray
    test_ids: list[str]


def build_inputs(data: PreparedData, resources: Resources, supervision: Supervision,
                 semi_val: SemiVal = "labeled") -> BenchInputs:
    """The inputs a method of kind ``supervision`` may see (see the module docstring)."""
    train = data.sequences("train")
    known = train.labels >= 0
    if (~known).any():
        log.info("train: %d of %d sequences have no label and are left out of training",
                 int((~known).sum()), len(train))
    if supervision == "supervised":
        keep = np.flatnonzero(known)
        tr = MethodInput([train.message_ids[i] for i in keep], resources, train.labels[keep].astype(np.int64))
    else:
        keep = np.flatnonzero(train.labels == 0)
        log.debug("%s: %d normal training sequences (%d anomalous withheld)", supervision, len(keep),
                  int((train.labels == 1).sum()))
        tr = MethodInput([train.message_ids[i] for i in keep], resources)
    if len(tr) == 0:
        raise DataError(f"{data.root}: no usable training sequences for a {supervision} method "
                        f"({len(train)} in train.parquet, {int((train.labels == 0).sum())} normal)")
    val = None
    if data.has_split("val"):
        v = data.sequences("val")
        if supervision == "supervised" or semi_val == "labeled":
            keep = np.flatnonzero(v.labels >= 0)
            val = MethodInput([v.message_ids[i] for i in keep], resources, v.labels[keep].astype(np.int64))
        elif semi_val == "normal":
            keep = np.flatnonzero(v.labels == 0)
            val = MethodInput([v.message_ids[i] for i in keep], resources)
    test = data.sequences("test")
    keep = np.flatnonzero(test.labels >= 0)
    if len(keep) < len(test):
        log.warning("test: %d of %d sequences have no label and are left out of the metrics",
                    len(test) - len(keep), len(test))
    if len(keep) == 0:
        raise DataError(f"{data.root}: test.parquet has no labeled sequence to measure against")
    return BenchInputs(
        train=tr,
        val=val,
        test=MethodInput([test.message_ids[i] for i in keep], resources),
        test_labels=test.labels[keep].astype(np.int64),
        test_ids=[test.ids[i] for i in keep],
    )


def metrics(labels: np.ndarray, pred: np.ndarray, scores: np.ndarray | None = None) -> dict[str, float]:
    """`logllm.metrics.classification_metrics` of a method's own predictions, for a table: ROC-AUC and
    PR-AUC are NaN (shown as "-") where undefined instead of None."""
    out = classification_metrics(labels, scores, pred=pred)
    for key in ("roc_auc", "pr_auc"):
        if out[key] is None:
            out[key] = float("nan")
    return out


class RunFolderMethod(Method):
    """LogLLM (or any model with the run-folder contract) as a bench method: the extension point.

    Parameters: ``run`` (a folder written by ``logllm train``). Nothing is trained here: ``fit``
    loads the model (train seconds are then taken from the run's ``train_log.jsonl`` when present),
    ``score`` is ``LogLLM.score`` on the masked texts, and ``predict`` uses the run's threshold
    (chosen on its validation split at training time).
    """

    name: ClassVar[str] = "logllm"
    supervision = "supervised"
    uses_templates: ClassVar[bool] = False  # the model reads the masked texts itself
    uses_vectors: ClassVar[bool] = False
    paper: ClassVar[str] = "Guan et al., arXiv 2411.08561 (LogLLM)"

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        from logllm.model import LogLLM

        run = self.params.get("run")
        if not run:
            raise ConfigError("logllm: give the trained run folder with --logllm-run DIR")
        self.model = LogLLM.from_pretrained(run, merge_adapters=True)
        self.trained_seconds = _run_train_seconds(Path(str(run)))
        if self.model.threshold is None:
            log.warning("logllm: %s has no threshold.json; deciding at probability 0.5", run)

    def score(self, data: MethodInput) -> np.ndarray:
        d, _ = distinct(data.messages)  # each distinct sequence scored once
        scores = self.model.score(data.resources.message_texts, [s.tolist() for s in d.seqs])
        return np.asarray(scores, dtype=np.float64)[d.inverse]

    def predict(self, data: MethodInput) -> np.ndarray:
        threshold = DEFAULT_THRESHOLD if self.model.threshold is None else float(self.model.threshold)
        return predict(self.score(data), threshold)  # the rule the run's threshold was chosen for


def _run_train_seconds(run: Path) -> float | None:
    path = run / "train_log.jsonl"
    if not path.is_file():
        return None
    last = None
    for line in path.read_text().splitlines():
        if line.strip():
            last = json.loads(line)
    return float(last["elapsed"]) if last and "elapsed" in last else None


def run_bench(
    data_dir: str | Path,
    methods: str | Sequence[str] = "all",
    seeds: Sequence[int] = (0, 1, 2),
    out: str | Path | None = None,
    params: Mapping[str, Mapping[str, object]] | None = None,
    threads: int = 1,
    semi_val: SemiVal = "labeled",
    drain: DrainConfig | None = None,
    logllm_runs: Sequence[str | Path] = (),
    vector_fn: Callable[[list[str]], np.ndarray] | None = None,
    token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None,
    command: str = "",
    pooling: Pooling = "mean",
    resume: bool = False,
) -> pl.DataFrame:
    """Run ``methods`` x ``seeds`` on one prepared folder; returns the summary table (one row per method).

    ``params`` maps a method name to its keyword parameters (``threads`` is added to every one
    unless given). ``vector_fn`` / ``token_vector_fn`` replace the MiniLM encoder (tests). When
    ``out`` is given, every file there is rewritten after each finished run (`outputs.BenchOutputs`),
    and ``resume=True`` keeps the runs already there and runs only the missing ones (refused when
    the folder's data or options differ). Shared work (Drain templates, MiniLM vectors) is done
    just before the first method that needs it (`shared.SharedWork`).
    """
    names = resolve_methods(methods)
    registry = dict(REGISTRY)
    registry[RunFolderMethod.name] = RunFolderMethod
    if RunFolderMethod.name in names and not logllm_runs:
        raise ConfigError("--methods logllm needs the trained run folder(s): --logllm-run DIR")
    if logllm_runs and len(logllm_runs) not in (1, len(seeds)):
        raise ConfigError(f"--logllm-run: give one run folder or one per seed ({len(seeds)}), "
                          f"got {len(logllm_runs)}")
    if logllm_runs and RunFolderMethod.name not in names:
        names.append(RunFolderMethod.name)
    if not seeds:
        raise ConfigError("--seeds: give at least one seed, e.g. 0,1,2")
    if resume and out is None:
        raise ConfigError("--resume needs the output folder of the bench to resume (--out)")
    params = {k: dict(v) for k, v in (params or {}).items()}
    for key in params:
        if key not in registry:
            raise ConfigError(f"--set: unknown method {key!r} in a parameter; registered: {', '.join(sorted(registry))}")

    data = PreparedData(data_dir)
    # One trained run folder is one result, whatever the seeds: it is scored once, not repeated.
    plan = {n: list(seeds[:1] if n == RunFolderMethod.name and len(logllm_runs) == 1 else seeds) for n in names}
    cells = [(n, s) for n in names for s in plan[n]]
    shared = SharedWork(data, drain, vector_fn=vector_fn, token_vector_fn=token_vector_fn, pooling=pooling)
    outputs = None
    done: set[tuple[str, int]] = set()
    if out is not None:
        settings = BenchSettings.of(data, params, semi_val, asdict(drain or DrainConfig()), pooling, logllm_runs)
        outputs = BenchOutputs(out, settings, cells, _meta(data, names, seeds, threads, command))
        done = outputs.start(resume)
    rows: list[dict] = []
    inputs: dict[str, BenchInputs] = {}
    todo = [c for c in cells if c not in done]
    finished = 0
    try:
        for name in names:
            cls = registry[name]
            seeds_left = [s for s in plan[name] if (name, s) not in done]
            if not seeds_left:
                log.info("bench: %s: all %d seed(s) already in %s; skipped", name, len(plan[name]), out)
                continue
            resources = shared.prepare_for(cls)
            if cls.supervision not in inputs:
                inputs[cls.supervision] = build_inputs(data, resources, cls.supervision, semi_val)
            inp = inputs[cls.supervision]
            for seed in seeds_left:
                log.info("bench [%d/%d]: %s seed %d: training on %d sequences ...", finished + 1, len(todo),
                         name, seed, len(inp.train))
                # one run folder for every seed, or the one given for this seed's position
                run = logllm_runs[plan[name].index(seed) if len(logllm_runs) > 1 else 0] if logllm_runs else None
                row = _run_one(cls, name, seed, params, threads, run, inp)
                rows.append(row)
                finished += 1
                if outputs is not None:
                    outputs.add(row, shared.seconds, shared.n_templates)
                log.info("bench [%d/%d]: %s seed %d done: P %.3f R %.3f F1 %.3f AUC %.3f (train %.1fs, test %.1fs)",
                         finished, len(todo), name, seed, row["precision"], row["recall"], row["f1"],
                         row["roc_auc"], row["train_s"], row["test_s"])
    except BaseException:
        if finished < len(todo):
            where = f"{out} keeps them; rerun with --resume to run the rest" if out is not None else "no --out given"
            log.warning("bench: stopped after %d of %d runs (%s)", finished, len(todo), where)
        raise
    if outputs is not None:
        return outputs.finish(shared.seconds, shared.n_templates)
    return summarize(pl.DataFrame(rows, infer_schema_length=None))


def _run_one(cls: type[Method], name: str, seed: int, params: Mapping[str, Mapping[str, object]], threads: int,
             run: str | Path | None, inp: BenchInputs) -> dict:
    """Fit, score and measure one method with one seed (``run``: the LogLLM run folder, for
    `RunFolderMethod`); returns its row of runs.csv."""
    kw = dict(params.get(name, {}))
    kw.setdefault("threads", threads)
    if cls is RunFolderMethod:
        kw["run"] = str(run)
    method = cls(seed=seed, **kw)
    t0 = time.perf_counter()
    method.fit(inp.train, inp.val)
    train_s = time.perf_counter() - t0
    if cls is RunFolderMethod and getattr(method, "trained_seconds", None) is not None:
        train_s = float(method.trained_seconds)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    scores = np.asarray(method.score(inp.test), dtype=np.float64)
    pred = np.asarray(method.predict(inp.test)).astype(bool)
    test_s = time.perf_counter() - t0
    if len(scores) != len(inp.test) or len(pred) != len(inp.test):
        raise RuntimeError(f"{name}: returned {len(scores)} scores / {len(pred)} predictions "
                           f"for {len(inp.test)} test sequences")
    m = metrics(inp.test_labels, pred, scores)
    return {"method": name, "supervision": cls.supervision, "seed": seed, **m, "train_s": train_s,
            "test_s": test_s, "n_train": len(inp.train), "n_test": len(inp.test)}


def _meta(data: PreparedData, names: list[str], seeds: Sequence[int], threads: int, command: str) -> dict:
    """The descriptive part of bench.json (what `BenchSettings` does not decide)."""
    from logllm.versions import library_versions

    splits = {s: {"sequences": len(data.sequences(s)), "anomalous": data.sequences(s).anomalous}
              for s in ("train", "val", "test") if data.has_split(s)}
    return {
        "command": command, "data": str(data.root), "splits": splits, "data_seed": data.manifest.get("seed"),
        "methods": names, "seeds": list(seeds), "threads": threads, "versions": library_versions(),
        "cpus": os.cpu_count(), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "papers": {n: getattr(REGISTRY.get(n, RunFolderMethod), "paper", "") for n in names},
    }


__all__ = ["BenchInputs", "RunFolderMethod", "build_inputs", "load_methods", "metrics", "resolve_methods",
           "run_bench", "summarize", "to_markdown"]
