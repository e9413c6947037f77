"""RAPID: training-free retrieval of the nearest normal sequences, compared token by token.

No, Lee, Kang, Kang, "Training-free Retrieval-based Log Anomaly Detection with PLM considering
Token-level information" (RAPID), Engineering Applications of Artificial Intelligence, 2024
(arXiv 2311.05160). Logs are read as text by a pre-trained language model, with no training on
logs: the normal training sequences form a database (reduced to a core set), each test sequence
retrieves its most similar normal sequences by their [CLS]-level representation, and its anomaly
score is the token-level distance to those neighbours: for every token of the test sequence the
distance to the closest token of a neighbour, the worst token deciding (so one unseen word in an
otherwise normal session counts).

What this implementation approximates, to stay tractable on a CPU (all with the `small` preset's
MiniLM instead of the paper's BERT-base):

- token vectors are computed once per distinct masked *message* (last hidden states, special
  tokens dropped) and a sequence's tokens are the concatenation of its messages' tokens, instead
  of encoding each whole sequence (up to 512 tokens) as one text; a sequence's retrieval vector
  is the mean of its tokens' vectors, standing in for the whole-sequence [CLS];
- the database holds each distinct normal sequence once; the core set is a greedy k-center
  selection on the retrieval vectors when there are more than ``core_set`` distinct sequences
  (the paper samples a ratio of the database);
- since token sets ignore how often a message repeats, the retrieval distance is added to the
  token distance, so sessions that differ only in their mix of messages still score above zero
  (``only_tokens=true`` gives the paper's pure token score).

Threshold: best F1 on the validation split when it is handed with labels; otherwise the
``quantile`` of the normal reference sequences' leave-one-out scores. Saved state: the database
(retrieval vectors, and every sequence's token vectors concatenated with their offsets), ``top_k``,
``only_tokens`` and the threshold.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np

from logllm.baselines.base import Method, MethodInput, param, register
from logllm.baselines.common import distinct, f1_threshold
from logllm.metrics import predict, quantile_threshold

log = logging.getLogger(__name__)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _greedy_k_center(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of k points chosen so that every point is close to one of them (farthest-first)."""
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(x)))]
    dist = 1.0 - x @ x[chosen[0]]
    for _ in range(1, k):
        nxt = int(dist.argmax())
        chosen.append(nxt)
        dist = np.minimum(dist, 1.0 - x @ x[nxt])
    return np.asarray(sorted(chosen))


@register
class RAPID(Method):
    name: ClassVar[str] = "rapid"
    param_names: ClassVar[frozenset[str] | None] = frozenset({"top_k", "only_tokens", "core_set", "quantile"})
    supervision = "training-free"
    uses_templates: ClassVar[bool] = False  # token vectors of the messages only
    uses_vectors: ClassVar[bool] = False
    paper: ClassVar[str] = "No et al., EAAI 2024 / arXiv 2311.05160 (RAPID)"
    needs_token_vectors: ClassVar[bool] = True

    def _token_vectors(self, inp: MethodInput) -> list[np.ndarray]:
        res = inp.resources
        if hasattr(res, "message_token_vectors"):
            return res.message_token_vectors()  # type: ignore[attr-defined]
        if getattr(self, "_own_tokens", None) is None:
            from logllm.baselines.templates import encode_tokens

            self._own_tokens = encode_tokens(res.message_texts)
        return self._own_tokens

    def _represent(self, seqs: list[np.ndarray], tokens: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per sequence: unit retrieval vector and the unit vectors of its distinct messages' tokens."""
        vecs, toks = [], []
        width = tokens[0].shape[1] if tokens else 1
        for s in seqs:
            if len(s) == 0:  # an empty sequence is far from everything: a zero vector
                vecs.append(np.zeros(width, np.float32))
                toks.append(np.zeros((1, width), np.float32))
                continue
            ms = list(dict.fromkeys(s.tolist()))
            # The retrieval vector weights each message by its number of occurrences; the token
            # set needs each distinct message once (repeats add no new tokens).
            counts = np.bincount(s, minlength=max(ms) + 1)[ms].astype(np.float32)
            sums = np.stack([tokens[m].sum(0) for m in ms])
            n = np.asarray([len(tokens[m]) for m in ms], dtype=np.float32)
            vecs.append((counts[:, None] * sums).sum(0) / max(float((counts * n).sum()), 1.0))
            toks.append(_unit(np.concatenate([tokens[m] for m in ms])))
        return _unit(np.stack(vecs)), toks

    def fit(self, train: MethodInput, val: MethodInput | None = None) -> None:
        self.top_k = param(self.params, "top_k", 5, int)
        self.only_tokens = param(self.params, "only_tokens", False, bool)
        core_set = param(self.params, "core_set", 2000, int)
        quantile = param(self.params, "quantile", 0.995, float)
        tokens = self._token_vectors(train)
        ref, _ = distinct(train.messages)
        self.db_vecs, self.db_toks = self._represent(ref.seqs, tokens)
        if len(ref.seqs) > core_set:
            keep = _greedy_k_center(self.db_vecs, core_set, self.seed)
            self.db_vecs = self.db_vecs[keep]
            self.db_toks = [self.db_toks[i] for i in keep]
            log.info("rapid: core set of %d of %d distinct normal sequences", core_set, len(ref.seqs))
        log.info("rapid: database of %d distinct normal sequences (%d in the reference set)",
                 len(self.db_toks), len(train))
        if val is not None and val.labels is not None and len(val):
            self.threshold = f1_threshold(self.score(val), val.labels, "rapid's validation split")
        else:
            # Leave-one-out: each distinct normal sequence scored against the rest of the database.
            own = self._scores(self.db_vecs, self.db_toks, exclude_self=True)
            weights = ref.counts if len(own) == len(ref.seqs) else None
            sample = np.repeat(own, weights.astype(int)) if weights is not None else own
            self.threshold = quantile_threshold(sample, quantile)
            log.info("rapid: threshold %.4f = %.3f quantile of the reference set's leave-one-out scores",
                     self.threshold, quantile)

    def _scores(self, vecs: np.ndarray, toks: list[np.ndarray], exclude_self: bool = False) -> np.ndarray:
        sims = vecs @ self.db_vecs.T  # (N, D) cosine similarities of the retrieval vectors
        if exclude_self:
            np.fill_diagonal(sims, -np.inf)
        k = min(self.top_k, self.db_vecs.shape[0] - int(exclude_self))
        if k <= 0:
            return np.zeros(len(toks))
        nearest = np.argsort(-sims, axis=1)[:, :k]
        out = np.empty(len(toks))
        for i, cand in enumerate(nearest):
            best = np.inf
            for j in cand:
                # for every test token, cosine distance to the closest token of the neighbour; the worst counts
                token_d = float((1.0 - (toks[i] @ self.db_toks[j].T).max(1)).max())
                d = token_d if self.only_tokens else token_d + float(1.0 - sims[i, j])
                best = min(best, d)
            out[i] = best
        return out

    def score(self, data: MethodInput) -> np.ndarray:
        tokens = self._token_vectors(data)
        d, _ = distinct(data.messages)
        vecs, toks = self._represent(d.seqs, tokens)
        return self._scores(vecs, toks)[d.inverse]

    def predict(self, data: MethodInput) -> np.ndarray:
        return predict(self.score(data), self.threshold)

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        offsets = np.cumsum([0] + [len(t) for t in self.db_toks]).astype(np.int64)
        return ({"db_vecs": self.db_vecs, "db_toks": np.concatenate(self.db_toks), "db_offsets": offsets},
                {"top_k": self.top_k, "only_tokens": bool(self.only_tokens), "threshold": float(self.threshold)})

    def set_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.top_k = int(info["top_k"])
        self.only_tokens = bool(info["only_tokens"])
        self.threshold = float(info["threshold"])
        self.db_vecs = np.asarray(arrays["db_vecs"])
        toks, offsets = np.asarray(arrays["db_toks"]), np.asarray(arrays["db_offsets"])
        self.db_toks = [toks[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]
