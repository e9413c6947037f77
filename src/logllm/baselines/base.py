"""The interface every baseline implements, and the inputs the bench harness hands it.

The harness (not the method) decides what a method may see, so that the rules of the comparison
hold by construction:

- test inputs never carry labels;
- a semi-supervised method's training input holds only normal sequences, with no labels;
- a training-free method gets normal training sequences as its reference set and no labels.

A method returns a score per sequence (higher = more anomalous) and a boolean prediction made with
a threshold it chose from training data (or from the validation split the harness may hand it);
never from test labels.

A fitted method is saved with ``save(folder)`` and read back with ``cls.load(folder)``: its
parameters and seed in ``method.json``, its fitted state in ``state.safetensors`` (arrays only: torch
weights, fitted tables; never a pickle). What a method keeps must not depend on the message table of
the data it was fitted on (message ids): per-message features are read from the ``Resources`` of the
input being scored, so a loaded method scores new messages the same way (`logllm.methods`).
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from logllm.errors import ConfigError

Supervision = Literal["supervised", "semi-supervised", "training-free"]
#: How a method explains a score line by line (`Method.explanation`):
#: ``leave-one-out``: the drop of its probability without the line (`logllm.explain`);
#: ``line-scores``: a value per line from the method itself (`Method.line_scores`);
#: ``none``: no per-line explanation.
Explanation = Literal["leave-one-out", "line-scores", "none"]

METHOD_FILE = "method.json"  #: a saved method's name, seed, parameters and state description
STATE_FILE = "state.safetensors"  #: a saved method's arrays
STATE_FORMAT = 1
State = tuple[dict[str, np.ndarray], dict[str, Any]]
C = TypeVar("C")


@dataclass
class Resources:
    """Per-message information shared by all methods of one bench run (computed once, lazily).

    Message ids index ``message_texts``; ``template_of_message[m]`` is the Drain template id of
    message ``m`` (templates fitted on the training split only; id 0 is "unknown").
    """

    message_texts: list[str]
    template_of_message: np.ndarray
    template_texts: list[str]
    _vectors: np.ndarray | None = field(default=None, repr=False)
    _vector_fn: Callable[[list[str]], np.ndarray] | None = field(default=None, repr=False)

    @property
    def n_templates(self) -> int:
        return len(self.template_texts)

    def message_vectors(self) -> np.ndarray:
        """Semantic vectors (n_messages, width) from the `small` preset's encoder, computed once."""
        if self._vectors is None:
            if self._vector_fn is None:
                from logllm.embeddings import encode_texts

                self._vector_fn = encode_texts
            self._vectors = np.asarray(self._vector_fn(self.message_texts), dtype=np.float32)
        return self._vectors


@dataclass
class MethodInput:
    """Sequences of one split as a method sees them: message ids and template ids per sequence."""

    messages: list[np.ndarray]
    resources: Resources
    labels: np.ndarray | None = None  # only for supervised training (and validation)

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def templates(self) -> list[np.ndarray]:
        tom = self.resources.template_of_message
        return [tom[m] for m in self.messages]


class Method(ABC):
    """A baseline detector. Subclasses set ``name``, ``supervision`` and a paper citation."""

    name: ClassVar[str]
    supervision: ClassVar[Supervision]
    paper: ClassVar[str] = ""
    # What shared per-message work the method reads, so that the bench computes only that
    # (`logllm.baselines.shared`); undeclared reads still work, computed on first use.
    uses_templates: ClassVar[bool] = True  # Drain template ids (MethodInput.templates, n_templates)
    uses_vectors: ClassVar[bool] = True  # Resources.message_vectors (MiniLM sentence vectors)
    needs_token_vectors: ClassVar[bool] = False  # BenchResources.message_token_vectors

    #: the parameters the method reads (``threads`` is always allowed); None when the method checks
    #: them itself (a config dataclass, `common.make_config`)
    param_names: ClassVar[frozenset[str] | None] = None

    def __init__(self, seed: int = 0, **params: object):
        known = self.param_names
        if known is not None:
            unknown = sorted(set(params) - set(known) - {"threads"})
            if unknown:
                raise ConfigError(f"{self.name}: unknown parameter(s) {unknown}; valid: {sorted(known | {'threads'})}")
        self.seed = seed
        self.params = params

    @abstractmethod
    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        """Train on ``train`` (labels only for supervised methods); choose the decision threshold."""

    @abstractmethod
    def score(self, data: MethodInput) -> np.ndarray:
        """Anomaly score per sequence, float64, higher = more anomalous."""

    @abstractmethod
    def predict(self, data: MethodInput) -> np.ndarray:
        """Boolean anomaly decision per sequence at the threshold chosen in ``fit``."""

    # -- explanations ----------------------------------------------------------------------------
    #: how a score is explained line by line (see `Explanation`); ``explanation_note`` says it in words
    explanation: Explanation = "none"
    explanation_note: ClassVar[str] = "this method gives no per-line explanation"

    def line_scores(self, data: MethodInput) -> list[np.ndarray]:
        """Per sequence, a value per message (higher = more to blame), for ``explanation = "line-scores"``."""
        raise NotImplementedError(f"{self.name}: no per-line scores ({self.explanation_note})")

    # -- saving ----------------------------------------------------------------------------------
    def get_state(self) -> State:
        """The fitted state: named arrays (saved as safetensors) and JSON-able values."""
        raise NotImplementedError(f"{self.name}: saving is not implemented")

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """Restore what `get_state` returned (on an instance built with the same seed and parameters)."""
        raise NotImplementedError(f"{self.name}: loading is not implemented")

    def save(self, folder: str | Path) -> Path:
        """Write ``method.json`` and ``state.safetensors`` into ``folder`` (created); returns it."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        arrays, info = self.get_state()
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(folder / STATE_FILE))
        meta = {"format_version": STATE_FORMAT, "method": self.name, "supervision": self.supervision,
                "seed": self.seed, "params": _jsonable(self.params), "state": _jsonable(info)}
        (folder / METHOD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Method:
        """A method saved by `save`, ready to score. Raises ConfigError for another method's folder."""
        from safetensors.numpy import load_file

        meta = read_method_meta(folder)
        if meta["method"] != cls.name:
            raise ConfigError(f"{Path(folder) / METHOD_FILE}: holds method {meta['method']!r}, not {cls.name!r}")
        method = cls(seed=int(meta["seed"]), **dict(meta.get("params") or {}))
        method.set_state(load_file(str(Path(folder) / STATE_FILE)), dict(meta.get("state") or {}))
        return method


def read_method_meta(folder: str | Path) -> dict[str, Any]:
    """``method.json`` of a saved method, checked (file, JSON, format version, the keys it needs)."""
    path = Path(folder) / METHOD_FILE
    if not path.is_file() or not (Path(folder) / STATE_FILE).is_file():
        raise ConfigError(f"{folder}: not a saved method ({METHOD_FILE} or {STATE_FILE} is missing); "
                          "train one with `logllm train --method NAME`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("method"), str) or "seed" not in meta:
        raise ConfigError(f"{path}: expected an object with 'method' and 'seed'; was it written by Method.save?")
    if int(meta.get("format_version", 0)) > STATE_FORMAT:
        raise ConfigError(f"{path}: format_version {meta['format_version']} is newer than this logllm reads "
                          f"({STATE_FORMAT}); upgrade logllm")
    return meta


def param(params: dict, name: str, default, kind: type = float):
    """A method parameter (from `--set method.name=value`), converted to ``kind``, with a clear error."""
    value = params.get(name, default)
    if value is None:
        return None
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("1", "true", "yes")
        return kind(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"parameter {name}={value!r}: expected {kind.__name__}") from err


def make_config(cls: type[C], params: dict[str, object], method: str) -> C:
    """Build a config dataclass from ``Method.params``; unknown names raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"{method}: unknown parameter(s) {unknown}; valid: {sorted(fields)}")
    values = {}
    for name, value in params.items():
        default = getattr(cls, name, None)
        # Numbers arrive as strings from a command line; coerce to the default's type.
        if isinstance(default, bool) and isinstance(value, str):
            value = value.lower() in ("1", "true", "yes")
        elif isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
            try:
                value = type(default)(value)
            except ValueError as err:
                raise ConfigError(f"{method}: parameter {name}={value!r} is not a {type(default).__name__}") from err
        values[name] = value
    return cls(**values)


def module_arrays(module: Any, prefix: str) -> dict[str, np.ndarray]:
    """A torch module's parameters and buffers as named numpy arrays (for safetensors)."""
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module(module: Any, arrays: dict[str, np.ndarray], prefix: str, name: str) -> None:
    """Load the arrays under ``prefix`` into a torch ``module``; missing or unexpected keys and other
    shapes fail loudly (a state saved by another version or with other parameters). Leaves it in eval mode."""
    import torch

    state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in arrays.items() if k.startswith(prefix)}
    expected = module.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        raise ConfigError(f"{name}: saved state does not fit the module (missing {missing[:5]}, unexpected "
                          f"{unexpected[:5]}, other shapes {wrong[:5]}); save and load with the same logllm")
    module.load_state_dict(state)
    module.eval()


def _jsonable(value: Any) -> Any:
    """Parameters and state values as JSON types (numpy scalars and tuples included)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available to `logllm bench --methods NAME`."""
    REGISTRY[cls.name] = cls
    return cls
