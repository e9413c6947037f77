"""`logllm prepare`: raw log files -> a prepared folder (see :mod:`logllm.data.dataset`).

    from logllm.data.prepare import PrepareOptions, prepare
    result = prepare(PrepareOptions(family="hdfs", inputs=("HDFS.log",), labels="anomaly_label.csv"), "out/hdfs")
    print(result.summary())

The input is read in chunks of whole lines. For the built-in families with paper masking each chunk is
processed once per *distinct digit-normalised line* (masking, format matching and label rules do not
depend on which digits a line holds; see :mod:`logllm.data.masking`), which is what makes it fast;
custom formats go through :class:`logllm.data.parsing.LineParser` line by line (in polars). Both give
identical output (tested). Structured lines (json, logfmt, syslog) go through
:class:`logllm.data.records.StructuredParser`; ``--format auto`` is resolved first
(:mod:`logllm.data.autodetect`).

This module drives the steps; the session ids of a chunk come from :mod:`logllm.data.grouping` (files
and folders as sessions from :mod:`logllm.data.file_sessions`), the input check from
:mod:`logllm.data.checks`, the manifest and summary from :mod:`logllm.data.result`.
A run's helper threads (the byte passes' :func:`logllm.data.threads.part_pool`, the parse and side-work
threads) are created by the run and closed with it.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.ma  # noqa: F401  (polars looks for masked arrays whenever it builds a Series from an array)
import polars as pl

from logllm.data import file_sessions, linescan, threads
from logllm.data.autodetect import resolve_format
from logllm.data.checks import Counts, check_input
from logllm.data.dataset import PreparedWriter
from logllm.data.grouping import field_session_ids, session_ids
from logllm.data.labels_hadoop import read_session_labels
from logllm.data.masking import mask_series
from logllm.data.message_table import MessageTable
from logllm.data.options import HDFS_SESSION_REGEX, WINDOWED_FAMILIES, PrepareOptions, parse_duration
from logllm.data.parsing import ParsedBatch, clip
from logllm.data.readers import LineChunk, LineReader, group_lines, lines_series
from logllm.data.records import line_parser, unparsed_reason
from logllm.data.result import PrepareResult, build_manifest, drop_unused_messages, dropped_text
from logllm.data.splits import chronological_bounds, split_sequences
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


def _is_blank(lines: pl.Series) -> np.ndarray:
    return (lines.str.strip_chars().str.len_bytes() == 0).to_numpy()


class _Preparer:
    def __init__(self, options: PrepareOptions, chunk_bytes: int | None, progress: bool, pool: Executor):
        self.o = options
        self.pool = pool  # the byte passes' helper thread (threads.part_pool), owned by prepare()
        self.messages = MessageTable()
        self.counts = Counts()
        self.keep_parser = line_parser(replace(options, on_unparsed="keep"), check_fields=True)
        structured = options.is_structured  # json, logfmt, syslog: logllm.data.records, line by line
        self.fmt = None if structured else self.keep_parser.format
        self.format_text = self.keep_parser.format_text if structured else self.fmt.text
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        self.session_rx = options.session_regex if options.sequence_kind == "sessions" else None
        # Whole-chunk shortcuts are valid when nothing downstream needs the digits of a line.
        self.fast = (not structured and options.masking.is_paper and not self.fmt.literal_has_digit
                     and options.family in ("hdfs", *WINDOWED_FAMILIES)
                     and (options.family != "hdfs" or options.session_regex == HDFS_SESSION_REGEX)
                     and not any(ch.isdigit() for v in options.normal_values for ch in v)
                     and options.label_rule in ("first_token", "none") and not options.time_window)
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in ("message_id", "label", "file_index",
                                                                   "line_number", "timestamp")}
        self.sessions: list[pl.DataFrame] = []
        self.kept = 0
        self.no_session = 0
        self.no_session_examples: list[str] = []  # file:line of the first lines in no session
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
            grouped = group_lines(chunk, self.pool)  # (normally made by the reader in its counting pass)
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
                sess = session_ids(chunk, self.session_rx, lambda: self.keep_parser.parse(
                    lines_series(chunk.data, n), source=source, first_line=chunk.first_line).content,
                    grouped=grouped, distinct_content=lambda: parsing.result()[0].content, pool=self.pool)
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
            sess = session_ids(chunk, self.session_rx, lambda: batch.content)
        elif o.session_field and batch.session is not None:
            sess = field_session_ids(batch.session)
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
                raw = self._raw_line(chunk, i)
                raise DataError(f"{self._where(chunk, i)}: {unparsed_reason(self.keep_parser, raw)}: "
                                f"{clip(raw)!r}. Fix --format, or pass --on-unparsed keep (content-only) or skip")
            room = MAX_EXAMPLES - len(c.unparsed_examples)
            c.unparsed_examples += [self._where(chunk, int(i)) for i in bad[:max(room, 0)]]
            text = bad[~blank(bad)]  # blank lines say nothing about the format
            c.unparsed_text += len(text)
            if len(text) and not c.first_unparsed:
                c.first_unparsed = (self._where(chunk, int(text[0])), clip(self._raw_line(chunk, int(text[0]))))
        if unlike is not None:
            odd = np.flatnonzero(unlike)
            c.unlike += len(odd)
            room = MAX_EXAMPLES - len(c.unlike_examples)
            c.unlike_examples += [self._where(chunk, int(i)) for i in odd[:max(room, 0)]]
            if len(odd) and not c.first_unlike:
                c.first_unlike = (self._where(chunk, int(odd[0])), clip(self._raw_line(chunk, int(odd[0]))))
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
            alone = np.bincount(rows, minlength=n) == 0  # lines that join no session
            if keep is not None:
                alone &= keep
            self.no_session += int(alone.sum())
            room = MAX_EXAMPLES - len(self.no_session_examples)
            if room > 0 and alone.any():
                self.no_session_examples += [self._where(chunk, int(i)) for i in np.flatnonzero(alone)[:room]]
            if keep is None:  # the global kept position of line i is self.kept + i
                pos = rows.astype(np.int64)
                pos += self.kept
                self.sessions.append(pl.DataFrame({"pos": pos, "sid": sess["sid"]}))
            else:
                pos = np.cumsum(keep) - 1 + self.kept  # global kept position of each line
                ok = keep[rows]
                self.sessions.append(pl.DataFrame({"pos": pos[rows[ok]], "sid": sess["sid"].filter(pl.Series(ok))}))
        self.kept += n_kept

    # ---- whole run -----------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, pl.DataFrame], dict]:
        o = self.o
        kwargs = {"chunk_bytes": self.chunk_bytes} if self.chunk_bytes else {}
        self.layout: file_sessions.SessionLayout | None = None
        if o.session_by:
            self.layout = file_sessions.find_session_files(o.inputs, o.session_by, o.labels)
            self.reader: LineReader | file_sessions.SessionFileReader = file_sessions.SessionFileReader(
                self.layout.files, strict=o.on_unparsed == "fail", group_lines=self.fast, pool=self.pool, **kwargs)
        else:
            self.reader = LineReader(o.inputs, o.start_line, o.end_line, group_lines=self.fast, pool=self.pool, **kwargs)
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
            labels = (self._helper.submit(read_session_labels, o.labels, o.labels_format)
                      if o.labels and o.sequence_kind in ("sessions", "files") else None)
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
        check_input(self.o, self.counts, self.reader.invalid_utf8, self.format_text)
        columns = {k: np.concatenate(v) for k, v in self.parts.items() if v}
        self.parts.clear()
        table = pl.DataFrame(columns).with_columns(pl.col("label").replace(-1, None).cast(pl.Int8))
        kind = o.sequence_kind
        extra: dict = {}
        if kind == "sessions":
            splits, extra = self._sessions(table)
        elif kind == "files":
            splits, extra = self._file_sessions(table)
        else:
            splits, extra = self._windows(table, kind)
        for name, df in splits.items():
            if len(df) == 0:
                log.warning("split %r is empty (%d sequences in all); adjust --train-ratio/--val-ratio",
                            name, sum(len(d) for d in splits.values()))
        return splits, extra

    def _no_line_parses(self, chunk: LineChunk) -> None:
        if self.fmt is None:
            raw = self._raw_line(chunk, 0)
            raise DataError(f"{self.reader.inputs[chunk.file_index].path}: none of the first {chunk.n_lines:,} "
                            f"lines is a {self.format_text} record; line {chunk.first_line}: "
                            f"{unparsed_reason(self.keep_parser, raw)}: {clip(raw)!r}. Pass the right --format "
                            "(or --format auto), or --message-field KEY")
        raise DataError(f"{self.reader.inputs[chunk.file_index].path}: the log format {self.fmt.text!r} "
                        f"matches none of the first {chunk.n_lines:,} lines; first line "
                        f"{chunk.first_line}: {clip(self._raw_line(chunk, 0))!r}. Pass the right --format "
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
        if len(seqs) == 0 and o.session_field:
            raise DataError(f"--session-field {o.session_field!r}: no record of the {len(table):,} lines has that key "
                            f"(first: {', '.join(self.no_session_examples)}); name a key the records hold "
                            "(a dotted path for nested objects)")
        if len(seqs) == 0:
            raise DataError(f"the session regex {self.session_rx!r} matches nothing in the messages of "
                            f"{len(table):,} lines; check --session-regex (it is applied to <Content>)")
        if not o.labels and o.family == "hdfs":
            log.warning("no --labels given: %d sessions are unlabeled", len(seqs))
        seqs, missing = self._join_labels(seqs)
        splits, split_info = self._split(seqs.select(SEQUENCE_COLUMNS))
        extra = {"missing_labels": missing, "lines_without_session": self.no_session,
                 "lines_without_session_examples": self.no_session_examples,
                 "session_memberships": len(rows), **split_info}
        if self.no_session:
            self.dropped["no_session"] = self.no_session
            log.info("%s lines join no session (%s); first: %s", f"{self.no_session:,}",
                     f"no key {o.session_field!r}" if o.session_field else f"no match of {self.session_rx!r}",
                     ", ".join(self.no_session_examples))
        return splits, extra

    def _join_labels(self, seqs: pl.DataFrame) -> tuple[pl.DataFrame, dict]:
        """Sessions with their label from ``--labels`` (when given), the ``--missing-labels`` policy
        applied (drop: the sessions and their lines counted); and the manifest's ``missing_labels``."""
        o = self.o
        missing: dict = {"count": 0, "policy": o.missing_labels, "examples": []}
        if self.labels is None:
            return seqs, missing
        seqs = seqs.drop("label").join(self.labels, on="sequence_id", how="left", maintain_order="left")
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
        return seqs, missing

    def _split(self, seqs: pl.DataFrame) -> tuple[dict[str, pl.DataFrame], dict]:
        """``--split`` over the sequences, keeping whole files or folders together with ``--split-by``."""
        o = self.o
        groups = file_sessions.file_groups([i.path for i in self.reader.inputs], o.split_by, self.layout)
        return split_sequences(seqs, o.split, o.split_by, o.train_ratio, o.val_ratio, o.seed, groups)

    def _file_sessions(self, table: pl.DataFrame) -> tuple[dict[str, pl.DataFrame], dict]:
        """``--session-by file|dir``: a sequence per session (or ``--window`` windows inside each), split."""
        o, layout = self.o, self.layout
        bad = self.reader.bad_files
        if bad and o.on_unparsed == "skip":  # (with keep, the lines read before the error stay)
            out = table["file_index"].is_in([b["file_index"] for b in bad])
            self.dropped["in_unreadable_files"] = int(out.sum())
            table = table.filter(~out)
        sessions = file_sessions.session_sequences(table, layout, None, None, None)
        without_lines = len(layout.sessions) - len(sessions)
        sessions, missing = self._join_labels(sessions)
        if len(sessions) == 0:
            raise DataError(f"--session-by {o.session_by}: no session is left (of {len(layout.sessions):,}); "
                            "see the log for files left out and sessions dropped")
        if o.window:  # windows inside the sessions kept, each with its session's label from --labels
            keep = set(sessions["sequence_id"])
            table = table.filter(pl.col("file_index").is_in([i for i, s in enumerate(layout.session_of_file) if s in keep]))
            labels = sessions.select("sequence_id", "label") if self.labels is not None else None
            sessions = file_sessions.session_sequences(table, layout, labels, o.window, o.step)
        splits, split_info = self._split(sessions.select(SEQUENCE_COLUMNS))
        info = {**layout.to_dict(), "bad_files": bad, "bad_files_policy": o.on_unparsed,
                "sessions_without_lines": without_lines}
        return splits, {"missing_labels": missing, "session_files": info, **split_info}

    def _windows(self, table: pl.DataFrame, kind: str) -> tuple[dict[str, pl.DataFrame], dict]:
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
        if o.split == "chronological" and o.split_by == "sequence":
            bounds = chronological_bounds(n, o.train_ratio, o.val_ratio)
            splits: dict[str, pl.DataFrame] = {}
            index = 0
            for name, b in sorted(bounds.items(), key=lambda kv: kv[1][0]):
                splits[name], index = build([b], index)
            return splits, {}
        everything, _ = build([(0, n)], 0)
        return self._split(everything)


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
    detected = None
    if o.family != "logllm-csv":
        o, detected = resolve_format(o)  # --format auto, a json/logfmt message key: from the first lines
        o = o.resolved()
    if o.family == "logllm-csv":
        from logllm.data.csv_import import import_csv

        splits, messages, inputs, counts = import_csv(o)
        manifest = writer.write(messages, splits, build_manifest(o, splits, len(messages), inputs, counts, {}))
        return PrepareResult(Path(out), manifest, time.perf_counter() - t0)
    with threads.part_pool() as pool:
        p = _Preparer(o, chunk_bytes, progress, pool)
        splits, extra = p.run()
    if detected:
        extra["format_detection"] = detected
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
                    p.format_text, o.on_unparsed, ", ".join(c.unparsed_examples))
    counts["dropped_lines"] = _dropped_lines(p, c)
    messages, splits = drop_unused_messages(p.messages.texts, splits)
    manifest = build_manifest(o, splits, len(messages), [i.to_dict() for i in p.reader.inputs], counts, extra,
                         p.versions)
    manifest = writer.write(messages, splits, manifest)
    result = PrepareResult(Path(out), manifest, time.perf_counter() - t0)
    log.info("prepared %s in %.2f s: %d lines, %d messages", o.family, result.seconds, c.lines, len(messages))
    return result


#: Lines left out of every sequence above this share of the input are a warning, not a note.
DROPPED_WARNING_SHARE = 0.01


def _dropped_lines(p: _Preparer, c: Counts) -> dict[str, int]:
    """The lines of the input that are in no sequence, by reason (logged: a warning above 1%)."""
    dropped = {**({"skipped_unparsed": c.skipped} if c.skipped else {}), **p.dropped}
    total = sum(dropped.values())
    if total:
        level = logging.WARNING if total > DROPPED_WARNING_SHARE * c.lines else logging.INFO
        log.log(level, "%s of %s lines (%.1f%%) are in no sequence: %s", f"{total:,}", f"{c.lines:,}",
                100 * total / c.lines, "; ".join(dropped_text(dropped, p.o.to_dict())))
    return dropped
