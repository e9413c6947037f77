"""One loader for every run folder: `load_run(RUN)` -> an object with ``score(texts, sequences)``.

A run folder (``logllm train``) holds ``config.json``, ``data_manifest.json`` and ``threshold.json``
for every method; ``config.json``'s ``method`` says what else it holds and how it scores:

- ``logllm`` (or no ``method`` key: runs of earlier versions): ``model/``, read by
  `logllm.model.LogLLM.from_pretrained`;
- any method of `logllm bench` (`logllm.baselines`): ``method/`` (``method.json`` +
  ``state.safetensors``, `Method.save`) and, for methods that read Drain templates,
  ``features/drain.json`` (`logllm.methods.features`); loaded as a `BaselineModel`.

Both answer ``score(texts, sequences, batch_size)`` (sequences of indices into ``texts``, one
anomaly score each, higher = more anomalous), which is all `logllm evaluate` and `logllm detect`
call, so they treat every method alike. A `BaselineModel` also says how its scores are explained
(``explanation``: ``leave-one-out``, ``line-scores`` or ``none``, see `logllm.baselines.base`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from logllm.baselines.base import Method, MethodInput
from logllm.errors import ConfigError
from logllm.methods.features import FeatureSpec, RunFeatures

CONFIG_FILE = "config.json"
THRESHOLD_FILE = "threshold.json"
METHOD_DIR = "method"
LOGLLM = "logllm"


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``config.json`` (ConfigError naming the file when it is missing or not JSON)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder ({CONFIG_FILE} is missing); create one with `logllm train`")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object, found {type(config).__name__}")
    return config


def run_method(run_dir: str | Path) -> str:
    """The method a run folder was trained with (``logllm`` for runs without the key)."""
    return str(read_run_config(run_dir).get("method", LOGLLM))


class BaselineModel:
    """A trained bench method and its run's features, scoring sequences of message texts."""

    def __init__(self, method: Method, features: RunFeatures, config: dict[str, Any] | None = None) -> None:
        self.method = method
        self.features = features
        self.config = config or {}

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def explanation(self) -> str:
        """``leave-one-out`` (its score is a probability), ``line-scores`` or ``none``."""
        return str(self.method.explanation)

    @property
    def explanation_note(self) -> str:
        return str(self.method.explanation_note)

    @property
    def scores_are_probabilities(self) -> bool:
        """Whether scores (and so thresholds) lie in [0, 1]: true of the methods explained by leave-one-out."""
        return self.explanation == "leave-one-out"

    def _input(self, texts: Sequence[str], sequences: Sequence[Sequence[int]]) -> MethodInput:
        resources = self.features.resources(list(texts))
        return MethodInput([np.asarray(s, dtype=np.int64) for s in sequences], resources)

    def score(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], batch_size: int = 64) -> np.ndarray:
        """Anomaly score per sequence (``batch_size`` is accepted for the common interface; unused)."""
        if not sequences:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.method.score(self._input(texts, sequences)), dtype=np.float64)

    def line_scores(self, texts: Sequence[str], sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per sequence, the method's value per line (``explanation == "line-scores"`` only)."""
        return [np.asarray(v, dtype=np.float64) for v in self.method.line_scores(self._input(texts, sequences))]


def load_baseline(run_dir: str | Path, config: dict[str, Any] | None = None, *,
                  vector_fn: Callable[[list[str]], np.ndarray] | None = None,
                  token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None) -> BaselineModel:
    """The `BaselineModel` of a run folder trained with ``logllm train --method NAME`` (not logllm)."""
    from logllm.baselines.harness import load_methods

    run_dir = Path(run_dir)
    config = read_run_config(run_dir) if config is None else config
    name = str(config.get("method", LOGLLM))
    registry = load_methods()
    if name not in registry:
        raise ConfigError(f"{run_dir / CONFIG_FILE}: unknown method {name!r}; known: {', '.join(sorted(registry))}")
    method = registry[name].load(run_dir / METHOD_DIR)
    spec = FeatureSpec.from_dict(config.get("features") or {}, str(run_dir / CONFIG_FILE))
    features = RunFeatures.load(run_dir, spec, vector_fn, token_vector_fn)
    return BaselineModel(method, features, config)


def load_run(run_dir: str | Path, *, vector_fn: Callable[[list[str]], np.ndarray] | None = None,
             token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None) -> Any:
    """The scoring model of any run folder: a `LogLLM` for ``logllm`` runs, else a `BaselineModel`.

    ``vector_fn`` / ``token_vector_fn`` replace a baseline's sentence encoder (tests). A folder without
    ``config.json`` is read as LogLLM (a run folder or a folder written by ``LogLLM.save_pretrained``).
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir) if (run_dir / CONFIG_FILE).is_file() else {}
    if str(config.get("method", LOGLLM)) != LOGLLM:
        return load_baseline(run_dir, config, vector_fn=vector_fn, token_vector_fn=token_vector_fn)
    from logllm.model.logllm import LogLLM

    if config and not (run_dir / "model").is_dir():
        raise ConfigError(f"{run_dir / 'model'}: missing; the run did not finish (resume it with "
                          "`logllm train --resume`)")
    return LogLLM.from_pretrained(run_dir, merge_adapters=True)


__all__ = ["CONFIG_FILE", "LOGLLM", "METHOD_DIR", "THRESHOLD_FILE", "BaselineModel", "load_baseline", "load_run",
           "read_run_config", "run_method"]
