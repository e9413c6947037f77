"""Session labels from Loghub's Hadoop ``abnormal_label.txt``, and the one entry point that reads
``--labels`` in either format: :func:`read_session_labels`.

Loghub's Hadoop logs hold one folder per application (``application_1445087491445_0005``) and a text
file listing the applications under a heading per failure type::

    The logs are generated from a Hadoop cluster ...      (free text: ignored, counted)

    ### WordCount                                        (a job title: ignored)
    Normal:                                              (a category heading; '### Normal:' also works)
    + application_1445087491445_0005
    Machine down:
    + application_1445087491445_0001
    Network disconnection:
    ...
    Disk full:
    ...

``Normal`` means normal (label 0); every other category (machine down, network disconnection, disk
full, ...) means anomalous (label 1). The category of each application is kept in the result
(``category``), so a user can tell the failure types apart.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import polars as pl

from logllm.data.labels import read_labels
from logllm.data.options import LABELS_FORMATS
from logllm.data.readers import check_inputs
from logllm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["read_hadoop_labels", "read_session_labels"]

NORMAL_CATEGORY = "normal"
# "Machine down:", "### Disk full:" (a category); "+ application_..." (an entry); "### WordCount" (a title).
_CATEGORY = re.compile(r"^#*\s*([A-Za-z][A-Za-z0-9 _\-/]*?)\s*:\s*$")
_ENTRY = re.compile(r"^\+\s*(\S+)\s*$")
_TITLE = re.compile(r"^#+\s*\S")


def read_hadoop_labels(path: str) -> pl.DataFrame:
    """``(sequence_id: String, label: Int8, category: String)`` from a Loghub Hadoop ``abnormal_label.txt``.

    A line ``NAME:`` (optionally after ``#`` marks) opens a category; ``+ ID`` lists an application
    under the open one; ``### TITLE`` lines and free text are ignored (counted in the log). An entry
    before any category, or one id listed under two categories, is a :class:`DataError` naming the
    file and line.
    """
    check_inputs([path], what="--labels")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"--labels {path}: cannot read it as UTF-8 text ({err})") from err
    ids: list[str] = []
    categories: list[str] = []
    seen: dict[str, tuple[int, str]] = {}
    category: str | None = None
    ignored = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        entry = _ENTRY.match(line)
        if entry:
            ident = entry.group(1)
            if category is None:
                raise DataError(f"{path}:{number}: entry {ident!r} comes before any category heading "
                                "(e.g. 'Normal:' or 'Machine down:'); is this Loghub's abnormal_label.txt?")
            if ident in seen:
                first, first_category = seen[ident]
                if first_category != category:
                    raise DataError(f"{path}:{number}: {ident!r} is listed under {category!r} and, at line "
                                    f"{first}, under {first_category!r}; keep one")
                continue
            seen[ident] = (number, category)
            ids.append(ident)
            categories.append(category)
            continue
        heading = _CATEGORY.match(line)
        if heading:
            category = " ".join(heading.group(1).lower().split())
        elif _TITLE.match(line):
            category = None  # a new job title: its categories follow
        else:
            ignored += 1
    if not ids:
        raise DataError(f"--labels {path}: no '+ ID' entry under a category heading; with --labels-format "
                        "loghub-hadoop the file lists applications as in Loghub's abnormal_label.txt "
                        "('Normal:' then '+ application_...')")
    df = pl.DataFrame({"sequence_id": ids, "category": categories})
    df = df.with_columns((pl.col("category") != NORMAL_CATEGORY).cast(pl.Int8).alias("label"))
    per = df.group_by("category", maintain_order=True).len()
    log.info("%s: %d labels (%d anomalous): %s%s", path, len(df), int(df["label"].sum()),
             ", ".join(f"{c} {n}" for c, n in per.iter_rows()),
             f"; {ignored} line(s) of other text ignored" if ignored else "")
    return df.select("sequence_id", "label", "category")


def read_session_labels(path: str, labels_format: str = "csv") -> pl.DataFrame:
    """``(sequence_id, label)`` from ``--labels``: a CSV with a header (``csv``, see
    :func:`logllm.data.labels.read_labels`) or Loghub's Hadoop ``abnormal_label.txt`` (``loghub-hadoop``)."""
    if labels_format == "csv":
        return read_labels(path)
    if labels_format == "loghub-hadoop":
        return read_hadoop_labels(path).select("sequence_id", "label")
    raise ConfigError(f"--labels-format {labels_format!r}: choose one of {', '.join(LABELS_FORMATS)}")
