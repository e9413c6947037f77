"""Drain templates for the baselines that need template ids, fitted on the training split only.

Drain (He et al., ICWS'17) via the `drain3` package, in memory (no persistence, no config file
read from the working directory). Input is the prepared folder's masked messages, so variable
parts are already `<*>`; Drain only groups messages whose constant words differ.

What Drain sees: each distinct masked message of the training split once, in order of first
appearance in the training sequences. Drain's clusters depend only on the order in which new token
sequences arrive (a repeated message matches its cluster and changes nothing but the cluster size),
so this gives the same templates as feeding every occurrence in log order, in a fraction of the
calls; cluster sizes are then taken from the occurrence counts.

Every message of the folder (train, val and test) is then assigned with ``TemplateMiner.match``
(no learning); a message that matches no training template gets id 0, "unknown". Template ids are
1..K in Drain's cluster order. `DrainMatcher` holds that fitted state and assigns any new text the
same way (`logllm detect` with a baseline run). The assignment is stored in ``<prepared>/templates/`` with a
fingerprint of the training split, the messages and the Drain settings, and read back when the
fingerprint matches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from logllm.baselines.base import Resources
from logllm.data.dataset import PreparedData
from logllm.embeddings import Pooling
from logllm.errors import ConfigError

log = logging.getLogger(__name__)

TEMPLATES_DIR = "templates"
UNKNOWN = "<unknown>"


@dataclass(frozen=True)
class DrainConfig:
    """Drain settings (drain3's defaults)."""

    depth: int = 4
    """Depth of the parse tree (drain3 counts the root and the leaf: 4 = two token levels)."""
    sim_th: float = 0.4
    """Share of equal tokens needed to join a cluster."""
    max_children: int = 100
    """Children per tree node before tokens fall into the wildcard branch."""
    max_clusters: int | None = None
    """Upper bound on templates (None: unbounded, so no template is ever evicted)."""
    extra_delimiters: tuple[str, ...] = ()
    """Characters split on besides whitespace."""

    def __post_init__(self) -> None:
        if self.depth < 3:
            raise ConfigError(f"drain depth must be at least 3, got {self.depth}")
        if not 0.0 < self.sim_th <= 1.0:
            raise ConfigError(f"drain sim_th must be in (0, 1], got {self.sim_th}")


@dataclass
class TemplateTable:
    """Templates fitted on one training split and the template id of every message of the folder."""

    template_texts: list[str]  # index = template id; 0 is UNKNOWN
    template_of_message: np.ndarray  # (n_messages,) int64
    sizes: list[int] = field(default_factory=list)  # training occurrences per template
    fingerprint: str = ""

    @property
    def unknown_messages(self) -> int:
        return int((self.template_of_message == 0).sum())


def _miner(config: DrainConfig):  # -> drain3.TemplateMiner
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    cfg = TemplateMinerConfig()  # built in code: drain3 reads drain3.ini only when given no config
    cfg.drain_depth = config.depth
    cfg.drain_sim_th = config.sim_th
    cfg.drain_max_children = config.max_children
    cfg.drain_max_clusters = config.max_clusters
    cfg.drain_extra_delimiters = list(config.extra_delimiters)
    cfg.masking_instructions = []  # messages arrive masked by logllm's own masking
    cfg.profiling_enabled = False
    return TemplateMiner(config=cfg)


class DrainMatcher:
    """Drain fitted on training messages, assigning a template id to any message text.

    ``fit`` feeds each distinct training text once, in the order given; template ids are 1..K in
    Drain's cluster order, 0 is "unknown". ``assign`` matches texts without learning; a training
    text that no longer matches (its cluster's template was later rewritten by a longer-tokened
    sibling) keeps its own cluster. The matcher is rebuilt exactly by fitting the same
    ``training_texts`` again (what a run folder stores instead of drain3's jsonpickle state).
    """

    def __init__(self, config: DrainConfig | None = None) -> None:
        self.config = config or DrainConfig()
        self.miner = _miner(self.config)
        self.added: dict[str, int] = {}  # training text -> drain cluster id when it was added
        self.template_ids: dict[int, int] = {}  # drain cluster id -> template id
        self.template_texts: list[str] = [UNKNOWN]

    @property
    def training_texts(self) -> list[str]:
        """The texts Drain was fitted on, in the order it saw them."""
        return list(self.added)

    @classmethod
    def fit(cls, texts: list[str], config: DrainConfig | None = None) -> DrainMatcher:
        matcher = cls(config)
        for text in dict.fromkeys(texts):
            matcher.added[text] = int(matcher.miner.add_log_message(text)["cluster_id"])
        clusters = sorted(c.cluster_id for c in matcher.miner.drain.clusters)
        matcher.template_ids = {cid: i + 1 for i, cid in enumerate(clusters)}
        matcher.template_texts = [UNKNOWN] + [""] * len(clusters)
        for c in matcher.miner.drain.clusters:
            matcher.template_texts[matcher.template_ids[c.cluster_id]] = c.get_template()
        return matcher

    def assign(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """Template id per text (0 = unknown), and how many were training texts assigned by their own cluster."""
        out = np.zeros(len(texts), dtype=np.int64)
        fallback = 0
        for i, text in enumerate(texts):
            cluster = self.miner.match(text, full_search_strategy="fallback")
            if cluster is not None:
                out[i] = self.template_ids[cluster.cluster_id]
            elif text in self.added:
                out[i] = self.template_ids[self.added[text]]
                fallback += 1
        return out, fallback


def fit_templates(
    messages: list[str],
    train_sequences: list[np.ndarray],
    config: DrainConfig | None = None,
) -> TemplateTable:
    """Fit Drain on the messages of ``train_sequences`` and assign every message a template id."""
    counts = np.zeros(len(messages), dtype=np.int64)
    for seq in train_sequences:
        counts += np.bincount(seq, minlength=len(messages))
    matcher = DrainMatcher.fit(training_order(messages, train_sequences), config)
    assignment, fallback = matcher.assign(messages)
    sizes = [0] * len(matcher.template_texts)
    for m in range(len(messages)):
        sizes[assignment[m]] += int(counts[m])
    table = TemplateTable(matcher.template_texts, assignment, sizes)
    unseen = sum(1 for text in messages if text not in matcher.added)
    log.info("drain: %d templates from %d distinct training messages (%d occurrences); "
             "%d of %d messages not in training, %d of them unknown (template 0); %d training messages "
             "assigned by their own cluster", len(matcher.template_texts) - 1, len(matcher.added), int(counts.sum()),
             unseen, len(messages), table.unknown_messages, fallback)
    return table


def training_order(messages: list[str], train_sequences: list[np.ndarray]) -> list[str]:
    """The distinct texts of the training sequences in order of first appearance (what Drain is fed)."""
    order: dict[int, None] = {}
    for seq in train_sequences:
        for m in np.asarray(seq).tolist():
            order.setdefault(m, None)
    return [messages[m] for m in order]


def _fingerprint(messages: list[str], train_sequences: list[np.ndarray], config: DrainConfig) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(asdict(config), sort_keys=True).encode())
    for text in messages:
        h.update(text.encode())
        h.update(b"\0")
    for seq in train_sequences:
        h.update(np.asarray(seq, dtype=np.int64).tobytes())
        h.update(b"|")
    return h.hexdigest()


def _read(folder: Path, fingerprint: str, n_messages: int) -> TemplateTable | None:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fingerprint:
            log.info("%s: fitted on another training split or settings; refitting", folder)
            return None
        tmpl = pl.read_parquet(folder / "templates.parquet").sort("template_id")
        assign = pl.read_parquet(folder / "message_templates.parquet").sort("message_id")
    except (OSError, json.JSONDecodeError, pl.exceptions.PolarsError) as err:
        log.warning("%s: unreadable (%s); refitting", folder, err)
        return None
    if len(assign) != n_messages:
        return None
    return TemplateTable(tmpl["text"].to_list(), assign["template_id"].to_numpy().astype(np.int64),
                         tmpl["size"].to_list(), fingerprint)


def _write(folder: Path, table: TemplateTable, config: DrainConfig) -> None:
    from logllm.versions import library_versions

    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({
        "template_id": np.arange(len(table.template_texts), dtype=np.uint32),
        "text": table.template_texts,
        "size": np.asarray(table.sizes, dtype=np.uint64),
    }).write_parquet(folder / "templates.parquet")
    pl.DataFrame({
        "message_id": np.arange(len(table.template_of_message), dtype=np.uint32),
        "template_id": table.template_of_message.astype(np.uint32),
    }).write_parquet(folder / "message_templates.parquet")
    meta = {"fingerprint": table.fingerprint, "drain": asdict(config), "templates": len(table.template_texts),
            "unknown_messages": table.unknown_messages, "fitted_on": "train", "versions": library_versions()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def load_or_fit_templates(data: PreparedData, config: DrainConfig | None = None,
                          store: bool = True) -> TemplateTable:
    """The folder's templates: read from ``<prepared>/templates/`` if fitted on this train split, else fit.

    A folder that cannot be written to (shared, read-only) is logged and the table kept in memory.
    """
    config = config or DrainConfig()
    train = data.sequences("train").message_ids
    fingerprint = _fingerprint(data.messages, train, config)
    folder = data.root / TEMPLATES_DIR
    table = _read(folder, fingerprint, len(data.messages))
    if table is not None:
        log.info("templates: read %d from %s", len(table.template_texts), folder)
        return table
    table = fit_templates(data.messages, train, config)
    table.fingerprint = fingerprint
    if store:
        try:
            _write(folder, table, config)
        except OSError as err:
            log.warning("templates: could not store them in %s (%s); kept in memory only", folder, err)
    return table


@dataclass
class BenchResources(Resources):
    """`Resources` plus token-level encoder vectors per message (for RAPID), computed once, lazily."""

    _token_vectors: list[np.ndarray] | None = field(default=None, repr=False)
    _token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = field(default=None, repr=False)

    def message_token_vectors(self) -> list[np.ndarray]:
        """Per message, the encoder's last hidden states of its tokens, (n_tokens, width) float32."""
        if self._token_vectors is None:
            fn = self._token_vector_fn or encode_tokens
            self._token_vectors = [np.asarray(v, dtype=np.float32) for v in fn(self.message_texts)]
        return self._token_vectors


def encode_tokens(texts: list[str], encoder: str = "minilm", max_length: int = 100,
                  batch_size: int = 64) -> list[np.ndarray]:
    """Token-level vectors (last hidden states, [CLS]/[SEP]/padding dropped) of each text, once per text."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from logllm.model.hub import resolve

    path = resolve(encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(texts)
    truncated = 0
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            truncated += int((batch["attention_mask"].sum(1) >= max_length).sum())
            hidden = model(**batch).last_hidden_state.float().numpy()
            lengths = batch["attention_mask"].sum(1).tolist()
            for i, n in enumerate(lengths):
                # keep at least one vector: an empty text leaves only [CLS][SEP]
                out[start + i] = hidden[i, 1:max(n - 1, 2)].copy()
    if truncated:
        log.info("token vectors: %d of %d messages reached the %d-token limit and were truncated",
                 truncated, len(texts), max_length)
    log.info("token vectors (%s): %d messages", encoder, len(texts))
    return out


def build_resources(
    data: PreparedData,
    config: DrainConfig | None = None,
    vector_fn: Callable[[list[str]], np.ndarray] | None = None,
    token_vector_fn: Callable[[list[str]], list[np.ndarray]] | None = None,
    store: bool = True,
    pooling: Pooling = "mean",
) -> BenchResources:
    """Resources for one bench run: Drain templates (train split only) and lazy encoder vectors.

    Semantic message vectors are the `small` preset's MiniLM encoder (`encode_texts`), with
    ``pooling="mean"`` by default: all-MiniLM-L6-v2 was trained as a sentence encoder with mean
    pooling, while its BERT pooler output (what LogLLM feeds its projector) is nearly the same
    vector for every HDFS message (per-dimension spread ~0.03). ``vector_fn`` overrides it (tests).
    """
    table = load_or_fit_templates(data, config, store=store)
    if vector_fn is None:
        from logllm.embeddings import encode_texts

        vector_fn = functools.partial(encode_texts, pooling=pooling)
    return BenchResources(
        message_texts=list(data.messages),
        template_of_message=table.template_of_message,
        template_texts=table.template_texts,
        _vector_fn=vector_fn,
        _token_vector_fn=token_vector_fn,
    )
