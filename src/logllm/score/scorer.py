"""The scoring stage of `logllm score`: a run loaded once, sequence rows in, detection rows out.

`RunScorer` wraps the run's `logllm.detect.Detector` (`Detector.from_run`: the model, the
threshold), and scores through its public score cache (`Detector.cache`, one model call per batch,
equal sequences scored once), as `detect` does, so a sequence gets the same score (up to float
rounding of batch padding, well under 1e-6) and the same label. No explanations: use `logllm detect`
on the flagged line ranges for those.

Detection rows hold `DETECTION_COLUMNS`: the columns of `detect`'s JSON objects but ``top``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# `logllm detect`'s JSON keys (`Detection.to_dict`) without the explanations (`top`, `explained_by`);
# ``spans`` (every file and line range of the sequence) last.
DETECTION_COLUMNS = ("source", "sequence_id", "first_line", "last_line", "lines", "score", "threshold",
                     "anomalous", "reason", "label", "spans")


class RunScorer:
    """Scores sequence rows (`logllm.score.sequences`) with a run; build one per process or Ray actor.

    threshold: instead of the run's ``threshold.json``; overrides: `prepare`-style preprocessing
    overrides (checked again here, as `detect` does); batch_size: sequences per model call (speed only);
    max_cached_texts: distinct messages kept in the model's vector cache before it restarts;
    model: a ready model instead of the run's (tests; anything with ``score(texts, sequences, batch_size)``).
    """

    def __init__(self, run_dir: str | Path, *, threshold: float | None = None,
                 overrides: dict[str, Any] | None = None, batch_size: int = 64,
                 max_cached_texts: int = 200_000, model: Any | None = None):
        from logllm.detect import Detector

        self.detector = Detector.from_run(run_dir, threshold=threshold, overrides=overrides, model=model,
                                          explain="none", top_k=0, batch_size=batch_size,
                                          max_cached_texts=max_cached_texts)
        self.threshold = self.detector.threshold
        self.max_cached_texts = max_cached_texts
        self._texts_seen: set[str] = set()

    def _bound_encoder_cache(self, sequences: Sequence[Sequence[str]]) -> None:
        """The frozen-encoder cache grows with every distinct message; restart it past the bound (as `detect`)."""
        model = self.detector.model
        if not hasattr(model, "freeze_encoder_cache"):
            return
        for messages in sequences:
            self._texts_seen.update(messages)
        if len(self._texts_seen) > self.max_cached_texts:
            log.info("more than %d distinct messages cached: encoder cache restarted", self.max_cached_texts)
            model.clear_cache()
            model.freeze_encoder_cache([])
            self._texts_seen = set()

    def score_rows(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sequence rows -> detection rows (``kind``, ``file_index`` and `DETECTION_COLUMNS`); file rows
        pass through with a NaN score, in place, so the order of rows is kept."""
        seqs = [r for r in rows if r["kind"] == "sequence"]
        messages = [list(r["messages"]) for r in seqs]
        self._bound_encoder_cache(messages)
        scores = self.detector.cache.score_texts(messages) if messages else []
        scored = iter(scores)
        out = []
        for r in rows:
            d = {"kind": r["kind"], "file_index": int(r["file_index"]), "source": r["source"],
                 "sequence_id": r["sequence_id"], "first_line": int(r["first_line"]),
                 "last_line": int(r["last_line"]), "lines": int(r["lines"]), "reason": r["reason"],
                 "spans": r.get("spans", ""), "report": r["report"]}
            if r["kind"] == "sequence":
                score = float(next(scored))
                anomalous = score >= self.threshold
                d.update(score=score, threshold=self.threshold, anomalous=anomalous,
                         label="anomalous" if anomalous else "normal")
            else:
                d.update(score=float("nan"), threshold=self.threshold, anomalous=False, label="")
            out.append(d)
        return out
