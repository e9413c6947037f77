"""Where a split's sequences come from: their position in the input files (the timeline's x axis)
and the raw text of chosen lines, read back from the files the prepared folder's manifest lists.

A prepared split records, per message, ``file_index`` (into ``manifest["inputs"]``) and the 1-based
``line_numbers`` in that file (docs/data.md), so a sequence's lines can be shown as they were
written, as long as the input files are still where `prepare` read them and unchanged in size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from logllm.data.dataset import PreparedData

log = logging.getLogger(__name__)

#: raw lines longer than this are cut in the page (the cut is marked with "...")
MAX_LINE_CHARS = 400


@dataclass
class SplitLines:
    """The sequences of one prepared split with their messages and source lines, by sequence id."""

    message_ids: list[np.ndarray]
    file_index: list[np.ndarray]
    line_numbers: list[np.ndarray]
    row: dict[str, int]

    @classmethod
    def load(cls, data: PreparedData, split: str) -> SplitLines:
        df = data.split(split)
        ids = df["sequence_id"].to_list()
        return cls(
            message_ids=[np.asarray(m, dtype=np.int64) for m in df["message_ids"].to_list()],
            file_index=[np.asarray(f, dtype=np.int64) for f in df["file_index"].to_list()],
            line_numbers=[np.asarray(n, dtype=np.int64) for n in df["line_numbers"].to_list()],
            row={sid: i for i, sid in enumerate(ids)},
        )


def input_name(data: PreparedData, index: int) -> str:
    """The file name (no folder) of input ``index``, or ``input #index`` when the manifest lacks it."""
    inputs = data.inputs
    if 0 <= index < len(inputs) and inputs[index].get("path"):
        return Path(str(inputs[index]["path"])).name
    return f"input #{index}"


def where(data: PreparedData, lines: SplitLines, row: int) -> str:
    """``file:first-last`` of a sequence (its first message's file; ``+ n files`` if it spans more)."""
    files, nums = lines.file_index[row], lines.line_numbers[row]
    if len(nums) == 0:
        return "(no lines)"
    first = int(files[0])
    in_first = nums[files == first]
    text = f"{input_name(data, first)}:{int(in_first.min())}-{int(in_first.max())}"
    others = len(set(files.tolist())) - 1
    return text + (f" + {others} more file(s)" if others else "")


def timeline_positions(data: PreparedData, lines: SplitLines,
                       sequence_ids: list[str]) -> tuple[np.ndarray, str, list[tuple[float, str]]]:
    """x of each sequence for the timeline: its first line's position in the inputs taken end to end
    (manifest order), the axis label, and the start position of each file when there are several.

    Sequence ids the split does not hold (scores of other data) fall back to the order in the scores
    file, for every sequence, with a warning.
    """
    rows = [lines.row.get(sid) for sid in sequence_ids]
    missing = sum(r is None for r in rows)
    empty = sum(1 for r in rows if r is not None and len(lines.line_numbers[r]) == 0)
    if missing or empty:
        log.warning("timeline: %d of %d sequences not found in %s and %d without lines; drawn in their order "
                    "in scores.parquet instead of by line", missing, len(rows), data.root, empty)
        return np.arange(len(rows), dtype=np.float64), "sequence (order in scores.parquet)", []
    n_files = max([len(data.inputs)] + [int(lines.file_index[r].max()) + 1 for r in rows if r is not None])
    longest = np.zeros(n_files, dtype=np.int64)
    for f, n in zip(lines.file_index, lines.line_numbers):
        if len(n):
            np.maximum.at(longest, f, n)
    sizes = [int(data.inputs[i].get("lines") or 0) if i < len(data.inputs) else 0 for i in range(n_files)]
    sizes = [max(s, int(m)) for s, m in zip(sizes, longest)]
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.float64)
    x = np.array([offsets[lines.file_index[r][0]] + lines.line_numbers[r][0] for r in rows], dtype=np.float64)
    if n_files == 1:
        return x, f"line number of the sequence's first line in {input_name(data, 0)}", []
    bounds = [(float(offsets[i]) + 1, input_name(data, i)) for i in range(n_files)]
    return x, "line position across the input files, end to end in manifest order (first line of each sequence)", bounds


@dataclass
class RawLines:
    """Raw text by ``(file_index, line_number)``, and a note per file that could not be read."""

    text: dict[tuple[int, int], str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _locate(data: PreparedData, recorded: str) -> Path | None:
    path = Path(recorded)
    tries = [path] if path.is_absolute() else [path, data.root / path, data.root.parent / path]
    return next((p for p in tries if p.is_file()), None)


def read_raw_lines(data: PreparedData, wanted: Mapping[int, set[int]]) -> RawLines:
    """The raw lines ``wanted`` (file index -> line numbers), read from the manifest's input files.

    A file is read only up to its last wanted line. A file not found, or whose size differs from
    the manifest's (it changed since `prepare`, so its line numbers may not match), is not read;
    each such file, and any wanted line past a file's end, gets a note (and a warning in the log).
    """
    out = RawLines()
    inputs = data.inputs
    for index in sorted(wanted):
        need = wanted[index]
        if not need:
            continue
        if index >= len(inputs) or not inputs[index].get("path"):
            out.notes.append(f"input #{index} is not in {data.root}/manifest.json")
            continue
        recorded = str(inputs[index]["path"])
        path = _locate(data, recorded)
        if path is None:
            out.notes.append(f"{recorded}: not found (looked from the working folder and beside {data.root})")
            continue
        size, expected = path.stat().st_size, inputs[index].get("bytes")
        if expected and size != expected:
            out.notes.append(f"{path}: {size:,} bytes, the manifest says {expected:,}: the file changed since "
                             "`logllm prepare`, so its line numbers may not match; its lines are not shown")
            continue
        last = max(need)
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                if number in need:
                    text = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
                    cut = text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS] + "..."
                    out.text[(index, number)] = cut
                if number >= last:
                    break
        short = sorted(n for n in need if (index, n) not in out.text)
        if short:
            out.notes.append(f"{path}: {len(short)} wanted line(s) past its end (first: {short[0]})")
    for note in out.notes:
        log.warning("report: raw lines: %s", note)
    return out
