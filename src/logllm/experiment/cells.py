"""Running one cell through the public library APIs, and what decides its result.

- LogLLM cells: `logllm.config.resolve_config` (``--config`` file, then the cell's seed, input mode,
  skipped stages or beta), `logllm.training.trainer.train_run`, then `logllm.evaluate.evaluate` on
  the test split (not written into the run folder). Run folders live in ``EXPDIR/runs`` under a key
  of the resolved config and the training data, so cells that train the same model share one run
  (Table II's logllm, Table IV's regex, Table V's full and Fig. 4's beta=0.3 with the default config,
  and every unstable ratio, which tests the run trained on the unmutated folder). A run stopped
  half-way is resumed from its last checkpoint.
- bench methods: `logllm.baselines.harness.run_bench` with that one method and seed.
- unstable cells: the test folder comes from `logllm.data.mutate.mutate_prepared` (seeded by the
  cell's seed), made once in ``EXPDIR/data`` and reused; a ratio keeps train and val byte-identical,
  a template holdout re-splits (so LogLLM trains a run on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from logllm.data.dataset import PreparedData
from logllm.data.manifest import FILES, MUTATION_KEY, data_identity
from logllm.errors import ConfigError, LogLLMError
from logllm.experiment.plan import LOGLLM, STAGE_VARIANTS, Cell, ExperimentOptions, folder_for
from logllm.experiment.store import DATA, RUNS

log = logging.getLogger(__name__)


def source_folder(options: ExperimentOptions, cell: Cell) -> Path:
    """The prepared folder a cell starts from: ``--data`` (or ``--raw-data`` for the raw input) at its seed."""
    raw = cell.table == "inputs" and cell.setting == "raw"
    option, pattern = ("--raw-data", options.raw_data[cell.dataset]) if raw else ("--data", options.data[cell.dataset])
    folder = folder_for(pattern, cell.seed)
    if not (folder / "manifest.json").is_file():
        raise ConfigError(f"{option} {cell.dataset}={pattern}: {folder} (seed {cell.seed}) is not a prepared folder; "
                          f"make it with `logllm prepare ... --seed {cell.seed} --out {folder}`")
    return folder


def logllm_config(options: ExperimentOptions, cell: Cell) -> Any:
    """The `TrainConfig` of a LogLLM cell: the ``--config`` file (or the small preset), then the cell's changes."""
    from logllm.config import resolve_config

    overrides: dict[str, Any] = {"seed": cell.seed}
    if options.threads is not None:
        overrides["threads"] = options.threads
    if cell.table == "inputs":
        overrides["model"] = {"input_mode": cell.setting}
        if cell.setting == "template-id":
            overrides["model"]["encoder_lora"] = None  # as `logllm train --input template-id`
    elif cell.table == "stages":
        overrides["stages"] = [{"name": name, "skip": True} for name in STAGE_VARIANTS[cell.setting]]
    elif cell.table == "beta":
        overrides["beta"] = cell.x
    return resolve_config(None, options.config, overrides)


def _config_record(config: Any) -> dict[str, Any]:
    # threads change speed, not results: left out of what identifies a run
    return {k: v for k, v in config.to_dict().items() if k != "threads"}


def _files(data: PreparedData) -> dict[str, Any]:
    return {name: (rec or {}).get("sha256") for name, rec in (data.manifest.get(FILES) or {}).items()}


def run_key(config: Any, data: PreparedData) -> str:
    """A short hash of the resolved config and the training folder: equal keys train the same model."""
    text = json.dumps({"config": _config_record(config), "data": data_identity(data.manifest),
                       "files": _files(data)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_seconds(run_dir: Path) -> float | None:
    """Training seconds of a finished run: ``elapsed`` of the last ``finish`` event of its train log."""
    path = run_dir / "train_log.jsonl"
    elapsed = None
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line) if line.strip() else {}
            if record.get("event") == "finish":
                elapsed = float(record["elapsed"])
    return elapsed


def trained_run(expdir: Path, cell: Cell, config: Any, data_dir: Path) -> Path:
    """The finished LogLLM run of ``config`` on ``data_dir``: reused, resumed or trained."""
    from logllm.training.trainer import latest_checkpoint, train_run

    data = PreparedData(data_dir)
    run_dir = expdir / RUNS / cell.dataset / f"seed{cell.seed}" / run_key(config, data)
    if (run_dir / "threshold.json").is_file():
        log.info("experiment: reusing the finished LogLLM run %s", run_dir)
        return run_dir
    resume = False
    if (run_dir / "config.json").is_file():
        try:
            resume = latest_checkpoint(run_dir) is not None
        except LogLLMError as err:
            log.warning("experiment: %s cannot be resumed (%s); training it afresh", run_dir, err)
    if resume:
        log.info("experiment: resuming the LogLLM run %s from its last checkpoint", run_dir)
    elif run_dir.exists():
        log.info("experiment: %s holds an unfinished run without a checkpoint; training it afresh", run_dir)
        shutil.rmtree(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    train_run(config, data_dir, run_dir, resume=resume, progress=False)
    return run_dir


def mutated_folder(expdir: Path, cell: Cell, source: Path) -> Path:
    """The unstable cell's prepared folder (``ratio=R`` or ``holdout=K``), made once from ``source``."""
    from logllm.data.mutate import MutateOptions, mutate_prepared

    kind, _, value = cell.setting.partition("=")
    options = (MutateOptions(ratio=float(value), seed=cell.seed) if kind == "ratio"
               else MutateOptions(holdout_templates=int(value), seed=cell.seed))
    folder = expdir / DATA / cell.dataset / f"seed{cell.seed}" / cell.setting
    src = PreparedData(source).manifest
    wanted = {**asdict(options), "kinds": list(options.kinds)}
    if (folder / "manifest.json").is_file():
        record = PreparedData(folder).manifest.get(MUTATION_KEY) or {}
        made_from = record.get("mutated_from") or {}
        if (record.get("options") == wanted and made_from.get("identity") == json.loads(json.dumps(data_identity(src)))
                and made_from.get(FILES) == src.get(FILES)):
            return folder
        log.info("experiment: %s was mutated from other data or options; making it again", folder)
    mutate_prepared(source, folder, options, overwrite=True)
    return folder


def cell_settings(options: ExperimentOptions, cell: Cell) -> dict[str, Any]:
    """What decides a cell's result besides its name: a finished cell made with other settings is refused."""
    data = PreparedData(source_folder(options, cell))
    out: dict[str, Any] = {"data": data_identity(data.manifest), "files": _files(data)}
    if cell.method == LOGLLM:
        out["config"] = _config_record(logllm_config(options, cell))
    else:
        out["params"] = dict(options.params.get(cell.method, {}))
    return json.loads(json.dumps(out, default=str))


def _data_record(folder: Path) -> dict[str, Any]:
    manifest = PreparedData(folder).manifest
    mutation = manifest.get(MUTATION_KEY)
    return {"path": str(folder), "identity": data_identity(manifest), "files": _files(PreparedData(folder)),
            "mutation": None if mutation is None else
            {k: mutation.get(k) for k in ("options", "counts", "new_messages", "holdout")}}


def run_cell(expdir: str | Path, cell: Cell, options: ExperimentOptions) -> dict[str, Any]:
    """Train and test one cell; returns its record (metrics, seconds, data, settings, versions)."""
    from logllm.versions import library_versions

    expdir = Path(expdir)
    source = source_folder(options, cell)
    test_dir = mutated_folder(expdir, cell, source) if cell.table == "unstable" else source
    train_dir = test_dir if cell.setting.startswith("holdout=") else source
    started = time.time()
    extra: dict[str, Any] = {}
    if cell.method == LOGLLM:
        from logllm.evaluate import evaluate

        config = logllm_config(options, cell)
        run_dir = trained_run(expdir, cell, config, train_dir)
        m = evaluate(run_dir, test_dir, "test", write=False)
        result = {"precision": m.precision, "recall": m.recall, "f1": m.f1, "roc_auc": m.roc_auc,
                  "train_s": train_seconds(run_dir), "test_s": m.seconds, "n_train": None, "n_test": m.labeled}
        extra = {"run": str(run_dir), "threshold": m.threshold, "threshold_source": m.threshold_source}
    else:
        from logllm.baselines.harness import run_bench

        params = {cell.method: options.params[cell.method]} if cell.method in options.params else {}
        row = run_bench(test_dir, methods=[cell.method], seeds=[cell.seed], params=params,
                        threads=options.threads or 1).row(0, named=True)
        result = {"precision": row["precision_mean"], "recall": row["recall_mean"], "f1": row["f1_mean"],
                  "roc_auc": row["roc_auc_mean"], "train_s": row["train_s"], "test_s": row["test_s"],
                  "n_train": row["n_train"], "n_test": row["n_test"]}
    return {
        **asdict(cell), "x": cell.x, **result, **extra,
        "wall_s": time.time() - started,
        "train_data": _data_record(train_dir), "test_data": _data_record(test_dir),
        "settings": cell_settings(options, cell),
        "versions": library_versions(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
