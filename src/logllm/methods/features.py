"""Message texts -> the per-message features a baseline method reads, the same at training and detection.

A baseline reads, per message of the sequences it scores, some of: a Drain template id, a sentence
vector, token vectors (`logllm.baselines.base.Resources`). At training time they are computed for
the prepared folder's messages; a deployed run must compute them for any new masked text the same
way. `RunFeatures` does that from what the run recorded:

- **Drain templates**: the training messages in the order Drain saw them, in
  ``RUN/features/drain.json`` with the Drain settings and the resulting templates. Loading fits Drain
  on them again (`baselines.templates.DrainMatcher`; Drain is deterministic in its input order)
  and checks that the templates come out equal, so a new text gets the template id it would have
  got at training time, or 0 ("unknown") when it matches no training template. drain3's own state
  file is not used: it is jsonpickle, which builds arbitrary objects when read.
- **sentence vectors** and **token vectors**: recomputed from the encoder named in ``config.json``
  (``features.encoder``, ``features.pooling``), each distinct text once (a bounded cache).

Only what the method declares (``uses_templates``, ``uses_vectors``, ``needs_token_vectors``) is
recorded and computed.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logllm.baselines.base import Method
from logllm.baselines.shared import LazyResources
from logllm.baselines.templates import DrainConfig, DrainMatcher, TemplateTable
from logllm.embeddings import Pooling
from logllm.errors import ConfigError

log = logging.getLogger(__name__)

FEATURES_DIR = "features"
DRAIN_FILE = "drain.json"
MAX_CACHED_TEXTS = 200_000


@dataclass(frozen=True)
class FeatureSpec:
    """Which per-message features a run's method reads, and the encoder for the vectors."""

    templates: bool
    vectors: bool
    token_vectors: bool
    encoder: str = "minilm"
    """Sentence encoder (alias, Hugging Face id or path) for message and token vectors."""
    pooling: Pooling = "mean"
    """How sentence vectors are pooled (as `logllm bench --pooling`)."""

    @classmethod
    def of(cls, method: type[Method], encoder: str = "minilm", pooling: Pooling = "mean") -> FeatureSpec:
        return cls(bool(getattr(method, "uses_templates", True)), bool(getattr(method, "uses_vectors", True)),
                   bool(getattr(method, "needs_token_vectors", False)), encoder, pooling)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> FeatureSpec:
        try:
            return cls(bool(d["templates"]), bool(d["vectors"]), bool(d["token_vectors"]), str(d["encoder"]),
                       d["pooling"])
        except (KeyError, TypeError) as err:
            raise ConfigError(f"{where}: 'features' must hold templates, vectors, token_vectors, encoder and "
                              f"pooling; found {d!r}") from err


class _TextCache:
    """Vectors by text, each distinct text computed once (cleared past ``MAX_CACHED_TEXTS``)."""

    def __init__(self, fn: Callable[[list[str]], Any]) -> None:
        self.fn = fn
        self.cache: dict[str, Any] = {}

    def __call__(self, texts: list[str]) -> list[Any]:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            if len(self.cache) + len(todo) > MAX_CACHED_TEXTS:
                log.info("more than %d distinct messages cached: vector cache restarted", MAX_CACHED_TEXTS)
                self.cache = {}
            self.cache.update(zip(todo, self.fn(todo)))
        return [self.cache[t] for t in texts]


class RunFeatures:
    """Per-message features of a run for any list of message texts (`resources`).

    ``vector_fn`` / ``token_vector_fn`` replace the encoder (tests); by default they are the
    `logllm.embeddings` / `logllm.baselines.templates` encoders with the spec's encoder and pooling.
    """

    def __init__(self, spec: FeatureSpec, matcher: DrainMatcher | None = None,
                 vector_fn: Callable[[list[str]], np.ndarray] | None = None,
                 token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None) -> None:
        if spec.templates and matcher is None:
            raise ConfigError("the method reads Drain templates but the run holds no Drain state "
                              f"({FEATURES_DIR}/{DRAIN_FILE})")
        self.spec = spec
        self.matcher = matcher
        if vector_fn is None:
            from logllm.embeddings import encode_texts

            vector_fn = functools.partial(encode_texts, encoder=spec.encoder, pooling=spec.pooling)
        if token_vector_fn is None:
            from logllm.baselines.templates import encode_tokens

            token_vector_fn = functools.partial(encode_tokens, encoder=spec.encoder)
        self._vectors = _TextCache(vector_fn)
        self._tokens = _TextCache(token_vector_fn)
        self._template_ids: dict[str, int] = {}

    def template_ids(self, texts: list[str]) -> np.ndarray:
        """Template id of each text by the run's Drain state (0 = unknown)."""
        if self.matcher is None:
            raise ConfigError("this run's method does not read Drain templates")
        todo = [t for t in dict.fromkeys(texts) if t not in self._template_ids]
        if todo:
            if len(self._template_ids) + len(todo) > MAX_CACHED_TEXTS:
                self._template_ids = {}
            ids, _ = self.matcher.assign(todo)
            self._template_ids.update(zip(todo, ids.tolist()))
        return np.asarray([self._template_ids[t] for t in texts], dtype=np.int64)

    def resources(self, texts: list[str]) -> LazyResources:
        """The `Resources` of ``texts``: message ids are positions in ``texts``; templates and vectors on demand."""
        texts = list(texts)

        def table() -> TemplateTable:
            assert self.matcher is not None
            return TemplateTable(list(self.matcher.template_texts), self.template_ids(texts))

        loader = table if self.matcher is not None else _no_templates
        return LazyResources(texts, loader, vector_fn=lambda t: np.stack(self._vectors(t)) if t else
                             np.zeros((0, 0), np.float32), token_vector_fn=self._tokens)

    def save(self, run_dir: str | Path) -> None:
        """Write ``RUN/features/drain.json`` when the method reads templates."""
        if self.matcher is None:
            return
        folder = Path(run_dir) / FEATURES_DIR
        folder.mkdir(parents=True, exist_ok=True)
        state = {"drain": asdict(self.matcher.config), "training_texts": self.matcher.training_texts,
                 "templates": self.matcher.template_texts}
        (folder / DRAIN_FILE).write_text(json.dumps(state, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path, spec: FeatureSpec,
             vector_fn: Callable[[list[str]], np.ndarray] | None = None,
             token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None) -> RunFeatures:
        """The features of a run folder: Drain refitted on its training texts and checked."""
        matcher = None
        if spec.templates:
            path = Path(run_dir) / FEATURES_DIR / DRAIN_FILE
            if not path.is_file():
                raise ConfigError(f"{path}: missing; the run's method reads Drain templates (train it again)")
            try:
                state = json.loads(path.read_text())
                config = DrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["drain"].items()})
                texts, templates = list(state["training_texts"]), list(state["templates"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ConfigError(f"{path}: unreadable Drain state ({err}); train the run again") from err
            matcher = DrainMatcher.fit(texts, config)
            if matcher.template_texts != templates:
                raise ConfigError(f"{path}: Drain fitted on the run's {len(texts)} training messages gives other "
                                  f"templates than at training time ({len(matcher.template_texts) - 1} vs "
                                  f"{len(templates) - 1}); is drain3 another version? Train the run again")
            log.info("features: Drain state of %d templates from %d training messages", len(templates) - 1,
                     len(texts))
        return cls(spec, matcher, vector_fn, token_vector_fn)


def _no_templates() -> TemplateTable:
    raise ConfigError("this run's method declared that it reads no Drain templates, yet asked for them")


__all__ = ["DRAIN_FILE", "FEATURES_DIR", "FeatureSpec", "RunFeatures"]
