"""Checkpoint integrity: a ``checksums.json`` written last, and the checks ``--resume`` runs before loading.

A checkpoint folder is written to a temporary folder and renamed into place, so a killed process
never leaves half of one under its final name. A disk that fills up, a copy that stops early or a
file edited by hand can still damage one; ``checksums.json`` (the size and sha256 of every other
file, written after them) lets a reader tell. ``checkpoint_problem`` returns what is wrong with a
folder, or None:

- with ``checksums.json``: every listed file must exist with its size and sha256;
- without it (checkpoints written by older versions): a structure check only; the required files
  exist, every ``.json`` parses and every ``.safetensors`` file's header agrees with its size (a
  truncated file fails; a file with flipped bytes inside its tensors does not).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from pathlib import Path

CHECKSUMS = "checksums.json"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(folder: Path) -> Path:
    """Write ``folder/checksums.json``: size and sha256 of every file below ``folder`` (call it last)."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _files(folder)}
    path = folder / CHECKSUMS
    path.write_text(json.dumps({"format": "logllm-checksums", "version": 1, "files": files}, indent=1) + "\n")
    return path


def _read_json(path: Path) -> tuple[object, str | None]:
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path.name} is not readable JSON ({err})"


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's structure (header, size), or None. Reads the header only."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header (truncated)"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"header says {n} header bytes but the file has {size} (truncated)"
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return f"unreadable safetensors header ({err})"
    if not isinstance(header, dict):
        return "unreadable safetensors header (not a JSON object)"
    ends = [int(v["data_offsets"][1]) for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{size} bytes where its header needs {expected} ({'truncated' if size < expected else 'extra bytes'})"
    return None


def _checksum_problem(folder: Path, listed: object) -> str | None:
    if not isinstance(listed, dict) or not isinstance(listed.get("files"), dict):
        return f"{CHECKSUMS} has no 'files' table"
    for name, want in sorted(listed["files"].items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{name} has {size} bytes, {want.get('bytes')} were written (truncated or changed)"
        if sha256_file(path) != want.get("sha256"):
            return f"{name} does not match its sha256 in {CHECKSUMS} (changed or corrupted)"
    return None


def _structure_problem(folder: Path, required: Iterable[str]) -> str | None:
    for name in required:
        if not (folder / name).is_file():
            return f"{name} is missing"
    for path in _files(folder):
        name = path.relative_to(folder).as_posix()
        if path.suffix == ".json":
            _, problem = _read_json(path)
            if problem:
                return problem.replace(path.name, name, 1)
        elif path.suffix == ".safetensors":
            problem = safetensors_problem(path)
            if problem:
                return f"{name}: {problem}"
    return None


def checkpoint_problem(folder: Path, required: Iterable[str] = ()) -> str | None:
    """What makes a checkpoint folder unusable (naming the file), or None when it passes its checks.

    Uses ``checksums.json`` when the folder has one (plus the ``required`` files), and a structure
    check of the ``required`` files, the JSON files and the safetensors headers otherwise.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    required = list(required)
    if not (folder / CHECKSUMS).is_file():
        return _structure_problem(folder, required)
    listed, problem = _read_json(folder / CHECKSUMS)
    if problem:
        return problem
    problem = _checksum_problem(folder, listed)
    if problem:
        return problem
    for name in required:
        if not (folder / name).is_file():
            return f"{name} is missing"
    return None
