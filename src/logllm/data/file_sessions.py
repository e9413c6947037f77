"""Files and folders as sessions (``--session-by file|dir``): which files are read, in which order,
which session each belongs to, and a reader that names and counts a bad file instead of stopping.

* ``file``: each input file is one session. A ``--log`` folder stands for every file under it
  (recursively, in order of relative path); the session id is the path relative to that folder
  (``sub/app.log``), or the file name for a file given directly.
* ``dir``: each folder directly under a ``--log`` root is one session; its files (recursively) are
  read in order of relative path, as one stream. The session id is the folder's name
  (``application_1445087491445_0005``). Files directly in a root (e.g. ``abnormal_label.txt``) are
  not logs of any session: they are left out, counted and named (``ignored_files``).

Hidden files and folders (name starting with ``.``) are left out and counted too. A session's files
are consecutive in the read order, so a session is a run of lines of the line table. A file that
cannot be read (unreadable, empty, a gzip cut short) is handled by :class:`SessionFileReader`
according to ``--on-unparsed``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from logllm.data.readers import DEFAULT_CHUNK_BYTES, InputFile, LineChunk, LineReader
from logllm.data.windows import SEQ_AGG, SEQUENCE_COLUMNS, fixed_windows, window_count
from logllm.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["SessionFileReader", "SessionLayout", "file_groups", "find_session_files", "layout_summary",
           "session_sequences"]

MAX_EXAMPLES = 5


@dataclass
class SessionLayout:
    """The files to read, in order, with the session and the folder (for ``--split-by dir``) of each."""

    mode: str
    files: list[str] = field(default_factory=list)
    session_of_file: list[str] = field(default_factory=list)
    dir_of_file: list[str] = field(default_factory=list)
    #: (path, why) of the files under the roots that are no session's logs
    ignored: list[tuple[str, str]] = field(default_factory=list)

    @property
    def sessions(self) -> list[str]:
        """Session ids in read order."""
        return list(dict.fromkeys(self.session_of_file))

    def to_dict(self) -> dict:
        """For the manifest: counts, and the first ignored files with the reason."""
        return {"mode": self.mode, "sessions": len(self.sessions), "files": len(self.files),
                "ignored_files": len(self.ignored),
                "ignored_examples": [f"{p} ({why})" for p, why in self.ignored[:MAX_EXAMPLES]]}


def _visible_files(folder: Path, ignored: list[tuple[str, str]]) -> list[Path]:
    """Files under ``folder`` (recursively) in order of relative path; hidden ones go to ``ignored``."""
    out = []
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            if path.is_file():
                ignored.append((str(path), "hidden"))
            continue
        if path.is_file():
            out.append(path)
        elif not path.is_dir():
            ignored.append((str(path), "not a regular file"))
    return out


def find_session_files(inputs: tuple[str, ...] | list[str], mode: str, labels: str | None = None) -> SessionLayout:
    """The :class:`SessionLayout` of the ``--log`` arguments for ``--session-by mode``; the ``labels``
    file, when it lies under a root, is left out (noted, not warned about).

    Raises DataError for a missing path, a root without any session, or two sessions with one id."""
    layout = SessionLayout(mode=mode)
    where: dict[str, str] = {}  # session id -> the path it came from (duplicates are an error)

    def add(session: str, source: str, files: list[Path], folder: str) -> None:
        if session in where:
            raise DataError(f"--session-by {mode}: two sessions are named {session!r} ({where[session]} and "
                            f"{source}); labels could not tell them apart. Read them in separate runs")
        where[session] = source
        for f in files:
            layout.files.append(str(f))
            layout.session_of_file.append(session)
            layout.dir_of_file.append(folder)

    labels_path = Path(labels).resolve() if labels else None
    for arg in inputs:
        root = Path(arg)
        if not root.exists():
            raise DataError(f"--log {arg}: not found; check the path")
        if mode == "dir":
            if not root.is_dir():
                raise DataError(f"--log {arg}: with --session-by dir each --log is a folder whose subfolders "
                                "are the sessions; this is a file. Use --session-by file, or pass its folder's parent")
            subs = []
            for child in sorted(root.iterdir(), key=lambda p: p.name):
                if child.name.startswith("."):
                    layout.ignored.append((str(child), "hidden"))
                elif child.is_dir():
                    subs.append(child)
                elif child.resolve() == labels_path:
                    layout.ignored.append((str(child), "the --labels file"))
                else:
                    layout.ignored.append((str(child), "not in a session folder"))
            if not subs:
                raise DataError(f"--log {arg}: no folder in it; with --session-by dir each folder under a --log "
                                "root is one session (e.g. Hadoop's application_* folders)")
            for sub in subs:
                files = _visible_files(sub, layout.ignored)
                if not files:
                    layout.ignored.append((str(sub), "empty folder: no session"))
                    continue
                add(sub.name, str(sub), files, str(sub))
        elif root.is_dir():
            for f in _visible_files(root, layout.ignored):
                if f.resolve() == labels_path:
                    layout.ignored.append((str(f), "the --labels file"))
                    continue
                add(f.relative_to(root).as_posix(), str(f), [f], str(f.parent))
        else:
            add(root.name, str(root), [root], str(root.parent))
    if not layout.files:
        raise DataError(f"--session-by {mode}: no log file under {', '.join(inputs)}")
    unexpected = [(p, why) for p, why in layout.ignored if why != "the --labels file"]
    if unexpected:
        log.warning("--session-by %s: %d path(s) under the inputs are in no session (first: %s)", mode,
                    len(unexpected), "; ".join(f"{p} ({why})" for p, why in unexpected[:3]))
    log.info("--session-by %s: %d sessions in %d files", mode, len(layout.sessions), len(layout.files))
    return layout


class SessionFileReader:
    """:class:`~logllm.data.readers.LineReader` over the layout's files, one file at a time, with the
    same attributes (``inputs``, ``lines_read``, ``invalid_utf8``); ``chunk.file_index`` indexes ``inputs``.

    A file that cannot be read (missing, empty, unreadable, a gzip cut short) stops the run with
    ``strict`` (``--on-unparsed fail``); otherwise it is recorded in ``bad_files`` (path, error, lines
    read before the error; those lines are kept) and the next file is read."""

    def __init__(self, files: list[str], *, strict: bool, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 group_lines: bool = False, pool: Executor | None = None):
        self.files = files
        self.strict = strict
        self.chunk_bytes, self.group_lines, self.pool = chunk_bytes, group_lines, pool
        self.inputs = [InputFile(path=p, bytes=_size(p)) for p in files]
        self.lines_read = 0
        self.invalid_utf8 = 0
        self.bad_files: list[dict] = []

    def __iter__(self) -> Iterator[LineChunk]:
        for index, path in enumerate(self.files):
            lines = 0
            reader = None
            try:
                reader = LineReader([path], chunk_bytes=self.chunk_bytes, group_lines=self.group_lines, pool=self.pool)
                for chunk in reader:
                    chunk.file_index = index
                    lines += chunk.n_lines
                    yield chunk
            except DataError as err:
                if self.strict:
                    raise DataError(f"{err} (a file of --session-by; pass --on-unparsed keep or skip to go on "
                                    "without it, counted)") from err
                self.bad_files.append({"file_index": index, "path": path, "error": str(err), "lines_read": lines})
                log.warning("%s (after %d line(s); listed in the manifest, session_files.bad_files)", err, lines)
                self.lines_read += lines
                continue
            finally:
                if reader is not None:
                    self.invalid_utf8 += reader.invalid_utf8
            self.inputs[index] = reader.inputs[0]
            self.lines_read += reader.lines_read
        if self.lines_read == 0:
            bad = self.bad_files
            raise DataError(f"no line could be read from the {len(self.files):,} files of --session-by ({len(bad):,} "
                            f"unreadable or empty; first: {bad[0]['path'] + ': ' + bad[0]['error'] if bad else '-'})")


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def session_sequences(table: pl.DataFrame, layout: SessionLayout, labels: pl.DataFrame | None,
                      window: int | None, step: int | None) -> pl.DataFrame:
    """The sequences of the line table (columns of :mod:`logllm.data.windows`): one per session, or
    ``--window`` windows inside each session (ids ``SESSION#w000000``...; no window crosses a session).

    ``labels`` (``sequence_id``, ``label`` per session, already filtered by the missing-labels policy)
    gives every sequence of a session its label; without it a sequence is anomalous if a line is.
    Sessions absent from ``labels`` (dropped) must already be gone from ``table``."""
    names = pl.Series(layout.session_of_file, dtype=pl.String)
    table = table.with_columns(pl.col("file_index").cast(pl.Int64).replace_strict(
        pl.int_range(len(names), eager=True), names, return_dtype=pl.String).alias("_session"))
    if window is None:
        seqs = table.group_by("_session", maintain_order=True).agg(SEQ_AGG).rename({"_session": "sequence_id"})
        session = seqs["sequence_id"]
    else:
        # A session is a run of consecutive lines (its files are read one after the other).
        sid = table["_session"]
        starts = np.flatnonzero(np.r_[True, (sid[1:] != sid[:-1]).to_numpy()]) if len(sid) else np.zeros(0, int)
        ends = np.r_[starts[1:], len(sid)]
        bounds = list(zip(starts.tolist(), ends.tolist()))
        seqs, _ = fixed_windows(table.drop("_session"), bounds, window, step or window)
        counts = [window_count(hi - lo, window, step or window) for lo, hi in bounds]
        session = pl.Series(np.repeat(sid.gather(starts).to_numpy(), counts), dtype=pl.String)
        k = np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, int)
        ids = pl.Series([f"{s}#w{i:06d}" for s, i in zip(session.to_list(), k.tolist())], dtype=pl.String)
        seqs = seqs.with_columns(ids.alias("sequence_id"))
    if labels is not None:
        by_session = pl.DataFrame({"_session": session}).join(
            labels.rename({"sequence_id": "_session"}), on="_session", how="left", maintain_order="left")
        seqs = seqs.with_columns(by_session["label"].cast(pl.Int8))
    return seqs.select(SEQUENCE_COLUMNS)


def file_groups(paths: list[str], split_by: str, layout: SessionLayout | None) -> np.ndarray | None:
    """For ``--split-by``: the group number of each input file (``paths``, indexed by ``file_index``):
    the file itself (``file``), or its folder (``dir``: the session folder with ``--session-by dir``,
    else the folder holding the file); None for ``sequence``."""
    if split_by == "file":
        return np.arange(len(paths), dtype=np.int64)
    if split_by != "dir":
        return None
    dirs = layout.dir_of_file if layout is not None else [str(Path(p).parent) for p in paths]
    number: dict[str, int] = {}
    return np.array([number.setdefault(d, len(number)) for d in dirs], dtype=np.int64)


def layout_summary(manifest: dict) -> list[str]:
    """Lines for the end of `prepare`'s summary: files in no session and files left out as unreadable."""
    layout = manifest.get("session_files") or {}
    out = []
    if layout.get("ignored_files"):
        out.append(f"  paths in no session: {layout['ignored_files']:,} (first: {layout['ignored_examples'][0]})")
    bad = layout.get("bad_files") or []
    if bad:
        out.append(f"  unreadable or cut-short files: {len(bad):,} ({layout.get('bad_files_policy')}), e.g.:")
        out += [f"    {b['error']} ({b['lines_read']:,} line(s) read)" for b in bad[:MAX_EXAMPLES]]
    return out
