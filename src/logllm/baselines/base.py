"""The interface every baseline implements, and the inputs the bench harness hands it.

The harness (not the method) decides what a method may see, so that the rules of the comparison
hold by construction:

- test inputs never carry labels;
- a semi-supervised method's training input holds only normal sequences, with no labels;
- a training-free method gets normal training sequences as its reference set and no labels.

A method returns a score per sequence (higher = more anomalous) and a boolean prediction made with
a threshold it chose from training data (or from the validation split the harness may hand it);
never from test labels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np

Supervision = Literal["supervised", "semi-supervised", "training-free"]


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

    def __init__(self, seed: int = 0, **params: object):
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


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available to `logllm bench --methods NAME`."""
    REGISTRY[cls.name] = cls
    return cls
