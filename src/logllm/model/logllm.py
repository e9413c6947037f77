"""The LogLLM module: BERT-like encoder -> linear projector -> causal decoder (METHOD.md section 3).

Sequences arrive as message ids into a table of distinct masked texts. Each distinct text is encoded
once per call (with gradients while the encoder trains) or once overall through the frozen-encoder
cache. Rows are padded on the left with explicit position ids, so a sequence's positions, attention
and result do not depend on what else is in the batch, and every row ends where its answer does:
the decoder computes logits for the last few positions only (the answer, or the label position).

Over 500 lines because the module keeps its own ``save_pretrained`` / ``from_pretrained`` beside it, as
peft and sentence-transformers do: what is saved and how it is rebuilt are read in one place.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from logllm.errors import ConfigError
from logllm.model.build import (
    NEW_KEYS_ATTR,
    build_decoder,
    build_encoder,
    build_message_encoder,
    check_4bit_available,
    load_tokenizer,
    lora_config,
    resolve_device,
)
from logllm.model.config import ModelConfig
from logllm.model.inputs import MessageInputs
from logllm.model.prompt import ANSWERS, PREFIX, QUESTION, PromptTokens
from logllm.model.template_encoder import TemplateEncoder
from logllm.scoring import (
    WindowPlan,
    best_windows,
    check_sequences,
    deduplicate,
    length_batches,
    local_rows,
    training_windows,
)
from logllm.versions import library_versions

log = logging.getLogger(__name__)

CONFIG_FILE = "logllm_config.json"
VERSIONS_FILE = "versions.json"
PROJECTOR_FILE = "projector.safetensors"
NEW_TENSORS_FILE = "new_base_tensors.safetensors"  # beside a LoRA adapter: base tensors its checkpoint lacked
FORMAT_VERSION = 1
IGNORE = -100


class LogLLM(torch.nn.Module):
    """Encoder, projector and decoder with the paper's prompt; see `build` and `from_pretrained`.

    Attributes: ``config`` (ModelConfig), ``encoder``, ``projector``, ``decoder``, their tokenizers,
    ``prompt`` (PromptTokens), ``inputs`` (MessageInputs: what the encoder reads of a message, the
    config's ``input_mode``), ``threshold`` (decision threshold read from a run folder, else None),
    ``stats`` (counters: ``encoder_texts`` texts run through the encoder, ``encoder_batches``,
    ``truncated_messages``, ``long_sequences``: sequences read as windows, see `window_plan`).
    """

    def __init__(self, config: ModelConfig, encoder: Any, encoder_tokenizer: Any, decoder: Any,
                 decoder_tokenizer: Any, projector: torch.nn.Linear, inputs: MessageInputs | None = None) -> None:
        super().__init__()
        self.config = config
        self.inputs = inputs if inputs is not None else MessageInputs.plain(config.input_mode)
        self.encoder = encoder
        self.projector = projector
        self.decoder = decoder
        self.encoder_tokenizer = encoder_tokenizer
        self.decoder_tokenizer = decoder_tokenizer
        self.prompt = PromptTokens.from_tokenizer(decoder_tokenizer)
        self._prompt_tokens = self.prompt.token_ids
        self._prompt_row = {tok: i for i, tok in enumerate(self._prompt_tokens)}
        self._set_parts()
        self._cache: dict[str, torch.Tensor] | None = None
        self._tokens: dict[str, list[int]] = {}
        self.threshold: float | None = None
        self.stats = {"encoder_texts": 0, "encoder_batches": 0, "truncated_messages": 0, "long_sequences": 0}

    def _set_parts(self) -> None:
        """What each training stage may unfreeze: LoRA weights where LoRA is used, else the whole part.
        Under LoRA, tensors the base checkpoint lacked (e.g. MiniLM's LM-head transform) train in full."""
        self._encoder_adapter = _is_peft(self.encoder)
        self._decoder_adapter = _is_peft(self.decoder)
        self._parts = {
            "encoder": _adapter_params(self.encoder) if self._encoder_adapter else _unique(self.encoder.parameters()),
            "projector": list(self.projector.parameters()),
            "decoder": _adapter_params(self.decoder) if self._decoder_adapter else _unique(self.decoder.parameters()),
        }
        part_ids = {id(p) for ps in self._parts.values() for p in ps}
        for p in self.parameters():
            p.requires_grad_(id(p) in part_ids)
        self._keep_logits = _accepts(self.decoder, "logits_to_keep")

    def merge_adapters(self) -> LogLLM:
        """Fold LoRA adapters into their base weights, for scoring: the same function without the
        adapters' extra matmuls (equal scores up to float rounding). For a model that only scores
        (evaluate, detect, bench): it cannot train its adapters afterwards. 4-bit bases are left as they
        are (merging would round the adapters into 4-bit weights)."""
        if self.config.quantize_4bit or not (self._encoder_adapter or self._decoder_adapter):
            return self
        if self._encoder_adapter:
            self.encoder = self.encoder.merge_and_unload()
        if self._decoder_adapter:
            self.decoder = self.decoder.merge_and_unload()
        self._set_parts()
        self.clear_cache()  # the encoder's weights changed (by rounding)
        return self.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, config: ModelConfig, seed: int = 0, training_texts: Sequence[str] | None = None) -> LogLLM:
        """Load or construct encoder, projector and decoder for ``config``; random parts seeded by ``seed``.

        ``training_texts``: the training split's distinct messages in order of first appearance
        (`logllm.model.inputs.training_texts`), needed by the template input modes to fit Drain.
        The model is returned in eval mode; the trainer switches it to train mode.
        """
        config.validate()
        if config.input_mode in ("template", "template-id") and training_texts is None:
            raise ConfigError(f"model.input_mode = {config.input_mode!r}: LogLLM.build needs training_texts to fit "
                              "Drain templates on (logllm.model.inputs.training_texts)")
        inputs = MessageInputs.fit(config.input_mode, training_texts or [])
        needs_encoder_lora = config.input_mode != "template-id"  # a template table is small and trains in full
        if config.quantize_4bit and (config.decoder_lora is None or (needs_encoder_lora and config.encoder_lora is None)):
            raise ConfigError("model.quantize_4bit = true needs decoder_lora and encoder_lora: 4-bit weights "
                              "cannot be trained directly (set both, as the `paper` preset does)")
        if config.decoder == "tiny-llama" and config.decoder_lora is not None:
            raise ConfigError("model.decoder = 'tiny-llama' is trained from scratch, so LoRA on its random "
                              "weights would learn little: set decoder_lora = null (full fine-tuning)")
        if config.quantize_4bit:
            check_4bit_available()  # before anything is downloaded
        device = resolve_device(config)
        encoder_tokenizer = load_tokenizer(_resolve(config.encoder))
        # fork_rng: building a model must not move the caller's global random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = build_message_encoder(config, device, inputs.n_templates)
            decoder, decoder_tokenizer = build_decoder(config, device, encoder_tokenizer)
            projector = torch.nn.Linear(_width(encoder), decoder.get_input_embeddings().embedding_dim)
            if config.encoder_lora is not None:
                encoder = _with_lora(encoder, config.encoder_lora, "FEATURE_EXTRACTION", config.encoder)
            if config.decoder_lora is not None:
                decoder = _with_lora(decoder, config.decoder_lora, "CAUSAL_LM", config.decoder)
        model = cls(config, encoder, encoder_tokenizer, decoder, decoder_tokenizer, projector.to(device), inputs)
        log.info("LogLLM built: encoder %s (%s), decoder %s (%s), projector %d -> %d; trainable parameters: %s",
                 config.encoder, "LoRA" if model._encoder_adapter else "full",
                 config.decoder, "LoRA" if model._decoder_adapter else "full",
                 projector.in_features, projector.out_features,
                 {k: sum(p.numel() for p in v) for k, v in model._parts.items()})
        return model.eval()

    @property
    def device(self) -> torch.device:
        return self.projector.weight.device

    @property
    def window_plan(self) -> WindowPlan:
        """How a sequence longer than ``max_messages`` is read: windows (`logllm.scoring.WindowPlan`)."""
        return WindowPlan.of(self.config)  # type: ignore[return-value]

    def parts(self) -> dict[str, list[torch.nn.Parameter]]:
        """The parameters each training stage may unfreeze: ``encoder``, ``projector``, ``decoder``."""
        return {name: list(params) for name, params in self._parts.items()}

    @property
    def encoder_trains(self) -> bool:
        """True when some encoder part parameter requires grad (then the cache is not used)."""
        return any(p.requires_grad for p in self._parts["encoder"])

    # ------------------------------------------------------------------ encoder and cache
    #: distinct texts whose encoder token ids are kept; past it the token cache restarts, so that a
    #: long detection (`logllm detect --follow`) stays bounded, as its vector cache is (the detector
    #: sets this to its own cap on cached texts)
    max_cached_tokens: int = 200_000

    def _token_ids(self, text: str) -> list[int]:
        ids = self._tokens.get(text)
        if ids is None:
            if len(self._tokens) >= self.max_cached_tokens:
                log.debug("more than %d texts tokenized: token cache restarted", self.max_cached_tokens)
                self._tokens.clear()
            ids = list(self.encoder_tokenizer(text, add_special_tokens=True)["input_ids"])
            limit = self.config.max_message_tokens
            if len(ids) > limit:
                self.stats["truncated_messages"] += 1
                # The first one is a warning (a user of `detect` sees it); the rest are counted in the log.
                say = log.warning if self.stats["truncated_messages"] == 1 else log.info
                say("message truncated from %d to %d encoder tokens (%d so far): %.80s",
                    len(ids), limit, self.stats["truncated_messages"], text)
                ids = ids[: limit - 1] + ids[-1:]  # keep the closing special token, as HF truncation does
            self._tokens[text] = ids
        return ids

    def _encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Pooler vectors of ``texts`` (each run through the encoder once), float32 (n, encoder width)."""
        if not texts:
            return torch.zeros(0, _width(self.encoder), device=self.device)
        grad = torch.is_grad_enabled() and self.encoder_trains
        if isinstance(self.encoder, TemplateEncoder):
            ids = torch.tensor(self.inputs.template_ids(texts), dtype=torch.long, device=self.device)
            with torch.set_grad_enabled(grad):
                vectors = self.encoder(ids).float()  # (n, template_width)
            self.stats["encoder_texts"] += len(texts)
            self.stats["encoder_batches"] += 1
            return vectors
        texts = self.inputs.encoder_texts(texts)  # input mode template: each message's template text
        was_training = self.encoder.training
        if not grad:
            self.encoder.eval()  # a frozen encoder gives the same vectors in and out of the cache
        pad = self.encoder_tokenizer.pad_token_id or 0
        order = sorted(range(len(texts)), key=lambda i: len(self._token_ids(texts[i])))
        chunks = []
        with torch.set_grad_enabled(grad):
            for start in range(0, len(order), batch_size):
                ids = [self._token_ids(texts[i]) for i in order[start : start + batch_size]]
                width = max(len(x) for x in ids)
                input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
                mask = torch.zeros((len(ids), width), dtype=torch.long)
                for row, x in enumerate(ids):
                    input_ids[row, : len(x)] = torch.tensor(x)
                    mask[row, : len(x)] = 1
                out = self.encoder(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device))
                chunks.append(out.pooler_output.float())
                self.stats["encoder_batches"] += 1
        self.stats["encoder_texts"] += len(texts)
        self.encoder.train(was_training)
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(len(order))
        return torch.index_select(torch.cat(chunks), 0, inverse.to(self.device))

    def freeze_encoder_cache(self, texts: Sequence[str]) -> None:
        """Encode each distinct text once (no grad) and keep the vectors while the encoder stays frozen.

        Used in stages 1 and 2a and for scoring. Texts met later are added to the cache on first use.
        """
        if self._cache is None:
            self._cache = {}
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        with torch.no_grad():
            vectors = self._encode(new)
        self._cache.update(zip(new, vectors, strict=True))
        log.info("encoder cache: %d new distinct messages encoded, %d cached", len(new), len(self._cache))

    def clear_cache(self) -> None:
        """Drop the cached message vectors (call before the encoder trains)."""
        self._cache = None

    def message_vectors(self, texts: Sequence[str]) -> torch.Tensor:
        """Encoder vectors of distinct ``texts``: from the cache where it is on and the encoder is frozen.

        While the encoder trains (some encoder parameter requires grad and grad is enabled) the cache is
        stale after every step, so it is dropped and the texts are encoded with gradients.
        """
        if torch.is_grad_enabled() and self.encoder_trains:
            if self._cache is not None:
                log.info("encoder is training: message-vector cache dropped")
                self._cache = None
            return self._encode(texts)
        if self._cache is None:
            return self._encode(texts)
        missing = [t for t in texts if t not in self._cache]
        if missing:
            self.freeze_encoder_cache(missing)
        return torch.stack([self._cache[t] for t in texts]) if texts else self._encode(texts)

    # ------------------------------------------------------------------ decoder inputs
    def _canonical(self, texts: Sequence[str], sequences: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
        """Sequences as tuples of canonical text ids (first index of each text), whole."""
        first: dict[str, int] = {}
        canon = [first.setdefault(t, i) for i, t in enumerate(texts)]
        return [tuple(canon[int(i)] for i in seq) for seq in sequences]

    def _count_long(self, n_long: int, n: int, n_windows: int, what: str, count: bool = True) -> None:
        if n_long:
            self.stats["long_sequences"] += n_long if count else 0
            plan = self.window_plan
            log.info("%s: %d of %d sequences are longer than max_messages=%d and are read as %d windows "
                     "(stride %d; %d long sequences so far)", what, n_long, n, plan.size, n_windows, plan.stride,
                     self.stats["long_sequences"])

    def _decoder_inputs(self, rows: Sequence[Sequence[int]], projected: torch.Tensor,
                        tails: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ``inputs_embeds`` (B, L, H), attention mask and position ids for a batch.

        ``rows[b]``: indices into ``projected`` (m, H); ``tails[b]``: answer tokens after the question.
        Every row is gathered from one table [prompt token embeddings; projected vectors; zero row].
        """
        embed = self.decoder.get_input_embeddings()
        tokens = embed(torch.tensor(self._prompt_tokens, device=self.device))  # (P, H)
        n_tok, n_vec = tokens.shape[0], projected.shape[0]
        table = torch.cat([tokens, projected.to(tokens.dtype), tokens.new_zeros(1, tokens.shape[1])])
        start = [self._prompt_row[t] for t in self.prompt.start]
        question = [self._prompt_row[t] for t in self.prompt.question]
        index_rows = [start + [n_tok + j for j in row] + question + [self._prompt_row[t] for t in tail]
                      for row, tail in zip(rows, tails, strict=True)]
        length = max(len(r) for r in index_rows)
        index = np.full((len(index_rows), length), n_tok + n_vec, dtype=np.int64)
        mask = np.zeros((len(index_rows), length), dtype=np.int64)
        positions = np.zeros((len(index_rows), length), dtype=np.int64)
        for b, r in enumerate(index_rows):
            index[b, length - len(r):] = r
            mask[b, length - len(r):] = 1
            positions[b, length - len(r):] = np.arange(len(r))
        # index_select, not ``table[index]``: the backward of advanced indexing (index_put_ with
        # accumulate) adds repeated rows in a thread-dependent order on the CPU, so two runs with the
        # same seed differed; index_select's backward (index_add_) is ordered, and faster.
        flat = torch.from_numpy(index.reshape(-1)).to(self.device)
        embeds = torch.index_select(table, 0, flat).view(len(index_rows), length, table.shape[1])
        return (embeds, torch.from_numpy(mask).to(self.device),
                torch.from_numpy(positions).to(self.device))

    def _last_logits(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                     keep: int) -> torch.Tensor:
        """Decoder logits at the last ``keep`` positions only: (B, keep, V)."""
        kwargs: dict[str, Any] = {"logits_to_keep": keep} if self._keep_logits else {}
        out = self.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                           use_cache=False, **kwargs)
        return out.logits[:, -keep:]

    def _project(self, texts: Sequence[str], used: Sequence[int]) -> torch.Tensor:
        """Projected vectors (m, H) of the messages ``used`` (ids into ``texts``), in that order."""
        vectors = self.message_vectors([texts[i] for i in used])
        return self.projector(vectors.to(self.projector.weight.dtype))

    def _label_logits(self, projected: torch.Tensor, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, 2) logits of the (normal, anomalous) tokens at the label position, one decoder pass;
        ``rows[b]``: indices into ``projected``."""
        heads = [self.prompt.answer_head] * len(rows)
        embeds, mask, positions = self._decoder_inputs(rows, projected, heads)
        logits = self._last_logits(embeds, mask, positions, 1)[:, 0]  # (B, V)
        return logits[:, list(self.prompt.label_tokens)].float()

    # ------------------------------------------------------------------ training and scoring
    def loss(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], labels: Sequence[int],
             weights: Sequence[float] | None = None) -> torch.Tensor:
        """Mean cross-entropy over the answer tokens of a batch (the prompt and messages carry no loss).

        texts: the table of distinct masked messages; sequences: message ids into it; labels: 0/1;
        weights: how many samples each row stands for (default 1 each; the trainer's ``distinct_samples``
        passes how often a (sequence, label) pair occurs in the training set).
        A sequence longer than ``max_messages`` trains on its highest-scoring window under the current
        model (`logllm.scoring.training_windows`, scored without gradients): the window that makes its
        score, with the sequence's label.
        Each distinct message used in the batch is encoded once (with gradients if the encoder trains),
        and identical (sequence, label) rows go through the decoder once, their loss counted with their
        summed weight: the value and gradient are those of the full batch (up to float rounding and
        dropout, which a repeated row shares), at the cost of its distinct rows.
        """
        if len(sequences) != len(labels) or not sequences:
            raise ValueError(f"loss: {len(sequences)} sequences and {len(labels)} labels; need equal, non-zero")
        if weights is not None and len(weights) != len(labels):
            raise ValueError(f"loss: {len(weights)} weights for {len(labels)} sequences")
        bad = sorted({int(y) for y in labels} - set(self.prompt.answers))
        if bad:
            raise ValueError(f"loss: labels must be 0 (normal) or 1 (anomalous), got {bad}; drop unlabeled sequences")
        canon, n_long = training_windows(self._canonical(texts, sequences), self.window_plan,
                                         lambda windows: self._log_odds(texts, windows))
        self._count_long(n_long, len(sequences), n_long, "training on each one's highest-scoring window",
                         count=False)  # counted when its windows were scored
        counts: Counter[tuple[tuple[int, ...], int]] = Counter()
        for key, w in zip(zip(canon, map(int, labels), strict=True),
                          weights if weights is not None else [1] * len(labels), strict=True):
            counts[key] += w
        rows = list(counts)  # distinct (sequence, label) rows, in order of first appearance
        used = sorted({i for s, _ in rows for i in s})
        local = {g: j for j, g in enumerate(used)}
        projected = self._project(texts, used)  # (m, H)
        answers = [self.prompt.answers[label] for _, label in rows]
        embeds, mask, positions = self._decoder_inputs([[local[i] for i in s] for s, _ in rows], projected, answers)
        keep = max(len(a) for a in answers) + 1
        logits = self._last_logits(embeds, mask, positions, keep)  # (R, keep, V)
        # Rows end with their answer; the logit at position p predicts the token at p + 1.
        targets = torch.full((len(rows), keep - 1), IGNORE, dtype=torch.long)
        for r, answer in enumerate(answers):
            targets[r, keep - 1 - len(answer):] = torch.tensor(answer)
        token_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.to(self.device).reshape(-1),
            ignore_index=IGNORE, reduction="none").reshape(len(rows), keep - 1)
        weight = torch.tensor([counts[k] for k in rows], dtype=token_loss.dtype, device=token_loss.device)
        n_tokens = sum(counts[k] * len(a) for k, a in zip(rows, answers, strict=True))
        return (token_loss.sum(dim=1) * weight).sum() / n_tokens

    def answer_logits(self, texts: Sequence[str], sequences: Sequence[Sequence[int]],
                      batch_size: int = 64) -> torch.Tensor:
        """(N, 2) float32 logits of the (normal, anomalous) answer tokens at the label position, one
        row per sequence in input order, on the model's device; no grad, in eval mode (restored after).

        texts: the table of masked messages; sequences: message ids into it. A sequence longer than
        ``max_messages`` is read as windows (`window_plan`) and gets the logits of its window with the
        highest anomaly log-odds (so its P(anomalous) is the maximum over its windows). Each distinct
        message is encoded once (or read from the frozen-encoder cache) and projected once; identical
        windows go through the decoder once, in length-sorted batches of ``batch_size``, which changes
        speed, not results (see `logllm.scoring`).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"texts must be a list of message texts, got one string {texts[:40]!r}")
        check_sequences(sequences)
        if not sequences:
            return torch.zeros(0, 2, device=self.device)
        started = time.perf_counter()
        windows, owner = self.window_plan.expand(self._canonical(texts, sequences))
        n_long = int(np.count_nonzero(np.bincount(owner) > 1))
        self._count_long(n_long, len(sequences), len(windows) - len(sequences) + n_long, "scoring")
        distinct, inverse = deduplicate(windows)
        used, rows = local_rows(distinct)
        encoded_before = self.stats["encoder_texts"]
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                projected = self._project(texts, used)  # (m, H): each distinct message projected once
                logits = torch.zeros(len(rows), 2, device=self.device)
                for batch in length_batches([len(r) for r in rows], batch_size):
                    logits[batch] = self._label_logits(projected, [rows[i] for i in batch])  # (b, 2)
        finally:
            self.train(was_training)
        log.info("scored %d sequences (%d windows, %d distinct) over %d distinct messages (%d encoded now) in %.2fs",
                 len(sequences), len(windows), len(distinct), len(used),
                 self.stats["encoder_texts"] - encoded_before, time.perf_counter() - started)
        per_window = logits[torch.from_numpy(inverse).to(self.device)]  # (W, 2)
        if len(windows) == len(sequences):
            return per_window
        best = best_windows((per_window[:, 1] - per_window[:, 0]).double().cpu().numpy(), owner, len(sequences))
        return per_window[torch.from_numpy(best).to(self.device)]  # (N, 2)

    def _log_odds(self, texts: Sequence[str], windows: Sequence[Sequence[int]]) -> np.ndarray:
        """Anomaly log-odds of windows that fit the model (no grad, eval mode), float64."""
        logits = self.answer_logits(texts, windows).double().cpu().numpy()  # (W, 2)
        return logits[:, 1] - logits[:, 0]

    def score(self, texts: Sequence[str] | Sequence[Sequence[str]], sequences: Sequence[Sequence[int]] | None = None,
              batch_size: int = 64) -> np.ndarray:
        """P(anomalous) per sequence (float64, input order): the softmax of `answer_logits`.

        Either ``score(texts, sequences)`` with message ids into the text table, or ``score(seqs)``
        where each sequence is a list of masked message texts.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError(f"score() takes sequences of messages, not one string ({texts[:40]!r}...): "
                            "pass [[message, ...], ...] or (texts, sequences of ids)")
        if sequences is None:
            check_sequences(texts, "messages")
            table: dict[str, int] = {}
            sequences = [[table.setdefault(t, len(table)) for t in seq] for seq in texts]
            texts = list(table)
        logits = self.answer_logits(texts, sequences, batch_size=batch_size)  # type: ignore[arg-type]
        return torch.softmax(logits, dim=-1)[:, 1].double().cpu().numpy()

    def forward(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], labels: Sequence[int]) -> torch.Tensor:
        return self.loss(texts, sequences, labels)

    # ------------------------------------------------------------------ saving and loading
    def save_pretrained(self, path: str | Path) -> Path:
        """Write a self-contained folder: config JSON, safetensors weights, tokenizers, library versions.

        Parts trained with LoRA are saved as adapters (their base is referenced by the config's id);
        other parts in full. The projector is its own file. Layout::

            logllm_config.json     format version, ModelConfig.to_dict(), how each part is stored, prompt texts
            versions.json          library versions (logllm.versions.library_versions())
            projector.safetensors  weight, bias
            encoder/  decoder/     tokenizer files, and config.json + model.safetensors (full weights)
                                   or adapter/ (adapter_config.json + adapter_model.safetensors)
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": "logllm-model",
            "format_version": FORMAT_VERSION,
            "model": self.config.to_dict(),
            "encoder_weights": ("template-table" if isinstance(self.encoder, TemplateEncoder)
                                else "adapter" if self._encoder_adapter else "full"),
            "decoder_weights": "adapter" if self._decoder_adapter else "full",
            "projector": {"in_features": self.projector.in_features, "out_features": self.projector.out_features},
            "prompt": {"prefix": PREFIX, "question": QUESTION, "answers": {str(k): v for k, v in ANSWERS.items()}},
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        (path / VERSIONS_FILE).write_text(json.dumps(library_versions(), indent=2) + "\n")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.projector.state_dict().items()},
                  str(path / PROJECTOR_FILE))
        if self.inputs.matcher is not None:
            self.inputs.save(path)  # inputs.json: the texts Drain was fitted on
        for name, module, tokenizer, adapter in (
            ("encoder", self.encoder, self.encoder_tokenizer, self._encoder_adapter),
            ("decoder", self.decoder, self.decoder_tokenizer, self._decoder_adapter),
        ):
            folder = path / name
            folder.mkdir(exist_ok=True)
            tokenizer.save_pretrained(str(folder))
            if isinstance(module, TemplateEncoder):
                module.save(folder)
            elif adapter:
                # The vocabulary is never resized, so peft need not look the base up (on the hub, by its
                # alias) to decide whether to save the embedding layers.
                module.save_pretrained(str(folder / "adapter"), save_embedding_layers=False)
            else:
                module.save_pretrained(str(folder))
            new = _new_base_params(module) if adapter else {}
            if new:
                save_file({k: v.detach().cpu().clone().contiguous() for k, v in new.items()},
                          str(folder / "adapter" / NEW_TENSORS_FILE))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, merge_adapters: bool = False) -> LogLLM:
        """Load a folder written by `save_pretrained`, or a run folder (its ``model/``), with no network
        beyond the base weights of LoRA-adapted parts. Returned in eval mode.

        ``merge_adapters``: fold LoRA adapters into their bases for scoring (`merge_adapters`).
        """
        from peft import PeftModel
        from safetensors.torch import load_file

        path = Path(path)
        run_dir = None
        if not (path / CONFIG_FILE).is_file() and (path / "model" / CONFIG_FILE).is_file():
            run_dir, path = path, path / "model"
        if not (path / CONFIG_FILE).is_file():
            raise ConfigError(f"{path}: not a saved LogLLM model ({CONFIG_FILE} is missing); give a run folder "
                              "written by `logllm train` or a folder written by LogLLM.save_pretrained")
        meta = json.loads((path / CONFIG_FILE).read_text())
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ConfigError(f"{path / CONFIG_FILE}: format_version {meta['format_version']} is newer than this "
                              f"logllm reads ({FORMAT_VERSION}); upgrade logllm")
        config = ModelConfig.from_dict(meta["model"], where=str(path / CONFIG_FILE))
        # Loading must not move the caller's random state (resume restores it around this call).
        with torch.random.fork_rng(devices=[]):
            device = resolve_device(config)
            encoder_tokenizer = load_tokenizer(path / "encoder")
            inputs = MessageInputs.load(path, config.input_mode)
            if meta["encoder_weights"] == "template-table":
                encoder = TemplateEncoder.load(path / "encoder", device)
            elif meta["encoder_weights"] == "adapter":
                base = _with_new_tensors(build_encoder(config, device), path / "encoder" / "adapter")
                encoder = PeftModel.from_pretrained(base, str(path / "encoder" / "adapter"), is_trainable=True)
            else:
                encoder = build_encoder(config.replace(quantize_4bit=False), device, weights=path / "encoder")
            if meta["decoder_weights"] == "adapter":
                base, _ = build_decoder(config, device, encoder_tokenizer)
                base = _with_new_tensors(base, path / "decoder" / "adapter")
                decoder = PeftModel.from_pretrained(base, str(path / "decoder" / "adapter"), is_trainable=True)
            else:
                decoder, _ = build_decoder(config.replace(quantize_4bit=False), device, encoder_tokenizer,
                                           weights=path / "decoder")
            decoder_tokenizer = load_tokenizer(path / "decoder")
            shape = meta["projector"]
            projector = torch.nn.Linear(shape["in_features"], shape["out_features"])
            projector.load_state_dict(load_file(str(path / PROJECTOR_FILE)))
        model = cls(config, encoder, encoder_tokenizer, decoder, decoder_tokenizer, projector.to(device), inputs)
        threshold_file = (run_dir or path.parent) / "threshold.json"
        if threshold_file.is_file():
            model.threshold = float(json.loads(threshold_file.read_text())["threshold"])
        return model.merge_adapters() if merge_adapters else model.eval()


def _with_new_tensors(base: Any, folder: Path) -> Any:
    """Load the saved values of the base's newly initialised tensors (trained beside the adapter)."""
    from safetensors.torch import load_file

    file = folder / NEW_TENSORS_FILE
    if file.is_file():
        tensors = load_file(str(file))
        for name, value in tensors.items():
            with torch.no_grad():
                base.get_parameter(name).copy_(value)
    return base


def _resolve(name: str) -> str:
    from logllm.model.hub import resolve

    return resolve(name)


def _width(encoder: Any) -> int:
    return encoder.width if isinstance(encoder, TemplateEncoder) else int(encoder.config.hidden_size)


def _is_peft(module: Any) -> bool:
    from peft import PeftModel

    return isinstance(module, PeftModel)


def _unique(params: Any) -> list[torch.nn.Parameter]:
    seen: set[int] = set()
    return [p for p in params if not (id(p) in seen or seen.add(id(p)))]


def _new_base_params(module: Any) -> dict[str, torch.nn.Parameter]:
    """Parameters of a LoRA part's base model that its checkpoint lacked (newly initialised)."""
    base = module.get_base_model()
    out = {}
    for name in getattr(base, NEW_KEYS_ATTR, []):
        try:
            out[name] = base.get_parameter(name)
        except AttributeError:  # a buffer, not a parameter
            continue
    return out


def _adapter_params(module: Any) -> list[torch.nn.Parameter]:
    lora = [p for p in module.parameters() if p.requires_grad]
    return _unique([*lora, *_new_base_params(module).values()])


def _with_lora(model: Any, spec: Any, task: str, base_name: str) -> Any:
    """``model`` wrapped with a LoRA adapter whose saved config names its base by the config's setting
    (an alias such as ``smollm2-135m``), not by the folder it was loaded from (a machine's cache path),
    so a run folder stays movable: loading rebuilds the base from the config."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora_config(spec, model, task))  # type: ignore[arg-type]
    for adapter in peft_model.peft_config.values():
        adapter.base_model_name_or_path = base_name
    return peft_model


def _accepts(module: Any, name: str) -> bool:
    import inspect

    base = module.get_base_model() if _is_peft(module) else module
    return name in inspect.signature(base.forward).parameters
