"""Import the CSV files the paper's reference code writes (``logllm prepare logllm-csv``).

Each row is one sequence: ``Content`` holds its messages joined by `` ;-; `` and ``Label`` its label
(0/1, or normal/anomalous). Split membership is kept as given (one CSV per split).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import polars as pl

from logllm.data.labels import ANOMALOUS, NORMAL
from logllm.data.masking import mask_series
from logllm.data.options import PrepareOptions
from logllm.data.readers import check_inputs, fix_utf8
from logllm.errors import DataError

log = logging.getLogger(__name__)

SEPARATOR = " ;-; "
MAX_EXAMPLES = 5
ID_COLUMNS = ("BlockId", "SessionId", "session_id", "sequence_id", "id")


def import_csv(o: PrepareOptions) -> tuple[dict[str, pl.DataFrame], list[str], list[dict], dict]:
    """Read the CSVs of ``o.inputs`` (split names in ``o.csv_splits``); returns splits, messages,
    input records and counts for the manifest."""
    infos = check_inputs(o.inputs, what="--train/--test/--val")
    if len(o.csv_splits) != len(o.inputs):
        raise DataError("logllm-csv: each CSV needs its split (pass --train, --test and optionally --val)")
    messages: dict[str, int] = {}
    splits: dict[str, pl.DataFrame] = {}
    lines = truncated = invalid = 0
    invalid_examples: list[str] = []
    inputs = []
    for index, (info, split) in enumerate(zip(infos, o.csv_splits)):
        path = info.path
        # One read: hashed for the manifest, invalid UTF-8 replaced (U+FFFD) and counted per line the
        # way the raw-log readers do (Loghub-derived CSVs can hold latin-1 bytes).
        data = Path(path).read_bytes()
        sha256 = hashlib.sha256(data).hexdigest()
        data, bad_lines = fix_utf8(data, 1)
        if bad_lines:
            invalid += len(bad_lines)
            invalid_examples += [f"{path}:{n}" for n in bad_lines[: max(MAX_EXAMPLES - len(invalid_examples), 0)]]
            log.warning("%s: %d line(s) with invalid UTF-8 decoded with replacement (first: line %d)",
                        path, len(bad_lines), bad_lines[0])
        try:
            df = pl.read_csv(data, infer_schema=False, encoding="utf8-lossy")
        except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as err:
            raise DataError(f"{path}: not a readable CSV ({err})") from err
        for col in ("Content", "Label"):
            if col not in df.columns:
                raise DataError(f"{path}: column {col!r} missing (found {df.columns}); the reference code's "
                                "CSVs have Content (messages joined by ' ;-; ') and Label")
        raw = pl.col("Label").str.strip_chars().str.to_lowercase()
        labels = df.select(pl.when(raw.is_in(list(ANOMALOUS))).then(1).when(raw.is_in(list(NORMAL))).then(0)
                           .otherwise(None).cast(pl.Int8).alias("label"))["label"]
        bad = labels.is_null() & df["Label"].is_not_null()
        if bad.any():
            i = int(bad.arg_max())
            raise DataError(f"{path}:{i + 2}: Label {df['Label'][i]!r} is not 0/1 or normal/anomalous")
        id_col = next((c for c in ID_COLUMNS if c in df.columns), None)
        ids = (df[id_col].cast(pl.String) if id_col else
               pl.Series([f"{Path(path).stem}:{i + 1}" for i in range(len(df))], dtype=pl.String))
        parts = df["Content"].fill_null("").str.split(SEPARATOR)
        flat = parts.explode()
        lengths = parts.list.len().to_numpy()
        long = flat.str.len_chars() > o.max_line_chars
        if long.any():
            truncated += int(long.sum())
            flat = flat.str.head(o.max_line_chars)
        masked = mask_series(flat, o.mask)
        uniq = masked.unique(maintain_order=True)
        uid = np.fromiter((messages.setdefault(t, len(messages)) for t in uniq.to_list()), dtype=np.uint32,
                          count=len(uniq))
        mid = masked.replace_strict(uniq, pl.Series(uid, dtype=pl.UInt32), return_dtype=pl.UInt32)
        row = np.repeat(np.arange(len(df), dtype=np.int64), lengths)
        # Points at the CSV record: header is line 1, so record i is "line" i + 2.
        frame = pl.DataFrame({"_r": row, "message_id": mid,
                              "file_index": np.full(len(row), index, dtype=np.uint16),
                              "line_number": (row + 2).astype(np.uint64)})
        seqs = frame.group_by("_r", maintain_order=True).agg(
            pl.col("message_id").alias("message_ids"), pl.col("file_index"),
            pl.col("line_number").alias("line_numbers"))
        seqs = seqs.with_columns(ids.gather(seqs["_r"]).alias("sequence_id"), labels.gather(seqs["_r"]).alias("label"))
        seqs = seqs.select("sequence_id", "label", "message_ids", "file_index", "line_numbers")
        if split in splits:
            raise DataError(f"logllm-csv: split {split!r} given twice")
        splits[split] = seqs
        lines += len(flat)
        inputs.append({"path": path, "bytes": info.bytes, "sha256": sha256, "lines": len(df) + 1})
        log.info("%s: %d sequences (%s), %d messages", path, len(seqs), split, len(flat))
    all_ids = pl.concat([s["sequence_id"] for s in splits.values()])
    if all_ids.is_duplicated().any():
        dup = all_ids.filter(all_ids.is_duplicated())[0]
        raise DataError(f"logllm-csv: sequence id {dup!r} appears more than once across the CSVs")
    counts = {"lines": lines, "unparsed_lines": 0, "skipped_lines": 0, "unparsed_examples": [],
              "truncated_lines": truncated, "invalid_utf8_lines": invalid,
              "invalid_utf8_lines_examples": invalid_examples}
    return splits, list(messages), inputs, counts
