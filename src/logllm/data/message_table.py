"""The table of distinct masked messages that `prepare` builds: ids in order of first appearance."""

from __future__ import annotations

import numpy as np
import polars as pl


class MessageTable:
    """Distinct masked messages, ids in order of first appearance."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def ids_of(self, texts: pl.Series) -> np.ndarray:
        ids = self.ids
        return np.fromiter((ids.setdefault(t, len(ids)) for t in texts.to_list()), dtype=np.uint32,
                           count=len(texts))

    def map(self, masked: pl.Series) -> np.ndarray:
        """Per-row ids of a (long) column of masked texts."""
        uniq = masked.unique(maintain_order=True)
        ids = self.ids_of(uniq)
        return masked.replace_strict(uniq, pl.Series(ids, dtype=pl.UInt32), return_dtype=pl.UInt32).to_numpy()

    @property
    def texts(self) -> list[str]:
        return list(self.ids)
