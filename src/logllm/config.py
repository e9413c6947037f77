"""Training configuration as typed dataclasses: stages, optimiser, checkpoints, presets, TOML in and out.

A run is fully described by one :class:`TrainConfig`. It is built from a preset (``small`` for the
CPU, ``paper`` for the paper's QLoRA setting on a GPU), then a config file (TOML or JSON) may change
any field, then command-line flags change a few common ones. The resolved config is written to
``RUN/config.json`` so every run records exactly what it did.

A config file names only what it changes, for example::

    preset = "small"
    seed = 1
    micro_batch = 8

    [model]
    decoder = "minilm-causal"

    [[stages]]
    name = "3"
    epochs = 2
    max_samples = 6000

Stages in a file are matched to the preset's stages by ``name``; keys not given keep the preset's value.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from logllm.errors import ConfigError
from logllm.model.config import ModelConfig
from logllm.model.config import preset as preset_model

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Part = Literal["encoder", "projector", "decoder"]
PARTS: tuple[str, ...] = ("encoder", "projector", "decoder")
STAGE_NAMES: tuple[str, ...] = ("1", "2a", "2b", "3")
PresetName = Literal["small", "paper"]


@dataclass
class StageConfig:
    """One training stage (paper Section IV-C; the reference splits stage 2 in two)."""

    name: str
    """Stage name: ``1``, ``2a``, ``2b`` or ``3``."""
    trainable: list[str]
    """Parts whose parameters this stage trains (``encoder``, ``projector``, ``decoder``); the rest stay frozen."""
    lr: float
    """Initial learning rate of AdamW in this stage."""
    epochs: int = 1
    """Passes over the (oversampled, shuffled) training set, each capped at ``max_samples``."""
    max_samples: int | None = None
    """At most this many samples per epoch (a fresh seeded random subset each epoch); None = all."""
    skip: bool = False
    """Skip this stage entirely (the paper's ablation, Table V)."""

    def validate(self, where: str = "stage") -> None:
        if self.name not in STAGE_NAMES:
            raise ConfigError(f"{where}: name {self.name!r} is not a stage; use one of {list(STAGE_NAMES)}")
        bad = [p for p in self.trainable if p not in PARTS]
        if bad or not self.trainable:
            raise ConfigError(f"{where} {self.name}: trainable={self.trainable!r}; "
                              f"give a non-empty list of {list(PARTS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"{where} {self.name}: lr={self.lr!r} must be a positive number")
        if self.epochs < 1:
            raise ConfigError(f"{where} {self.name}: epochs={self.epochs!r} must be at least 1")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"{where} {self.name}: max_samples={self.max_samples!r} must be at least 1 "
                              "(or left out for all samples)")


def paper_stages() -> list[StageConfig]:
    """The paper's stages and defaults (METHOD.md section 4)."""
    return [
        StageConfig("1", ["decoder"], lr=5e-4, epochs=1, max_samples=1000),
        StageConfig("2a", ["projector"], lr=5e-4, epochs=1),
        StageConfig("2b", ["projector", "encoder"], lr=5e-5, epochs=1),
        StageConfig("3", ["encoder", "projector", "decoder"], lr=5e-5, epochs=2),
    ]


AUTOCAST_CHOICES: tuple[str | None, ...] = (None, "bfloat16", "auto")
OPTIMIZER_NAMES: tuple[str, ...] = ("adamw",)
"""Values of ``TrainConfig.optimizer`` (built in ``logllm.training.optim``)."""
SCHEDULER_NAMES: tuple[str, ...] = ("step",)
"""Values of ``TrainConfig.scheduler`` (built in ``logllm.training.optim``)."""
DISTINCT_WEIGHTS: tuple[str, ...] = ("count", "sqrt", "one")
"""Values of ``TrainConfig.distinct_weight`` (applied in ``logllm.training.sampling``)."""


@dataclass
class TrainConfig:
    """Everything one training run needs besides the data (written to ``RUN/config.json``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Encoder, decoder, sizes, LoRA and quantisation (see ``logllm.model.config``)."""
    stages: list[StageConfig] = field(default_factory=paper_stages)
    """The stages in order; each says which parts it trains."""
    preset: str = "custom"
    """The preset this config was built from (informational)."""
    seed: int = 0
    """Seeds model initialisation, oversampling, shuffling and dropout."""
    micro_batch: int = 4
    """Sequences per forward/backward pass."""
    grad_accum: int = 4
    """Micro-batches per optimiser step (effective batch = micro_batch * grad_accum; paper: 4 x 4 = 16)."""
    optimizer: str = "adamw"
    """The optimizer each stage trains with (``OPTIMIZER_NAMES``): "adamw", AdamW with ``weight_decay``."""
    weight_decay: float = 0.01
    """AdamW weight decay (torch's default, as the reference uses)."""
    scheduler: str = "step"
    """The lr schedule of each stage (``SCHEDULER_NAMES``): "step", set by ``lr_decay`` and ``lr_decays``."""
    lr_decay: float = 0.7
    """Step schedule: multiply the lr by this factor ``lr_decays`` times per stage, evenly spaced (the
    reference: 0.7, 10)."""
    lr_decays: int = 10
    """Step schedule: how many times per stage the lr is decayed (0 = constant lr)."""
    max_grad_norm: float | None = None
    """Clip the gradient norm to this value before each step; None = no clipping (the reference's choice)."""
    group_by_length: int = 0
    """Sort each run of this many micro-batches of an epoch's shuffled samples by (length, label,
    messages), so repeats share a micro-batch, where `loss` computes them once; cut it into
    micro-batches and shuffle those: less padding and fewer decoder rows per step (0 = plain order)."""
    distinct_samples: bool = False
    """Train on each distinct (sequence, label) pair of the oversampled training set once per epoch,
    its loss weighted by how often the pair occurs, instead of on every repeat (masked logs repeat whole
    sequences: HDFS_2pct's 11,457 oversampled samples are 1,242 pairs). ``max_samples`` then counts pairs."""
    distinct_weight: str = "count"
    """With ``distinct_samples``, the loss weight of a pair (``DISTINCT_WEIGHTS``): "count" (how often it
    occurs: the expected loss of training on every repeat), "sqrt" (its square root: rare patterns count
    more, frequent ones less) or "one" (every distinct pair alike)."""
    autocast: str | None = None
    """Mixed precision for training's forward passes: "bfloat16" runs them under ``torch.autocast``
    (matmuls in bfloat16; weights, gradients and AdamW stay float32), "auto" does so on a CPU that
    computes bfloat16 natively (AVX512-BF16 / AMX) and else not (on a GPU, use ``model.dtype``), None
    ("none" in a config file) never. Scoring (validation, threshold, evaluate) is always in the model's dtype."""
    beta: float = 0.3
    """Minority oversampling target proportion (METHOD.md section 4); 0 turns oversampling off."""
    checkpoint_every: int = 0
    """Also checkpoint every N optimiser steps (0 = only at the end of each stage)."""
    keep_step_checkpoints: int | None = 2
    """Keep only the newest N every-N-steps checkpoints (stage-end ones are always kept); None = keep all."""
    early_stopping_patience: int | None = None
    """Stop stage 3 after this many validation checks without improvement of the validation loss (None = off)."""
    eval_every: int = 0
    """With early stopping: check the validation loss every N optimiser steps (0 = at the end of each epoch)."""
    score_batch_size: int = 64
    """Sequences per batch when scoring (validation, threshold); does not change scores."""
    threads: int | None = None
    """torch CPU threads (None = torch's default)."""

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum

    def stage(self, name: str) -> StageConfig:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"no stage named {name!r}; stages are {[s.name for s in self.stages]}")

    def validate(self) -> TrainConfig:
        """Check every field; raises ConfigError naming the option and the bad value."""
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"stages: duplicate stage names in {names}")
        for s in self.stages:
            s.validate()
        if self.group_by_length < 0:
            raise ConfigError(f"group_by_length={self.group_by_length!r} must be >= 0 (0 = off)")
        for name in ("micro_batch", "grad_accum", "score_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be at least 1")
        if self.optimizer not in OPTIMIZER_NAMES:
            raise ConfigError(f"optimizer={self.optimizer!r} is not an optimizer; use one of {list(OPTIMIZER_NAMES)}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise ConfigError(f"scheduler={self.scheduler!r} is not a scheduler; use one of {list(SCHEDULER_NAMES)}")
        if self.distinct_weight not in DISTINCT_WEIGHTS:
            raise ConfigError(f"distinct_weight={self.distinct_weight!r} must be one of {list(DISTINCT_WEIGHTS)}")
        if self.autocast not in AUTOCAST_CHOICES:
            raise ConfigError(f"autocast={self.autocast!r} must be \"none\", \"bfloat16\" or \"auto\"")
        if not 0 <= self.beta < 1:
            raise ConfigError(f"beta={self.beta!r} must be in [0, 1) (0.3 in the paper; 0 = no oversampling)")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay={self.lr_decay!r} must be in (0, 1]")
        if self.lr_decays < 0 or self.checkpoint_every < 0 or self.eval_every < 0:
            raise ConfigError("lr_decays, checkpoint_every and eval_every must be >= 0 "
                              f"(got {self.lr_decays}, {self.checkpoint_every}, {self.eval_every})")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"early_stopping_patience={self.early_stopping_patience!r} must be >= 1 or unset")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads={self.threads!r} must be at least 1")
        if all(s.skip for s in self.stages):
            raise ConfigError("every stage is skipped; nothing would be trained")
        return self

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        out["model"] = self.model.to_dict()
        out["stages"] = [asdict(s) for s in self.stages]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        """A full config from a dict (e.g. a run's config.json); unknown keys are errors."""
        return apply_overrides(TrainConfig(), data, where)

    def save(self, path: str | Path) -> Path:
        """Write as TOML (``.toml``) or JSON (anything else)."""
        path = Path(path)
        if path.suffix == ".toml":
            path.write_text(to_toml(self.to_dict()))
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path


def _small_stages() -> list[StageConfig]:
    # The paper's stage structure and learning rates with per-epoch sample caps, so that the whole run
    # with the SmolLM2 decoder trains in about 15 minutes on a 2-core CPU. The preset trains on distinct
    # (sequence, label) pairs, so a cap counts pairs: 500 in stages 1, 2a and 2b (the LLM learns the
    # answer template within a few steps), and three stage-3 epochs of up to 1,250 pairs (all of
    # HDFS_2pct's ~1,240). Chosen on validation data (docs/model.md, "Decoders and results").
    return [
        StageConfig("1", ["decoder"], lr=5e-4, epochs=1, max_samples=500),
        StageConfig("2a", ["projector"], lr=5e-4, epochs=1, max_samples=500),
        StageConfig("2b", ["projector", "encoder"], lr=5e-5, epochs=1, max_samples=500),
        StageConfig("3", ["encoder", "projector", "decoder"], lr=5e-5, epochs=3, max_samples=1250),
    ]


def preset(name: str) -> TrainConfig:
    """The named preset: ``small`` (CPU, minutes) or ``paper`` (the paper's setting, needs a CUDA GPU)."""
    if name == "small":
        return TrainConfig(
            model=preset_model("small"), stages=_small_stages(), preset="small",
            micro_batch=16, grad_accum=1, checkpoint_every=100,
            autocast="auto",  # bfloat16 matmuls where the CPU has them natively: 4x the float32 rate here
            distinct_samples=True, distinct_weight="one",  # each distinct pair once per epoch, all alike
        )
    if name == "paper":
        return TrainConfig(
            model=preset_model("paper"), stages=paper_stages(), preset="paper",
            micro_batch=4, grad_accum=4, checkpoint_every=500,
        )
    raise ConfigError(f"--preset {name!r} is not a preset; use one of ['small', 'paper']")


PRESET_NAMES: tuple[str, ...] = ("small", "paper")


# -- overrides from files and dicts --------------------------------------------------------------

def _none(value: Any) -> Any:
    """TOML has no null: the string "none" in a file means None (unset), also inside nested tables."""
    if isinstance(value, dict):
        return {k: _none(v) for k, v in value.items()}
    return None if isinstance(value, str) and value.lower() == "none" else value


def _coerce(value: Any, current: Any, where: str) -> Any:
    """Check a scalar from a file against the current value's type (int may stand for float)."""
    value = _none(value)
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, (int, float, str, list)) and not isinstance(value, type(current)):
        raise ConfigError(f"{where}: expected {type(current).__name__}, got {value!r}")
    return value


def _apply_stage(stage: StageConfig, data: dict[str, Any], where: str) -> StageConfig:
    known = {f.name for f in fields(StageConfig)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown stage key {key!r}; known keys: {sorted(known)}")
        current = getattr(stage, key)
        value = _none(value)
        if key == "max_samples" and value is not None and not isinstance(value, int):
            raise ConfigError(f"{where}.max_samples: expected an integer, got {value!r}")
        changes[key] = value if key == "max_samples" else _coerce(value, current, f"{where}.{key}")
    return replace(stage, **changes)


def apply_overrides(config: TrainConfig, data: dict[str, Any], where: str = "config") -> TrainConfig:
    """A copy of ``config`` with the values in ``data`` (nested like ``to_dict``) applied."""
    config = copy.deepcopy(config)
    known = {f.name for f in fields(TrainConfig)}
    optional = {"max_grad_norm", "early_stopping_patience", "keep_step_checkpoints", "threads", "autocast"}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {sorted(known)}")
        if key == "model":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [model] must be a table, got {value!r}")
            merged = {**config.model.to_dict(), **{k: _none(v) for k, v in value.items()}}
            try:
                config.model = ModelConfig.from_dict(merged)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"{where} [model]: {err}") from err
        elif key == "stages":
            if not isinstance(value, list):
                raise ConfigError(f"{where}: stages must be a list of tables ([[stages]]), got {value!r}")
            stages = list(config.stages)
            for i, entry in enumerate(value):
                if not isinstance(entry, dict) or "name" not in entry:
                    raise ConfigError(f"{where}: stages[{i}] must be a table with a name, got {entry!r}")
                name = str(entry["name"])
                hits = [j for j, s in enumerate(stages) if s.name == name]
                if hits:
                    stages[hits[0]] = _apply_stage(stages[hits[0]], entry, f"{where} stages[{name}]")
                else:
                    missing = {"trainable", "lr"} - set(entry)
                    if missing:
                        raise ConfigError(f"{where}: stage {name!r} is new, so it needs {sorted(missing)}")
                    stages.append(_apply_stage(StageConfig(name, [], 1.0), entry, f"{where} stages[{name}]"))
            config.stages = stages
        elif key in optional or key == "preset":
            value = _none(value)
            if value is not None and not isinstance(value, (int, float, str)):
                raise ConfigError(f"{where}: {key} expected a number, got {value!r}")
            setattr(config, key, value)
        else:
            setattr(config, key, _coerce(value, getattr(config, key), f"{where}: {key}"))
    return config


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or JSON config file into a dict; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: invalid TOML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of options at the top level")
    return data


def resolve_config(
    preset_name: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Preset, then config file, then explicit overrides (CLI flags); validated.

    The preset is ``preset_name`` if given, else the file's ``preset`` key, else ``small``.
    """
    data = load_config_file(config_file) if config_file is not None else {}
    name = preset_name or data.get("preset") or "small"
    config = preset(str(name))
    if data:
        config = apply_overrides(config, {k: v for k, v in data.items() if k != "preset"}, str(config_file))
    if overrides:
        config = apply_overrides(config, overrides, "command line")
    return config.validate()


# -- TOML writing (the config is a flat structure: scalars, lists of scalars, tables, arrays of tables)

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def _toml_table(data: dict[str, Any], prefix: str, lines: list[str]) -> None:
    tables, arrays = [], []
    for key, value in data.items():
        if value is None:  # TOML has no null; "none" reads back as None (a missing key would mean "keep")
            lines.append(f'{key} = "none"')
        elif isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            arrays.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables:
        lines.extend(["", f"[{prefix}{key}]"])
        _toml_table(value, f"{prefix}{key}.", lines)
    for key, items in arrays:
        for item in items:
            lines.extend(["", f"[[{prefix}{key}]]"])
            _toml_table(item, f"{prefix}{key}.", lines)


def to_toml(data: dict[str, Any]) -> str:
    """TOML text for a dict of scalars, lists, nested tables and lists of tables (None written as "none")."""
    lines: list[str] = []
    _toml_table(data, "", lines)
    return "\n".join(lines).lstrip("\n") + "\n"
