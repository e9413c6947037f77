"""What an experiment runs: its options, the paper's tables, and the cells each table is made of.

A **cell** is one (table, dataset, method, setting, seed) result: one trained-and-tested method on one
prepared folder. The tables (paper numbering):

=============  =======================================================================================
``baselines``  Table II: every method of `logllm bench` and LogLLM, per dataset (setting ``-``)
``cost``       Table III: train and test seconds per method; the *same cells* as ``baselines``
``inputs``     Table IV: LogLLM with ``--input`` regex / raw / template / template-id
``stages``     Table V: LogLLM full, and without stage 1, 2 (2a+2b), 1 and 2, or 3 (`STAGE_VARIANTS`)
``beta``       Fig. 4: LogLLM with oversampling ``beta`` in 0 .. 0.5
``unstable``   LogLLM and five baselines on mutated test splits (`logllm.data.mutate`) at injection
               ratios 0 .. 30%, and on a template-holdout split
=============  =======================================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from logllm.errors import ConfigError

log = logging.getLogger(__name__)

TableName = Literal["baselines", "cost", "inputs", "stages", "beta", "unstable"]
TABLES: tuple[str, ...] = ("baselines", "cost", "inputs", "stages", "beta", "unstable")
LOGLLM = "logllm"
#: Table V's variants: the stages each one skips (METHOD.md section 4, the paper's ablation)
STAGE_VARIANTS: dict[str, tuple[str, ...]] = {
    "full": (), "no-1": ("1",), "no-2": ("2a", "2b"), "no-1-2": ("1", "2a", "2b"), "no-3": ("3",),
}
INPUT_MODES: tuple[str, ...] = ("regex", "raw", "template", "template-id")
BETAS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
RATIOS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3)
UNSTABLE_METHODS: tuple[str, ...] = (LOGLLM, "dt", "knn", "deeplog", "logrobust", "neurallog")
SEED_FIELD = "{seed}"


def parse_data_specs(items: Sequence[str], option: str = "--data") -> dict[str, str]:
    """``NAME=FOLDER`` items (FOLDER may hold ``{seed}``) as a dict; a bad or repeated one is an error."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        name, pattern = name.strip(), pattern.strip()
        if not sep or not name or not pattern:
            raise ConfigError(f"{option} {item!r}: expected NAME=FOLDER, e.g. hdfs=out/hdfs_s{{seed}}")
        if "/" in name or name.startswith("."):
            raise ConfigError(f"{option} {item!r}: the name {name!r} names output folders; use letters, digits, - or _")
        if name in out:
            raise ConfigError(f"{option} {item!r}: dataset {name!r} is given twice")
        out[name] = pattern
    return out


def folder_for(pattern: str, seed: int) -> Path:
    """The prepared folder of one seed: ``pattern`` with ``{seed}`` replaced."""
    return Path(pattern.replace(SEED_FIELD, str(seed)))


@dataclass
class ExperimentOptions:
    """Everything that decides which cells an experiment has and how each is run."""

    data: dict[str, str]
    """dataset name -> prepared folder (``logllm prepare``), ``{seed}`` standing for the seed (the split
    depends on it); without ``{seed}`` every seed uses the same folder (and split)."""
    raw_data: dict[str, str] = field(default_factory=dict)
    """dataset name -> folder prepared with ``--mask none``, for Table IV's ``raw`` input (absent: skipped)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """seeds of training, of the method, and of the test mutations (and of the folder, via ``{seed}``)"""
    config: Path | None = None
    """TOML/JSON config of every LogLLM training (``logllm train --config``); None = the small preset."""
    methods: tuple[str, ...] | None = None
    """methods of ``baselines``, ``cost`` and ``unstable`` (None: every bench method and logllm, or
    `UNSTABLE_METHODS`); ``inputs``, ``stages`` and ``beta`` are LogLLM's own."""
    inputs: tuple[str, ...] = INPUT_MODES
    stages: tuple[str, ...] = tuple(STAGE_VARIANTS)
    betas: tuple[float, ...] = BETAS
    ratios: tuple[float, ...] = RATIOS
    holdout_templates: int = 4
    """templates held out for the unstable table's holdout setting (0: no holdout setting)"""
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    """bench method parameters (``--set METHOD.PARAM=VALUE``)"""
    threads: int | None = None
    """torch CPU threads of bench methods (default 1) and LogLLM training (default torch's); no effect on results"""

    def validate(self) -> ExperimentOptions:
        if not self.data:
            raise ConfigError("--data: give at least one dataset, e.g. --data hdfs=out/hdfs_s{seed}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds {','.join(map(str, self.seeds))}: give distinct seeds, e.g. 0,1,2")
        unknown = sorted(set(self.raw_data) - set(self.data))
        if unknown:
            raise ConfigError(f"--raw-data {unknown[0]}: no --data {unknown[0]}=... to go with it")
        for name, values, allowed in (("--inputs", self.inputs, INPUT_MODES), ("--stages", self.stages, STAGE_VARIANTS)):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ConfigError(f"{name} {bad[0]!r}: not one of {', '.join(allowed)}")
        for name, values in (("--betas", self.betas), ("--ratios", self.ratios)):
            bad = [v for v in values if not 0 <= v < (1 if name == "--betas" else 1.000001)]
            if bad:
                raise ConfigError(f"{name} {bad[0]}: must be in [0, 1)" if name == "--betas" else
                                  f"{name} {bad[0]}: must be in [0, 1] (0.1 = 10% of test sequences)")
        if self.holdout_templates < 0:
            raise ConfigError(f"--holdout-templates {self.holdout_templates}: must be 0 or more")
        for name, pattern in {**self.data, **self.raw_data}.items():
            if SEED_FIELD not in pattern and len(self.seeds) > 1:
                log.warning("experiment: %s=%s has no {seed}: all %d seeds use that one folder (one split)",
                            name, pattern, len(self.seeds))
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads {self.threads}: must be at least 1")
        if self.config is not None and not Path(self.config).is_file():
            raise ConfigError(f"--config {self.config}: file not found")
        return self


@dataclass(frozen=True)
class Cell:
    """One result: ``method`` on ``dataset`` under ``setting`` with ``seed`` (filed under ``table``)."""

    table: str
    dataset: str
    method: str
    setting: str
    """``-`` (baselines), an input mode, a stage variant, ``beta=B``, ``ratio=R`` or ``holdout=K``"""
    seed: int

    @property
    def x(self) -> float | None:
        """The number a figure puts on its x axis (beta, ratio), where the setting has one."""
        name, sep, value = self.setting.partition("=")
        return float(value) if sep and name in ("beta", "ratio") else None

    def label(self) -> str:
        return f"{self.table}/{self.dataset}/{self.method}/{self.setting} seed {self.seed}"


def _number(value: float) -> str:
    return f"{value:g}"


def table_methods(table: str, options: ExperimentOptions, bench_methods: Sequence[str]) -> list[str]:
    """The methods of ``table``: ``options.methods`` where the table takes a choice."""
    if table in ("inputs", "stages", "beta"):
        return [LOGLLM]
    default = [*bench_methods, LOGLLM] if table in ("baselines", "cost") else list(UNSTABLE_METHODS)
    chosen = list(options.methods) if options.methods is not None else default
    known = {*bench_methods, LOGLLM}
    bad = [m for m in chosen if m not in known]
    if bad:
        raise ConfigError(f"--methods: unknown method {bad[0]!r}; known: {', '.join(sorted(known))}")
    return chosen


def beta_notes(options: ExperimentOptions) -> list[str]:
    """Why Fig. 4 would be flat by construction: with distinct pairs of weight one (the small preset)
    oversampling only repeats pairs that are then trained once each, so every beta trains alike."""
    from logllm.config import resolve_config

    config = resolve_config(None, options.config, {})
    if config.distinct_samples and config.distinct_weight == "one":
        return ["beta: this --config trains distinct pairs with distinct_weight 'one', so every beta trains the same "
                "pairs with the same weights (oversampling only repeats pairs); for Fig. 4 use a config that trains "
                "on every sample, e.g. --config benchmarks/decoder_variants/lora_every_sample.toml"]
    return []


def plan(table: str, options: ExperimentOptions, bench_methods: Sequence[str]) -> tuple[list[Cell], list[str]]:
    """The cells of ``table`` in the order they run (seed outermost, so seed 0 of every cell comes
    first), and notes on settings left out (each logged by the caller)."""
    if table not in TABLES:
        raise ConfigError(f"experiment table {table!r}: not one of {', '.join(TABLES)}")
    filed = "baselines" if table == "cost" else table  # Table III is read off Table II's cells
    methods = table_methods(table, options, bench_methods)
    cells: list[Cell] = []
    notes: list[str] = []
    for seed in options.seeds:
        for dataset in options.data:
            if filed == "baselines":
                settings = [(m, "-") for m in methods]
            elif table == "inputs":
                modes = list(options.inputs)
                if "raw" in modes and dataset not in options.raw_data:
                    modes.remove("raw")
                    if seed == options.seeds[0]:
                        notes.append(f"inputs: raw left out for {dataset}: no --raw-data {dataset}=FOLDER "
                                     "(a folder prepared with --mask none)")
                settings = [(LOGLLM, m) for m in modes]
            elif table == "stages":
                settings = [(LOGLLM, v) for v in options.stages]
            elif table == "beta":
                settings = [(LOGLLM, f"beta={_number(b)}") for b in options.betas]
            else:
                conditions = [f"ratio={_number(r)}" for r in options.ratios]
                if options.holdout_templates:
                    conditions.append(f"holdout={options.holdout_templates}")
                settings = [(m, c) for c in conditions for m in methods]
            cells += [Cell(filed, dataset, m, s, seed) for m, s in settings]
    if table == "beta":
        notes += beta_notes(options)
    return cells, notes
