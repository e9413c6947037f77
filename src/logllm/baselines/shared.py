"""The per-message work a bench run shares between methods, done only when a selected method needs it.

Three pieces, each computed at most once per run, the first time a method that declares a use of it
is about to start (so that a bench stopped early has not paid for what no finished method used, and
so that no method's timing carries shared work):

- Drain templates (`templates.load_or_fit_templates`), for methods with ``uses_templates``
  (KNN, DT, CNN, DeepLog, LogAnomaly, LogBERT, FastLogAD); LogRobust, NeuralLog, PLELog, RAPID
  and a LogLLM run folder read message ids only;
- MiniLM sentence vectors per message (``Resources.message_vectors``), for ``uses_vectors``;
- MiniLM token vectors per message (``BenchResources.message_token_vectors``), for
  ``needs_token_vectors`` (RAPID).

The declarations are class attributes of each `Method` (see `base.Method`). A method that reads a
piece it did not declare still gets the real thing, computed on its first use (then inside that
method's own timing): templates are fitted on first access (`LazyResources`), vectors are computed
by `Resources.message_vectors` on its first call.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

import numpy as np

from logllm.baselines.base import Method
from logllm.baselines.templates import BenchResources, DrainConfig, TemplateTable, load_or_fit_templates
from logllm.data.dataset import PreparedData
from logllm.embeddings import Pooling

log = logging.getLogger(__name__)


class LazyResources(BenchResources):
    """`BenchResources` whose Drain templates are fitted (or read from the folder) on first access.

    ``template_of_message`` and ``template_texts`` are properties here: reading either one loads the
    table through ``loader``; until then `templates_loaded` is False.
    """

    def __init__(self, message_texts: list[str], loader: Callable[[], TemplateTable],
                 vector_fn: Callable[[list[str]], np.ndarray] | None = None,
                 token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None) -> None:
        self._loader = loader
        self._table: TemplateTable | None = None
        super().__init__(message_texts=message_texts, template_of_message=None,  # type: ignore[arg-type]
                         template_texts=None, _vector_fn=vector_fn,  # type: ignore[arg-type]
                         _token_vector_fn=token_vector_fn)

    @property
    def templates_loaded(self) -> bool:
        return self._table is not None

    def table(self) -> TemplateTable:
        """The template table, loaded on the first call."""
        if self._table is None:
            self._table = self._loader()
        return self._table

    @property  # type: ignore[override]
    def template_of_message(self) -> np.ndarray:
        return self.table().template_of_message

    @template_of_message.setter
    def template_of_message(self, value: np.ndarray | None) -> None:
        if value is not None:
            raise AttributeError("LazyResources: templates come from its loader, not assignment")

    @property  # type: ignore[override]
    def template_texts(self) -> list[str]:
        return self.table().template_texts

    @template_texts.setter
    def template_texts(self, value: list[str] | None) -> None:
        if value is not None:
            raise AttributeError("LazyResources: templates come from its loader, not assignment")

    def __repr__(self) -> str:  # the dataclass repr would load the templates
        state = f"{self.n_templates} templates" if self._table is not None else "templates not loaded"
        return f"LazyResources({len(self.message_texts)} messages, {state})"


def needs(cls: type[Method]) -> dict[str, bool]:
    """What shared work a method class declares (undeclared: templates and vectors, no token vectors)."""
    return {"templates": bool(getattr(cls, "uses_templates", True)),
            "vectors": bool(getattr(cls, "uses_vectors", True)),
            "token_vectors": bool(getattr(cls, "needs_token_vectors", False))}


class SharedWork:
    """The shared resources of one bench run and the seconds each piece took (``seconds``)."""

    def __init__(self, data: PreparedData, drain: DrainConfig | None = None,
                 vector_fn: Callable[[list[str]], np.ndarray] | None = None,
                 token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None,
                 pooling: Pooling = "mean") -> None:
        self.data = data
        self.drain = drain or DrainConfig()
        if vector_fn is None:
            from logllm.embeddings import encode_texts

            vector_fn = functools.partial(encode_texts, pooling=pooling)
        self.seconds: dict[str, float] = {}
        self._done: set[str] = set()
        self.resources = LazyResources(list(data.messages), self._fit_templates, vector_fn, token_vector_fn)

    def _fit_templates(self) -> TemplateTable:
        log.info("shared: Drain templates of %d messages (train split) ...", len(self.resources.message_texts))
        t0 = time.perf_counter()
        table = load_or_fit_templates(self.data, self.drain)
        self.seconds["templates_s"] = time.perf_counter() - t0
        log.info("shared: %d Drain templates in %.1fs", len(table.template_texts) - 1, self.seconds["templates_s"])
        return table

    @property
    def templates_loaded(self) -> bool:
        return self.resources.templates_loaded

    @property
    def n_templates(self) -> int | None:
        """Templates including "unknown" (id 0), or None when no method needed them."""
        return self.resources.n_templates if self.templates_loaded else None

    def prepare_for(self, cls: type[Method]) -> BenchResources:
        """Compute what ``cls`` declares it uses and has not been computed yet; return the resources."""
        need = needs(cls)
        name = getattr(cls, "name", cls.__name__)
        if need["templates"] and not self.templates_loaded:
            self.resources.table()
        if need["vectors"]:
            self._once("message_vectors_s", f"MiniLM message vectors (for {name})", self.resources.message_vectors)
        if need["token_vectors"]:
            self._once("token_vectors_s", f"MiniLM token vectors (for {name})", self.resources.message_token_vectors)
        return self.resources

    def _once(self, key: str, what: str, fn: Callable[[], object]) -> None:
        if key in self._done:
            return
        self._done.add(key)
        log.info("shared: %s of %d messages ...", what, len(self.resources.message_texts))
        t0 = time.perf_counter()
        fn()  # cached by the resources: a method that already asked for it made this call instant
        self.seconds[key] = time.perf_counter() - t0
        log.info("shared: %s in %.1fs", what, self.seconds[key])


__all__ = ["LazyResources", "SharedWork", "needs"]
