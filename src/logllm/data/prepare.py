"""`logllm prepare`: raw log files -> a prepared folder (see :mod:`logllm.data.dataset`).

    from logllm.data.prepare import PrepareOptions, prepare
    result = prepare(PrepareOptions(family="hdfs", inputs=("HDFS.log",), labels="anomaly_label.csv"), "out/hdfs")
    print(result.summary())

The input is read in chunks of whole lines. For the built-in families with paper masking each chunk is
processed once per *distinct digit-normalised line* (masking, format matching and label rules do not
depend on which digits a line holds; see :mod:`logllm.data.masking`), which is what makes it fast;
custom formats go through :class:`logllm.data.parsing.LineParser` line by line (in polars). Both give
identical output (tested).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.ma  # noqa: F401  (polars looks for masked arrays whenever it builds a Series from an array)
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from logllm import __version__
from logllm.data import linescan, threads
from logllm.data.dataset import MESSAGE_SCHEMA, PreparedWriter
from logllm.data.formats import FAMILY_FIELD_PATTERNS, guess_families
from logllm.data.labels import read_labels
from logllm.data.linescan import DistinctLines
from logllm.data.manifest import file_record
from logllm.data.masking import mask_series
from logllm.data.options import HDFS_SESSION_REGEX, WINDOWED_FAMILIES, PrepareOptions, parse_duration
from logllm.data.parsing import LineParser, ParsedBatch, _clip
from logllm.data.readers import LineChunk, LineReader, group_lines, lines_series
from logllm.data.splits import chronological_bounds, random_split
from logllm.data.windows import (
    SEQ_AGG,
    SEQUENCE_COLUMNS,
    cut_at,
    fixed_windows,
    lines_in_windows,
    time_windows,
)
from logllm.errors import DataError
from logllm.versions import library_versions

log = logging.getLogger(__name__)

__all__ = ["PrepareOptions", "PrepareResult", "prepare"]

MAX_EXAMPLES = 5
SPLIT_ORDER = ("train", "val", "test")


@dataclass
class PrepareResult:
    """What `prepare` wrote: the folder, its manifest, and how long it took."""

    out: Path
    manifest: dict
    seconds: float = 0.0

    def summary(self) -> str:
        """A one-screen text summary (counts per split, anomaly ratio, unparsed lines)."""
        m = self.manifest
        o = m["options"]
        lines = [
            f"prepared {o['family']} -> {self.out}",
            f"  input: {len(m['inputs'])} file(s), {m['lines']:,} lines"
            + (f" (range {o['start_line'] or 1}-{o['end_line'] or 'end'})" if o["start_line"] or o["end_line"] else ""),
            f"  distinct messages: {m['distinct_messages']:,} (mask: {o['mask']})",
            f"  {'split':<6} {'sequences':>10} {'anomalous':>10} {'ratio':>8} {'lines':>11}",
        ]
        for name in SPLIT_ORDER:
            if name in m["splits"]:
                s = m["splits"][name]
                ratio = s["anomalous"] / s["sequences"] if s["sequences"] else 0.0
                lines.append(f"  {name:<6} {s['sequences']:>10,} {s['anomalous']:>10,} {ratio:>8.2%} {s['lines']:>11,}")
        dropped = m.get("dropped_lines") or {}
        if dropped:
            total = sum(dropped.values())
            lines.append(f"  {'none':<6} {'':>10} {'':>10} {'':>8} {total:>11,}  lines in no sequence "
                         f"({total / max(m['lines'], 1):.2%} of the input):")
            lines += [f"    {text}" for text in _dropped_text(dropped, o)]
        unlabeled = sum(s.get("unlabeled", 0) for s in m["splits"].values())
        if unlabeled:
            lines.append(f"  unlabeled sequences: {unlabeled:,} (no label source; fine for detection, not for training)")
        lines.append(f"  unparsed lines: {m['unparsed_lines']:,} (policy {o['on_unparsed']}"
                     + (f", {m['skipped_lines']:,} skipped" if m["skipped_lines"] else "") + ")")
        for ex in m["unparsed_examples"]:
            lines.append(f"    {ex}")
        for key, text in (("invalid_utf8_lines", "lines with invalid UTF-8 (decoded with replacement)"),
                          ("unlike_lines", f"lines unlike {o['family']} logs (header fields)"),
                          ("truncated_lines", f"lines truncated to {o['max_line_chars']:,} characters"),
                          ("bad_timestamps", "lines with an unreadable timestamp (previous one used)")):
            if m.get(key):
                lines.append(f"  {text}: {m[key]:,}" + (f" (first: {m[key + '_examples'][0]})"
                                                         if m.get(key + "_examples") else ""))
        ml = m.get("missing_labels")
        if ml and ml["count"]:
            lines.append(f"  sequences without a label: {ml['count']:,} ({ml['policy']})")
        lines.append(f"  time: {self.seconds:.2f} s")
        return "\n".join(lines)


class _Messages:
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


@dataclass
class _Counts:
    lines: int = 0
    unparsed: int = 0
    skipped: int = 0
    truncated: int = 0
    bad_timestamps: int = 0
    unparsed_examples: list[str] = field(default_factory=list)
    truncated_examples: list[str] = field(default_factory=list)
    invalid_examples: list[str] = field(default_factory=list)
    #: lines that match a built-in family's format but not what its logs hold (another log?)
    unlike: int = 0
    unlike_examples: list[str] = field(default_factory=list)
    #: unparsed lines that are not blank; the first of them and the first "unlike" line (file:line,
    #: text), for error messages
    unparsed_text: int = 0
    first_unparsed: tuple[str, str] | None = None
    first_unlike: tuple[str, str] | None = None


_MAX_SESSION_ID_BYTES = 256  # longer session ids take the per-line path
_MAX_NUMPY_REPEATS = 8  # integer session ids of lines with more matches are deduplicated in polars


def _fixed_rows(arr: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """``arr[start[i]:start[i] + width]`` as the rows of a matrix (numpy gathers whole rows through a
    strided view; zero-padded past the end of ``arr``, from a copy of its last bytes only)."""
    near_end = start > len(arr) - width
    if not near_end.any():
        return sliding_window_view(arr, width)[start]
    tail_from = max(len(arr) - width, 0)
    tail = np.zeros(2 * width, dtype=np.uint8)
    tail[: len(arr) - tail_from] = arr[tail_from:]
    rows = np.empty((len(start), width), dtype=np.uint8)
    if not near_end.all():
        rows[~near_end] = sliding_window_view(arr, width)[start[~near_end]]
    rows[near_end] = sliding_window_view(tail, width)[start[near_end] - tail_from]
    return rows


def _starts_from_lengths(arr: np.ndarray, length: np.ndarray) -> np.ndarray | None:
    """Line starts in ``arr`` (whole lines, ``len(length)`` of them, each ending in ``\\n``) if line i
    has ``length[i]`` bytes before its ``\\n``; None if not. No pass over the bytes: the lengths cut
    ``arr`` into as many pieces as it has line ends, and if every piece ends in ``\\n`` the pieces are
    the lines (n pieces each holding at least one of the n line ends hold exactly one)."""
    starts = np.empty(len(length) + 1, dtype=np.int64)
    starts[0] = 0
    np.add(length, 1, out=starts[1:])
    np.cumsum(starts, out=starts)  # starts[i + 1]: the end of line i, past its "\n"
    if not len(length) or int(starts[-1]) != len(arr):
        return None
    ends = starts[1:]
    ends -= 1
    ok = (arr[ends] == 10).all()
    ends += 1
    return starts[:-1] if ok else None


def _binary_rows(rows: np.ndarray, length: np.ndarray) -> pl.Series:
    """Row i of ``rows`` cut to ``length[i]`` bytes, as a Binary Series (in polars, no per-item Python)."""
    binary = pl.Series("b", rows).cast(pl.List(pl.UInt8)).cast(pl.Binary)
    return binary.to_frame().select(pl.col("b").bin.head(pl.lit(pl.Series(length)))).to_series()


def _low_bytes(k: int) -> int:
    """A uint64 with its ``k`` (clipped to 0..8) lowest bytes set."""
    return (1 << (8 * min(max(k, 0), 8))) - 1


#: ``_LEADING[k]``: per word of a 24-byte field, the mask of the bytes among its first ``k``.
_LEADING = np.array([[_low_bytes(k - 8 * j) for j in range(3)] for k in range(25)], dtype=np.uint64)
#: ``_DIGIT_BYTES[d]``: the mask of the last ``d`` bytes of a 24-byte field (d <= 24).
_DIGIT_BYTES = ~_LEADING[24 - np.arange(25)]
_POW10 = np.array([10**k for k in range(20)], dtype=np.uint64)


def _block_id_keys(arr: np.ndarray, start: np.ndarray, length: np.ndarray, negative: np.ndarray,
                   block: int = 1 << 14) -> np.ndarray | None:
    """HDFS block ids (``blk_-?[0-9]+`` at ``arr[start:start + length]``) as signed 64-bit integers
    (``blk_-12`` -> -12), in numpy; None unless each id is its integer's decimal form (no leading
    zero, no ``-0``, at most 19 digits and within int64), so that equal keys mean equal ids and
    ``blk_{key}`` spells the id.

    The digits are right-aligned in a 24-byte field read as three little-endian uint64 words (first
    byte lowest), the bytes before the digits are set to "0", and each word's 8 digits are converted
    at once (SWAR: pairs, then quads, then octets of digits). Blocks of ``block`` ids keep the
    temporaries small (no page faults for chunk-sized ones); two threads take the blocks of many
    ids in turn (``threads.in_blocks``). Grouping lines into sessions then hashes integers instead
    of strings, and only the distinct ids are spelled out.
    """
    n = len(start)
    digits = length - 4 - negative
    end = start + length
    if not n or int(digits.min()) < 1 or int(digits.max()) > 19 or int(end.min()) < 24:
        return None
    keys = np.empty(n, dtype=np.int64)

    def fill(blocks: Iterator[tuple[int, int]]) -> bool:
        for i, j in blocks:
            part = _block_id_values(arr, end[i:j], digits[i:j], negative[i:j])
            if part is None:
                return False
            keys[i:j] = part
        return True

    # An id is about 32 bytes of numpy work: split as a byte pass of that size would be.
    return keys if all(threads.in_blocks(fill, n, block, min_bytes=threads.MIN_PARALLEL_BYTES // 32)) else None


def _block_id_values(arr: np.ndarray, end: np.ndarray, digits: np.ndarray,
                     negative: np.ndarray) -> np.ndarray | None:
    """The keys of :func:`_block_id_keys` for ids ending at ``end`` with ``digits`` digits."""
    x = sliding_window_view(arr, 24)[end - 24].view("<u8")  # (n, 3): a copy of each id's last 24 bytes
    x ^= np.uint64(0x3030303030303030)  # "0".."9" -> 0..9 (no borrows, unlike a subtraction)
    x &= _DIGIT_BYTES[digits]  # each byte holds its digit (0 before the first digit)
    # Pairs, quads, octets of digits: lane = high digits * 10^k + low digits, in place (the first
    # digit is the lowest byte; the products' spill into the next lane is masked off or shifted out).
    x *= np.uint64(10 * 2**8 + 1)
    x >>= np.uint64(8)
    for mul, shift, mask in ((100 * 2**16 + 1, 16, 0x00FF00FF00FF00FF), (10000 * 2**32 + 1, 32, 0x0000FFFF0000FFFF)):
        x &= np.uint64(mask)
        x *= np.uint64(mul)
        x >>= np.uint64(shift)
    value = x[:, 0] * np.uint64(10**16) + x[:, 1] * np.uint64(10**8) + x[:, 2]
    if ((value < _POW10[digits - 1]) & (digits > 1)).any():
        return None  # a leading zero
    if (value > np.uint64(2**63 - 1)).any() or (negative & (value == 0)).any():
        return None
    keys = value.astype(np.int64)
    np.negative(keys, out=keys, where=negative)
    return keys


def _is_blank(lines: pl.Series) -> np.ndarray:
    return (lines.str.strip_chars().str.len_bytes() == 0).to_numpy()


class _Preparer:
    def __init__(self, options: PrepareOptions, chunk_bytes: int | None, progress: bool):
        self.o = options
        self.messages = _Messages()
        self.counts = _Counts()
        self.keep_parser = LineParser(replace(options, on_unparsed="keep"), check_fields=True)
        self.fmt = self.keep_parser.format
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        self.session_rx = options.session_regex if options.sequence_kind == "sessions" else None
        # Whole-chunk shortcuts are valid when nothing downstream needs the digits of a line.
        self.fast = (options.masking.is_paper and not self.fmt.literal_has_digit
                     and options.family in ("hdfs", *WINDOWED_FAMILIES)
                     and (options.family != "hdfs" or options.session_regex == HDFS_SESSION_REGEX)
                     and not any(ch.isdigit() for v in options.normal_values for ch in v)
                     and options.label_rule in ("first_token", "none") and not options.time_window)
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ("message_id", "label", "file_index",
                                                                   "line_number", "timestamp")}
        self.sessions: list[pl.DataFrame] = []
        self.kept = 0
        self.no_session = 0
        #: lines of the input in no sequence, by reason (for the summary and the warning)
        self.dropped: dict[str, int] = {}
        # Two helper threads, each started on first use and ended with run(): one reads the labels file
        # and does the GIL-bound side work (see run); the other parses and masks a chunk's distinct lines
        # beside the session-id search (see process).
        self._helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare")
        self._parse_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare-parse")
        self._versions_job: Future[dict] | None = None  # library versions, read in the helper thread
        self.versions: dict | None = None

    # ---- per chunk -----------------------------------------------------------------------------
    def _where(self, chunk: LineChunk, idx: int) -> str:
        return f"{self.reader.inputs[chunk.file_index].path}:{chunk.first_line + idx}"

    def _raw_line(self, chunk: LineChunk, idx: int) -> str:
        return chunk.data.split(b"\n", idx + 1)[idx].decode("utf-8").removesuffix("\r")

    def process(self, chunk: LineChunk) -> None:
        o = self.o
        c = self.counts
        n = chunk.n_lines
        c.lines += n
        for num in chunk.invalid_utf8_lines[: MAX_EXAMPLES - len(c.invalid_examples)]:
            c.invalid_examples.append(f"{self.reader.inputs[chunk.file_index].path}:{num}")
        source = self.reader.inputs[chunk.file_index].path
        timestamp = None
        sess = None
        if self.fast:
            self._start_helper_work()
            grouped = group_lines(chunk)  # (normally made by the reader in its counting pass)
            chunk.distinct = None
            codes, uniq = grouped.codes, grouped.lines
            line_numbers = pl.Series(grouped.first + chunk.first_line, dtype=pl.UInt64)

            def parse_and_mask() -> tuple[ParsedBatch, np.ndarray]:
                batch = self.keep_parser.parse(uniq, source=source, line_numbers=line_numbers)
                return batch, self.messages.ids_of(mask_series(batch.content, o.mask))

            if self.session_rx:
                # Parsing and masking the distinct lines (polars) and finding the session ids (numpy)
                # are independent: the first runs in a helper thread while this thread does the second.
                parsing = self._parse_pool.submit(parse_and_mask)
                sess = self._fast_sessions(chunk, grouped, lambda: parsing.result()[0].content)
                batch, ids = parsing.result()
            else:
                batch, ids = parse_and_mask()
            mid = ids[codes]
            label = batch.label.fill_null(-1).to_numpy()[codes]
            parsed = batch.parsed.to_numpy()[codes]
            truncated = batch.truncated_rows.to_numpy()[codes] if batch.truncated else None
            unlike = batch.unlike_rows.to_numpy()[codes] if batch.unlike else None

            def blank(idx: np.ndarray) -> np.ndarray:
                return _is_blank(uniq)[codes[idx]]
        else:
            self._start_helper_work()
            lines = lines_series(chunk.data, n)
            batch = self.keep_parser.parse(lines, source=source, first_line=chunk.first_line)
            mid = self.messages.map(mask_series(batch.content, o.mask))
            label = batch.label.fill_null(-1).to_numpy()
            parsed = batch.parsed.to_numpy()
            truncated = batch.truncated_rows.to_numpy() if batch.truncated else None
            unlike = batch.unlike_rows.to_numpy() if batch.unlike else None
            timestamp = batch.timestamp

            def blank(idx: np.ndarray) -> np.ndarray:
                return _is_blank(lines.gather(idx))

            c.bad_timestamps += batch.bad_timestamps
        if self.session_rx and sess is None:
            content = batch.content
            if self.fast:  # the fast batch holds distinct digit-normalised lines: parse the raw lines
                log.debug("%s:%d: session ids by the per-line regex for this chunk (offsets not usable)",
                          source, chunk.first_line)
                content = self.keep_parser.parse(lines_series(chunk.data, n), source=source,
                                                 first_line=chunk.first_line).content
            ids = content.str.extract_all(self.session_rx).list.unique(maintain_order=True)
            sess = (pl.DataFrame({"line": np.arange(n, dtype=np.int64), "sid": ids})
                    .explode("sid").drop_nulls("sid"))
        if truncated is not None:
            idx = np.flatnonzero(truncated)
            c.truncated += len(idx)
            room = max(MAX_EXAMPLES - len(c.truncated_examples), 0)
            c.truncated_examples += [self._where(chunk, int(i)) for i in idx[:room]]
        bad = np.flatnonzero(~parsed)
        if len(bad):
            c.unparsed += len(bad)
            if o.on_unparsed == "fail":
                i = int(bad[0])
                raise DataError(f"{self._where(chunk, i)}: line does not match the log format "
                                f"{self.fmt.text!r}: {_clip(self._raw_line(chunk, i))!r}. "
                                "Fix --format, or pass --on-unparsed keep (content-only) or skip")
            room = MAX_EXAMPLES - len(c.unparsed_examples)
            c.unparsed_examples += [self._where(chunk, int(i)) for i in bad[:max(room, 0)]]
            text = bad[~blank(bad)]  # blank lines say nothing about the format
            c.unparsed_text += len(text)
            if len(text) and not c.first_unparsed:
                c.first_unparsed = (self._where(chunk, int(text[0])), _clip(self._raw_line(chunk, int(text[0]))))
        if unlike is not None:
            odd = np.flatnonzero(unlike)
            c.unlike += len(odd)
            room = MAX_EXAMPLES - len(c.unlike_examples)
            c.unlike_examples += [self._where(chunk, int(i)) for i in odd[:max(room, 0)]]
            if len(odd) and not c.first_unlike:
                c.first_unlike = (self._where(chunk, int(odd[0])), _clip(self._raw_line(chunk, int(odd[0]))))
        if o.on_unparsed == "skip":
            c.skipped += len(bad)
        # Which lines are kept (None: all of them, the usual case, without copies of the columns).
        keep = parsed if o.on_unparsed == "skip" and len(bad) else None

        def kept(values: np.ndarray) -> np.ndarray:
            return values if keep is None else values[keep]

        n_kept = n if keep is None else int(keep.sum())
        self.parts["message_id"].append(kept(mid))
        self.parts["label"].append(kept(label).astype(np.int8))
        self.parts["file_index"].append(np.full(n_kept, chunk.file_index, dtype=np.uint16))
        self.parts["line_number"].append(kept(np.arange(chunk.first_line, chunk.first_line + n, dtype=np.uint64)))
        if timestamp is not None:
            self.parts["timestamp"].append(kept(timestamp.to_numpy()))
        if sess is not None:
            rows = sess["line"].to_numpy()
            self.no_session += int((kept(np.bincount(rows, minlength=n)) == 0).sum())
            if keep is None:  # the global kept position of line i is self.kept + i
                pos = rows.astype(np.int64)
                pos += self.kept
                self.sessions.append(pl.DataFrame({"pos": pos, "sid": sess["sid"]}))
            else:
                pos = np.cumsum(keep) - 1 + self.kept  # global kept position of each line
                ok = keep[rows]
                self.sessions.append(pl.DataFrame({"pos": pos[rows[ok]], "sid": sess["sid"].filter(pl.Series(ok))}))
        self.kept += n_kept

    def _fast_sessions(self, chunk: LineChunk, grouped: DistinctLines,
                       content: Callable[[], pl.Series]) -> pl.DataFrame | None:
        """Session ids of a chunk without a regex pass over its raw text; None -> use the per-line way.

        Digit normalisation keeps every byte offset, so an id sits in a raw line exactly where its
        match sits in the line's distinct normalised line: the regex runs over the distinct lines only,
        and numpy copies the id bytes out of the raw chunk at line start + offset in the distinct line.
        ``content()`` gives the content of the distinct lines, asked for last (it may still be being
        parsed in another thread).
        """
        in_line = grouped.lines.str.count_matches(self.session_rx).to_numpy().astype(np.int64)
        sess = self._session_ids_at_offsets(chunk, grouped, in_line)
        if not (in_line == content().str.count_matches(self.session_rx).to_numpy()).all():
            return None  # a header names a session id: only matches in the content count
        return sess

    def _session_ids_at_offsets(self, chunk: LineChunk, grouped: DistinctLines,
                                in_line: np.ndarray) -> pl.DataFrame | None:
        """:meth:`_fast_sessions` given ``in_line``, the number of matches in each distinct line."""
        rx = self.session_rx
        arr = chunk.array
        uniq, codes = grouped.lines, grouped.codes
        # Offsets and counts fit in 32 bits below 2 GiB: half the memory (each chunk-sized array is
        # fresh memory, whose page faults cost about as much as the arithmetic).
        ix = np.int32 if len(arr) < 2**31 - 1 else np.int64  # (lines and matches are fewer than bytes)
        counts = in_line.astype(ix)[codes]
        total = int(counts.sum(dtype=np.int64))
        if total == 0:
            return pl.DataFrame({"line": np.zeros(0, dtype=np.int64), "sid": pl.Series([], dtype=pl.String)})
        # Matches in the distinct lines (Python's bytes regex over their join; few of them).
        blob = uniq.str.join("\n").item().encode()
        ulen = uniq.str.len_bytes().to_numpy().astype(np.int64)
        ustart = np.zeros(len(ulen), dtype=np.int64)
        np.cumsum(ulen[:-1] + 1, out=ustart[1:])
        spans = np.array([m.span() for m in re.finditer(rx.encode(), blob)], dtype=np.int64).reshape(-1, 2)
        k = np.searchsorted(ustart, spans[:, 0], side="right") - 1
        if (len(spans) != int(in_line.sum()) or (np.bincount(k, minlength=len(uniq)) != in_line).any()
                or (spans[:, 1] > ustart[k] + ulen[k]).any()):
            return None  # the bytes regex and polars' disagree (e.g. non-ASCII digits)
        found = uniq.str.extract_all(rx).explode().drop_nulls()
        if found.to_list() != [blob[a:b].decode() for a, b in spans.tolist()]:
            return None  # same counts, other texts (a non-ASCII digit next to an ASCII one)
        rel, mlen = spans[:, 0] - ustart[k], spans[:, 1] - spans[:, 0]
        if int(mlen.max()) > _MAX_SESSION_ID_BYTES:
            return None
        rel, mlen = rel.astype(ix), mlen.astype(ix)
        blob_arr = np.frombuffer(blob, dtype=np.uint8)
        ptr = np.zeros(len(in_line) + 1, dtype=ix)
        np.cumsum(in_line, out=ptr[1:])
        if rx == HDFS_SESSION_REGEX and grouped.starts is not None and linescan.available():
            # The C scanner reads every HDFS block id of every line as an integer, in one pass, at the
            # exact line starts it found; "-" (byte 4 of a match) is in the distinct line.
            negative = blob_arr[spans[:, 0] + 4] == ord("-")
            found = linescan.block_keys(arr, grouped.starts, codes, ptr, rel + 4 + negative,
                                        mlen - 4 - negative, negative)
            if found is not None:
                return pl.DataFrame({"line": found[0], "sid": found[1]})
        # Match j of raw line i is match ptr[codes[i]] + j of the distinct lines. (Built from
        # per-line arrays, in place where possible.)
        shift = ptr[codes]
        ends = np.cumsum(counts, dtype=ix)
        shift -= ends
        shift += counts  # ptr[codes[i]] - (index of the first match of raw line i)
        del ends
        m = np.repeat(shift, counts)
        del shift
        m += np.arange(total, dtype=ix)
        # Each raw line has the length of its distinct line (so the offsets carry over; a line end
        # "\r\n" counts as "\n"), and each id starts with its match's first bytes.
        want = ulen[codes]
        # (The C scanner's starts are exact: its distinct lines are the raw lines, digits aside.)
        starts = grouped.starts if grouped.starts is not None else _starts_from_lengths(arr, want)
        if starts is None:  # e.g. "\r\n" line ends: find the line ends in the raw bytes
            starts = chunk.line_starts()
            raw_len = np.empty(len(starts), dtype=np.int64)
            raw_len[:-1] = starts[1:] - 1 - starts[:-1]
            raw_len[-1:] = len(arr) - 1 - starts[-1:]
            if not (raw_len == want).all():
                cr = raw_len == want + 1
                cr[cr] = arr[starts[cr] + want[cr]] == 13
                if not ((raw_len == want) | cr).all():
                    return None
        del want
        id_start = np.repeat(starts.astype(ix, copy=False), counts)
        del starts
        id_start += rel[m]
        # Spot check: each id starts with its match's first byte.
        if not (arr[id_start] == blob_arr[spans[:, 0]][m]).all():
            return None
        keys = None
        if rx == HDFS_SESSION_REGEX:  # HDFS block ids as integers; "-" (byte 4) is in the distinct line
            keys = _block_id_keys(arr, id_start, mlen[m], (blob_arr[spans[:, 0] + 4] == ord("-"))[m])
        line = np.repeat(np.arange(len(counts), dtype=ix), counts)
        most = int(counts.max())
        if keys is not None and most <= _MAX_NUMPY_REPEATS:
            # A line naming the same id twice joins that session once: matches of a line are
            # consecutive, so a repeat has its first occurrence at most most - 1 places before it.
            repeat = np.zeros(len(line), dtype=bool)
            for k in range(1, most):
                repeat[k:] |= (line[k:] == line[:-k]) & (keys[k:] == keys[:-k])
            if repeat.any():
                line, keys = line[~repeat], keys[~repeat]
            return pl.DataFrame({"line": line, "sid": keys})
        if keys is not None:
            sess = pl.DataFrame({"line": line, "sid": keys})
        else:
            # The ids are ASCII: the regex is bytes-only and its matches are ASCII in the distinct
            # lines, and digit normalisation changes digits only.
            rows = _fixed_rows(arr, id_start, int(mlen.max()))
            sess = pl.DataFrame({"line": line, "sid": _binary_rows(rows, mlen[m]).cast(pl.String)})
        multi = counts[line] >= 2
        if multi.any():  # a line naming the same id twice joins that session once
            keep = np.ones(len(line), dtype=bool)
            sub = sess.filter(pl.Series(multi))
            keep[np.flatnonzero(multi)] = sub.select(pl.struct("line", "sid").is_first_distinct()).to_series().to_numpy()
            sess = sess.filter(pl.Series(keep))
        return sess

    # ---- whole run -----------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, pl.DataFrame], dict]:
        o = self.o
        kwargs = {"chunk_bytes": self.chunk_bytes} if self.chunk_bytes else {}
        self.reader = LineReader(o.inputs, o.start_line, o.end_line, group_lines=self.fast, **kwargs)
        with self._helper, self._parse_pool:
            # The labels file is read in a helper thread while the main thread reads the first chunk
            # (mostly in polars, without the GIL). Work that holds the GIL (library versions for the
            # manifest: importlib.metadata parses files in Python) is handed to it at once where the C
            # scanner groups the lines (it runs without the GIL), else once the first chunk is
            # digit-normalised: until then the main thread's two-thread numpy passes take the GIL
            # between blocks, and each hand-off from a thread that runs Python can cost a switch
            # interval (5 ms).
            if self.fast and linescan.available():
                self._start_helper_work()  # first: the C scanner runs without the GIL for a whole chunk
            elif self.fast:
                log.info("lines grouped without the C scanner (%s): same output, about 1.5x slower",
                         linescan.unavailable_reason())
            labels = (self._helper.submit(read_labels, o.labels) if o.labels and o.sequence_kind == "sessions"
                      else None)
            splits = self._run(labels)
            self.versions = self._start_helper_work().result()  # (normally started by the first chunk)
            return splits

    def _start_helper_work(self) -> Future[dict]:
        """Hand the GIL-bound side work to the helper thread (once); the library versions' Future."""
        if self._versions_job is None:
            self._versions_job = self._helper.submit(library_versions)
        return self._versions_job

    def _run(self, labels: Future[pl.DataFrame] | None) -> tuple[dict[str, pl.DataFrame], dict]:
        o = self.o
        self.labels = None
        total = sum(i.bytes for i in self.reader.inputs)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc="prepare", disable=None, leave=False)
        first_chunk = True
        for chunk in self.reader:
            self.process(chunk)
            if first_chunk:
                # A broken labels file fails after one chunk, not after minutes of parsing.
                self.labels = labels.result() if labels is not None else None
                if self.counts.unparsed == self.counts.lines:
                    self._no_line_parses(chunk)
            first_chunk = False
            if bar is not None:
                bar.update(chunk.size)
        if bar is not None:
            bar.close()
        if self.counts.lines == 0:
            raise DataError(f"no lines in range --start-line {o.start_line} --end-line {o.end_line} "
                            f"(the inputs have {self.reader.lines_read:,} lines)")
        self._check_input()
        columns = {k: np.concatenate(v) for k, v in self.parts.items() if v}
        self.parts.clear()
        table = pl.DataFrame(columns).with_columns(pl.col("label").replace(-1, None).cast(pl.Int8))
        kind = o.sequence_kind
        extra: dict = {}
        if kind == "sessions":
            splits, extra = self._sessions(table)
        else:
            splits = self._windows(table, kind)
        for name, df in splits.items():
            if len(df) == 0:
                log.warning("split %r is empty (%d sequences in all); adjust --train-ratio/--val-ratio",
                            name, sum(len(d) for d in splits.values()))
        return splits, extra

    def _check_input(self) -> None:
        """Stop when more than ``max_unparsed`` of the lines are not valid UTF-8, or do not match the
        format or look like the family's logs: the input is then most likely another kind of file
        (binary, compressed other than gzip) or log (another family or format), and what would be
        written is noise (e.g. every window anomalous, from dates read as labels)."""
        o, c = self.o, self.counts
        n, limit = c.lines, o.max_unparsed
        allow = (f"If such lines are expected, pass --on-unparsed keep (takes them as they are) or "
                 f"--max-unparsed above {limit:g}")
        invalid = self.reader.invalid_utf8
        if invalid > limit * n:
            raise DataError(f"{invalid:,} of {n:,} lines ({invalid / n:.0%}) are not valid UTF-8 (first: "
                            f"{c.invalid_examples[0]}): is the input a binary file, compressed other than by "
                            "gzip, or text in another encoding? Pass the text log (convert another encoding "
                            f"with e.g. iconv -f latin1 -t utf-8). {allow}")
        blank = c.unparsed - c.unparsed_text  # blank lines say nothing about the format: not counted
        n -= blank
        bad = c.unparsed_text + c.unlike
        if bad <= limit * n:
            return
        example, text = (c.first_unparsed if c.unparsed_text >= c.unlike else c.first_unlike) or ("", "")
        what = f"do not match the format {self.fmt.text!r}"
        if c.unlike:  # a built-in family read with its own format
            fields = ", ".join(f"<{f}>" for f in FAMILY_FIELD_PATTERNS[o.family])
            parts = [f"{c.unparsed_text:,} do not match its format"] if c.unparsed_text else []
            parts.append(f"{c.unlike:,} match it but their {fields} are not as in {o.family} logs")
            what = f"are not {o.family} log lines ({', '.join(parts)})"
        guess = [f for f in guess_families(text) if f != o.family]
        cause = (f"It looks like a log of family {' / '.join(guess)}: run `logllm prepare {guess[0]}`" if guess
                 else "Is it a log of another family, or in another format? Pass the right family or --format")
        raise DataError(f"{bad:,} of {n:,} {'non-blank ' if blank else ''}lines ({bad / n:.0%}) {what}; first: "
                        f"{example}: {text!r}. "
                        f"{cause}. {allow}")

    def _no_line_parses(self, chunk: LineChunk) -> None:
        raise DataError(f"{self.reader.inputs[chunk.file_index].path}: the log format {self.fmt.text!r} "
                        f"matches none of the first {chunk.n_lines:,} lines; first line "
                        f"{chunk.first_line}: {_clip(self._raw_line(chunk, 0))!r}. Pass the right --format "
                        "(Loghub style, e.g. '<Date> <Time> <Level> <Component>: <Content>')")

    def _sessions(self, table: pl.DataFrame) -> tuple[dict[str, pl.DataFrame], dict]:
        o = self.o
        parts = [df for df in self.sessions if len(df)]
        if any(df["sid"].dtype == pl.String for df in parts):  # spell integer block ids as strings
            parts = [df.with_columns(pl.format("blk_{}", "sid")) if df["sid"].dtype == pl.Int64 else df
                     for df in parts]
        sess = pl.concat(parts) if parts else pl.DataFrame(
            {"pos": np.zeros(0, dtype=np.int64), "sid": pl.Series([], dtype=pl.String)})
        pos = sess["pos"].to_numpy()
        if len(pos) == len(table) and (pos == np.arange(len(pos))).all():
            rows = table.with_columns(sess["sid"])  # one session per line (HDFS): no gather
        else:
            rows = table[pos].with_columns(sess["sid"])
        # Grouping by integer block ids (see _block_id_keys) is faster; each group is then named.
        seqs = rows.group_by("sid", maintain_order=True).agg(SEQ_AGG)
        name = pl.format("blk_{}", "sid") if seqs["sid"].dtype == pl.Int64 else pl.col("sid")
        seqs = seqs.with_columns(name.alias("sequence_id")).drop("sid")
        if len(seqs) == 0:
            raise DataError(f"the session regex {self.session_rx!r} matches nothing in the messages of "
                            f"{len(table):,} lines; check --session-regex (it is applied to <Content>)")
        missing: dict = {"count": 0, "policy": o.missing_labels, "examples": []}
        if not o.labels and o.family == "hdfs":
            log.warning("no --labels given: %d sessions are unlabeled", len(seqs))
        if self.labels is not None:
            labels = self.labels
            seqs = seqs.drop("label").join(labels, on="sequence_id", how="left", maintain_order="left")
            miss = seqs.filter(pl.col("label").is_null())["sequence_id"]
            missing.update(count=len(miss), examples=miss.head(MAX_EXAMPLES).to_list())
            if len(miss):
                if o.missing_labels == "fail":
                    raise DataError(f"--labels {o.labels}: {len(miss):,} of {len(seqs):,} sessions have no label "
                                    f"(first: {', '.join(missing['examples'])}). Check that the labels file "
                                    "belongs to this log, or pass --missing-labels drop|keep")
                log.warning("%d sessions without a label in %s: %s", len(miss), o.labels,
                            "dropped" if o.missing_labels == "drop" else "kept unlabeled")
                if o.missing_labels == "drop":
                    gone = seqs.filter(pl.col("label").is_null())["message_ids"].list.len().sum()
                    self.dropped["missing_label"] = int(gone)
                    seqs = seqs.filter(pl.col("label").is_not_null())
        seqs = seqs.select(SEQUENCE_COLUMNS)
        if o.split == "random":
            idx = random_split(len(seqs), o.train_ratio, o.val_ratio, o.seed)
            splits = {k: seqs[v] for k, v in idx.items()}
        else:
            bounds = chronological_bounds(len(seqs), o.train_ratio, o.val_ratio)
            splits = {k: seqs[lo:hi] for k, (lo, hi) in bounds.items()}
        extra = {"missing_labels": missing, "lines_without_session": self.no_session,
                 "session_memberships": len(rows)}
        if self.no_session:
            self.dropped["no_session"] = self.no_session
        return splits, extra

    def _windows(self, table: pl.DataFrame, kind: str) -> dict[str, pl.DataFrame]:
        """Windows inside each part of the split and each input file: no window crosses a file, as
        in `logllm detect` (a window of a.log's last and b.log's first lines is no real sequence)."""
        o = self.o
        n = len(table)
        file_starts = np.flatnonzero(np.diff(table["file_index"].to_numpy())) + 1
        if kind == "time_windows":
            # A line without a readable timestamp takes the previous line's (counted in bad_timestamps).
            table = table.with_columns(pl.col("timestamp").forward_fill().backward_fill())
            seconds = parse_duration(o.time_window)

            def build(bounds: list[tuple[int, int]], start: int) -> tuple[pl.DataFrame, int]:
                return time_windows(table, cut_at(bounds, file_starts), seconds, start)
        else:
            def build(bounds: list[tuple[int, int]], start: int) -> tuple[pl.DataFrame, int]:
                parts = cut_at(bounds, file_starts)
                between = sum(hi - lo for lo, hi in parts) - lines_in_windows(parts, o.window, o.step)
                if between:
                    self.dropped["between_windows"] = self.dropped.get("between_windows", 0) + between
                return fixed_windows(table, parts, o.window, o.step, start)
        if o.split == "chronological":
            bounds = chronological_bounds(n, o.train_ratio, o.val_ratio)
            splits: dict[str, pl.DataFrame] = {}
            index = 0
            for name, b in sorted(bounds.items(), key=lambda kv: kv[1][0]):
                splits[name], index = build([b], index)
            return splits
        everything, _ = build([(0, n)], 0)
        idx = random_split(len(everything), o.train_ratio, o.val_ratio, o.seed)
        return {k: everything[v] for k, v in idx.items()}


def prepare(options: PrepareOptions, out: str | Path, *, chunk_bytes: int | None = None,
            progress: bool = False, overwrite: bool = False) -> PrepareResult:
    """Read, parse, mask and window/sessionise the inputs, split, and write a prepared folder to ``out``.

    The folder is written whole and renamed into place (see :class:`~logllm.data.dataset.PreparedWriter`):
    an existing prepared folder at ``out`` is replaced only with ``overwrite``, and a second prepare
    into the same ``out`` fails at once. Raises :class:`~logllm.errors.DataError` /
    :class:`~logllm.errors.ConfigError` for bad input or options (the message names the file:line or
    option and the value).
    """
    with PreparedWriter(out, overwrite=overwrite) as writer:  # before any long work
        return _prepare(options, out, writer, chunk_bytes=chunk_bytes, progress=progress)


def _prepare(options: PrepareOptions, out: str | Path, writer: PreparedWriter, *, chunk_bytes: int | None,
             progress: bool) -> PrepareResult:
    t0 = time.perf_counter()
    o = options.resolved()
    if o.family == "logllm-csv":
        from logllm.data.csv_import import import_csv

        splits, messages, inputs, counts = import_csv(o)
        manifest = writer.write(messages, splits, _manifest(o, splits, len(messages), inputs, counts, {}))
        return PrepareResult(Path(out), manifest, time.perf_counter() - t0)
    p = _Preparer(o, chunk_bytes, progress)
    splits, extra = p.run()
    c = p.counts
    counts = {
        "lines": c.lines, "unparsed_lines": c.unparsed, "skipped_lines": c.skipped,
        "unparsed_examples": c.unparsed_examples, "truncated_lines": c.truncated,
        "truncated_lines_examples": c.truncated_examples, "invalid_utf8_lines": p.reader.invalid_utf8,
        "invalid_utf8_lines_examples": c.invalid_examples, "bad_timestamps": c.bad_timestamps,
        "lines_read": p.reader.lines_read, "unlike_lines": c.unlike, "unlike_lines_examples": c.unlike_examples,
    }
    if c.unparsed:
        log.warning("%d of %d lines do not match the format %r (%s); first: %s", c.unparsed, c.lines,
                    p.fmt.text, o.on_unparsed, ", ".join(c.unparsed_examples))
    counts["dropped_lines"] = _dropped_lines(p, c)
    messages, splits = _drop_unused_messages(p.messages.texts, splits)
    manifest = _manifest(o, splits, len(messages), [i.to_dict() for i in p.reader.inputs], counts, extra,
                         p.versions)
    manifest = writer.write(messages, splits, manifest)
    result = PrepareResult(Path(out), manifest, time.perf_counter() - t0)
    log.info("prepared %s in %.2f s: %d lines, %d messages", o.family, result.seconds, c.lines, len(messages))
    return result


#: Lines left out of every sequence above this share of the input are a warning, not a note.
DROPPED_WARNING_SHARE = 0.01


def _dropped_lines(p: _Preparer, c: _Counts) -> dict[str, int]:
    """The lines of the input that are in no sequence, by reason (logged: a warning above 1%)."""
    dropped = {**({"skipped_unparsed": c.skipped} if c.skipped else {}), **p.dropped}
    total = sum(dropped.values())
    if total:
        level = logging.WARNING if total > DROPPED_WARNING_SHARE * c.lines else logging.INFO
        log.log(level, "%s of %s lines (%.1f%%) are in no sequence: %s", f"{total:,}", f"{c.lines:,}",
                100 * total / c.lines, "; ".join(_dropped_text(dropped, p.o.to_dict())))
    return dropped


#: Why lines are in no sequence (keys of the manifest's ``dropped_lines``), for people.
DROP_REASONS = {
    "skipped_unparsed": "do not match the format, skipped (--on-unparsed skip)",
    "no_session": "name no session (--session-regex {session_regex!r})",
    "missing_label": "are in sessions without a label, dropped (--missing-labels drop)",
    "between_windows": "are between windows (--step {step} > --window {window})",
}


def _dropped_text(dropped: dict[str, int], options: dict) -> list[str]:
    return [f"{n:,} " + DROP_REASONS.get(why, why).format(**options) for why, n in dropped.items()]


def _drop_unused_messages(texts: list[str], splits: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """The messages table (:data:`~logllm.data.dataset.MESSAGE_SCHEMA`: id, text, count over all splits)
    of the messages some sequence uses (skipped lines and lines outside every session have ids too),
    renumbered in order of first appearance; and the splits with the new ids."""
    counts = np.zeros(len(texts), dtype=np.uint64)
    for df in splits.values():
        ids = df["message_ids"].explode().drop_nulls().to_numpy()
        counts += np.bincount(ids, minlength=len(texts)).astype(np.uint64)
    used = counts > 0
    if not used.all():
        old = np.flatnonzero(used)
        mapping_old = pl.Series(old, dtype=pl.UInt32)
        mapping_new = pl.Series(np.arange(len(old)), dtype=pl.UInt32)
        splits = {k: df.with_columns(pl.col("message_ids").list.eval(
            pl.element().replace_strict(mapping_old, mapping_new, return_dtype=pl.UInt32))) for k, df in splits.items()}
        texts, counts = [texts[i] for i in old], counts[old]
    messages = pl.DataFrame({"message_id": np.arange(len(texts), dtype=np.uint32), "text": texts, "count": counts},
                            schema=MESSAGE_SCHEMA)
    return messages, splits


def _manifest(o: PrepareOptions, splits: dict[str, pl.DataFrame], n_messages: int, inputs: list[dict],
              counts: dict, extra: dict, versions: dict | None = None) -> dict:
    split_info = {}
    for name in SPLIT_ORDER:
        if name in splits:
            df = splits[name]
            split_info[name] = {
                "sequences": len(df),
                "anomalous": int((df["label"] == 1).sum()),
                "unlabeled": int(df["label"].is_null().sum()),
                "lines": int(df["message_ids"].list.len().sum()) if len(df) else 0,
            }
    return {
        "format_version": 1,
        "family": o.family,
        **counts,
        "distinct_messages": n_messages,
        "sequences": sum(s["sequences"] for s in split_info.values()),
        "splits": split_info,
        "options": o.to_dict(),
        "seed": o.seed,
        "inputs": inputs,
        "labels_file": file_record(o.labels) if o.labels else None,
        "version": __version__,
        "versions": versions if versions is not None else library_versions(),
        **extra,
    }
