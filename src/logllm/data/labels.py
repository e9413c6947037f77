"""Sequence labels from a labels file (HDFS's ``anomaly_label.csv``: ``BlockId,Label``)."""

from __future__ import annotations

import logging

import polars as pl

from logllm.data.readers import check_inputs
from logllm.errors import DataError

log = logging.getLogger(__name__)

ANOMALOUS = {"anomaly", "anomalous", "abnormal", "1", "true", "yes"}
NORMAL = {"normal", "0", "false", "no", "-"}


def read_labels(path: str) -> pl.DataFrame:
    """``(sequence_id: String, label: Int8)`` from a two-column CSV with a header row.

    Label values (case-insensitive): Anomaly/Anomalous/Abnormal/1/true -> 1, Normal/0/false/- -> 0.
    The header is required: a first row whose second column is a label value is data, and a file
    without a header is refused (it would silently lose its first row).
    """
    check_inputs([path], what="--labels")
    try:
        df = pl.read_csv(path, infer_schema=False, quote_char='"')
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as err:
        raise DataError(f"--labels {path}: not a readable CSV ({err})") from err
    if df.width < 2:
        raise DataError(f"--labels {path}: expected two columns (id,label), found {df.columns}")
    first = df.columns[1].strip().lower()
    if first in ANOMALOUS or first in NORMAL:
        raise DataError(f"{path}:1: the first row {','.join(df.columns[:2])!r} is data, not a header: a labels "
                        "file needs a header row. Add one as its first line, e.g. 'BlockId,Label' "
                        f"(sed -i '1i BlockId,Label' {path})")
    df = df.select(pl.col(df.columns[0]).str.strip_chars().alias("sequence_id"),
                   pl.col(df.columns[1]).str.strip_chars().str.to_lowercase().alias("raw"))
    label = (pl.when(pl.col("raw").is_in(list(ANOMALOUS))).then(1)
             .when(pl.col("raw").is_in(list(NORMAL))).then(0).otherwise(None).cast(pl.Int8))
    df = df.with_columns(label.alias("label"))
    bad = df.with_row_index("row").filter(pl.col("label").is_null())
    if len(bad):
        row = bad.row(0, named=True)
        raise DataError(f"{path}:{row['row'] + 2}: label {row['raw']!r} for {row['sequence_id']!r} is not "
                        "a known value; use Anomaly/Normal (or 1/0)")
    dup = df.filter(pl.col("sequence_id").is_duplicated())
    if len(dup):
        raise DataError(f"--labels {path}: id {dup['sequence_id'][0]!r} appears more than once")
    log.info("%s: %d labels (%d anomalous)", path, len(df), int(df["label"].sum()))
    return df.select("sequence_id", "label")
