"""What the encoder reads of each message: the input modes of the paper's Table IV.

``regex`` (default): the masked message text of the prepared folder (variable parts as ``<*>``).
``raw``: the message as logged, which needs a folder prepared with ``--mask none``.
``template``: the Drain template text of the message (Drain fitted on the training split only).
``template-id``: the Drain template id, read by an embedding table (`TemplateEncoder`) in place of
the BERT encoder; a message no training template matches gets the one "unseen" id, 0.

The modes differ only in what a message text becomes before it reaches the encoder, so the model
applies them itself (`MessageInputs`): `evaluate`, `detect` and the bench give it the run's message
texts as they always do, and the saved state (the texts Drain was fitted on, ``inputs.json`` in the
model folder) maps a new message exactly as it mapped the training ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np

from logllm.baselines.templates import DrainConfig, DrainMatcher, training_order
from logllm.errors import ConfigError
from logllm.model.config import INPUT_MODES

log = logging.getLogger(__name__)

InputMode = Literal["regex", "raw", "template", "template-id"]
TEMPLATE_MODES: tuple[str, ...] = ("template", "template-id")
INPUTS_FILE = "inputs.json"
UNSEEN = 0  # the template id of a message that matches no training template


def needs_training_texts(mode: str) -> bool:
    """Whether building a model in ``mode`` needs the training split's messages (to fit Drain)."""
    return mode in TEMPLATE_MODES


def training_texts(messages: Sequence[str], train_sequences: Sequence[Sequence[int]]) -> list[str]:
    """The distinct texts of the training sequences in order of first appearance: what Drain is fitted on
    (the bench's order, `logllm.baselines.templates.training_order`)."""
    return training_order(list(messages), [np.asarray(s, dtype=np.int64) for s in train_sequences])


def check_masking(mode: str, manifest: Mapping[str, Any], where: str) -> None:
    """Refuse a prepared folder whose masking contradicts ``mode``: ``raw`` reads unmasked messages
    (prepare with ``--mask none``), ``regex`` masked ones. ``where`` names the folder in the message.

    A manifest that does not record its masking (folders written in code) is accepted as it is.
    """
    options = manifest.get("options") or {}
    if "mask" not in options:
        log.info("%s: the manifest does not record its masking; input mode %s taken as given", where, mode)
        return
    masked = bool(options.get("mask_instructions", options["mask"] != "none"))
    if mode == "raw" and masked:
        raise ConfigError(f"--input raw: {where} was prepared with masking {options['mask']!r}, so its messages "
                          "are masked; prepare the data again with `logllm prepare ... --mask none`")
    if mode == "regex" and not masked:
        raise ConfigError(f"--input regex: {where} was prepared with --mask none (no masking); use --input raw "
                          "for unmasked messages, or prepare the data again with --mask paper")


class MessageInputs:
    """Maps message texts to what the encoder reads in one input mode (see the module docstring).

    Build it with `fit` (template modes: Drain on the training texts) or `plain` (regex, raw); save it
    with `save` and read it back with `load`. ``stats`` counts the distinct texts mapped and those that
    matched no training template (``unseen``).
    """

    def __init__(self, mode: str, matcher: DrainMatcher | None = None) -> None:
        if mode not in INPUT_MODES:
            raise ConfigError(f"model.input_mode must be one of {INPUT_MODES}, got {mode!r}")
        if (matcher is None) == (mode in TEMPLATE_MODES):
            raise ConfigError(f"input mode {mode!r}: a fitted Drain matcher is "
                              f"{'needed' if matcher is None else 'not used'}")
        self.mode = mode
        self.matcher = matcher
        self._ids: dict[str, int] = {}
        self.stats = {"mapped": 0, "unseen": 0}

    @classmethod
    def plain(cls, mode: str = "regex") -> MessageInputs:
        """The modes that read the prepared text as it is (``regex``, ``raw``)."""
        return cls(mode)

    @classmethod
    def fit(cls, mode: str, texts: Sequence[str], drain: DrainConfig | None = None) -> MessageInputs:
        """Fit Drain on the training ``texts`` (distinct, in order of first appearance) for a template mode."""
        if mode not in TEMPLATE_MODES:
            return cls.plain(mode)
        if not texts:
            raise ConfigError(f"input mode {mode!r}: no training messages to fit Drain templates on")
        matcher = DrainMatcher.fit(list(texts), drain)
        log.info("input mode %s: %d Drain templates fitted on %d distinct training messages", mode,
                 matcher_size(matcher), len(matcher.training_texts))
        return cls(mode, matcher)

    @property
    def n_templates(self) -> int:
        """Templates fitted on the training split (ids 1..n; 0 is unseen). 0 outside the template modes."""
        return matcher_size(self.matcher) if self.matcher is not None else 0

    def template_ids(self, texts: Sequence[str]) -> list[int]:
        """The template id of each text (0 = unseen), each distinct text matched once."""
        if self.matcher is None:
            raise ConfigError(f"input mode {self.mode!r} has no templates")
        new = [t for t in dict.fromkeys(texts) if t not in self._ids]
        if new:
            ids, _ = self.matcher.assign(new)
            unseen = int((ids == UNSEEN).sum())
            self._ids.update(zip(new, ids.tolist(), strict=True))
            self.stats["mapped"] += len(new)
            self.stats["unseen"] += unseen
            if unseen:
                log.info("input mode %s: %d of %d new distinct messages match no training template (unseen id %d; "
                         "%d unseen so far)", self.mode, unseen, len(new), UNSEEN, self.stats["unseen"])
        return [self._ids[t] for t in texts]

    def encoder_texts(self, texts: Sequence[str]) -> list[str]:
        """What the BERT encoder reads for each text: the text itself, or (``template``) its template text.

        A message that matches no training template is read as its own text: no template fits it
        better, and one shared "unknown" text would make every new message look the same.
        """
        if self.mode != "template":
            return list(texts)
        table = self.matcher.template_texts  # type: ignore[union-attr]
        return [table[i] if i != UNSEEN else t for t, i in zip(texts, self.template_ids(texts), strict=True)]

    # ------------------------------------------------------------------ saving and loading
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode}
        if self.matcher is not None:
            # Drain is rebuilt exactly by fitting the same texts in the same order (`DrainMatcher`).
            out.update(drain=asdict(self.matcher.config), templates=self.matcher.template_texts,
                       training_texts=self.matcher.training_texts)
        return out

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / INPUTS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path, mode: str) -> MessageInputs:
        """The inputs saved in ``folder`` (a model folder); ``mode`` is the model config's input mode."""
        if mode not in TEMPLATE_MODES:
            return cls.plain(mode)
        path = Path(folder) / INPUTS_FILE
        if not path.is_file():
            raise ConfigError(f"{path} is missing: a model with input mode {mode!r} keeps its Drain templates there; "
                              "the model folder is incomplete (copy it whole, or train again)")
        try:
            saved = json.loads(path.read_text())
            drain = DrainConfig(**{**saved["drain"], "extra_delimiters": tuple(saved["drain"]["extra_delimiters"])})
            texts = list(saved["training_texts"])
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}: unreadable ({err}); the model folder is damaged, train again") from err
        if saved.get("mode") != mode:
            raise ConfigError(f"{path}: written for input mode {saved.get('mode')!r}, but the model config says "
                              f"{mode!r}; the model folder is damaged")
        inputs = cls(mode, DrainMatcher.fit(texts, drain))
        if inputs.matcher.template_texts != saved["templates"]:  # type: ignore[union-attr]
            raise ConfigError(f"{path}: refitting Drain on the saved texts gave other templates than were saved "
                              "(another drain3 version?); the run's template ids would not mean the same")
        return inputs


def matcher_size(matcher: DrainMatcher) -> int:
    return len(matcher.template_texts) - 1


__all__ = ["INPUTS_FILE", "INPUT_MODES", "InputMode", "MessageInputs", "TEMPLATE_MODES", "UNSEEN", "check_masking",
           "needs_training_texts", "training_texts"]
