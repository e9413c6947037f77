"""What ties a prepared folder together, and a run to its data.

Two checks, both driven by ``manifest.json``:

* **files**: the manifest (written last) holds the size and sha256 of every file of the folder it
  covers. :func:`check_files` compares sizes (and, with ``hashes=True``, sha256) and refuses a folder
  with a missing, changed or stray table: an interrupted or concurrent write, or a val.parquet left by
  an earlier prepare.
* **identity**: :func:`data_identity` is what makes two prepared folders the same data (the inputs'
  sha256, the options that shape sequences and splits, the seed, the split sizes). :func:`check_run_data`
  compares a folder with the run's ``data_manifest.json`` (the manifest of the folder it was trained
  on); ``train --resume``, ``evaluate``, ``bench --logllm-run`` and ``report`` all call it and refuse a
  mismatch unless ``--allow-other-data`` is given. One narrow exception: a folder written by
  ``logllm mutate`` from the run's data, with train and val byte-identical (:func:`accepts_mutated`),
  is accepted with a log line (only its test split differs, which is what the mutation measures).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from logllm.errors import DataError

log = logging.getLogger(__name__)

FILES = "files"  #: manifest key: {file name: {"bytes": int, "sha256": str}}
MUTATION_KEY = "mutation"  #: manifest key of a `logllm mutate` folder's record (logllm.data.mutate)
RUN_DATA_MANIFEST = "data_manifest.json"  #: in a run folder: the manifest of the data it was trained on
#: options that name files rather than shape the data (the files are compared by their sha256)
_PATH_OPTIONS = ("inputs", "labels")


def sha256_file(path: str | Path) -> str:
    """The sha256 of a file's bytes, in hex."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def file_record(path: str | Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of a file, as the manifest records it."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path)}


def rebuild_hint(root: Path) -> str:
    return f"re-run `logllm prepare ... --out {root} --overwrite` to rebuild it"


def check_files(root: str | Path, manifest: Mapping[str, Any], known: Iterable[str], *,
                hashes: bool = False) -> bool:
    """Check the files of a prepared folder against its manifest; False if it records no files.

    Every file the manifest lists must exist with its size (and sha256 with ``hashes``); a file among
    ``known`` (the names a prepared folder can hold) that the manifest does not list is stray. Raises
    :class:`~logllm.errors.DataError` naming each problem and the fix.
    """
    root = Path(root)
    files = manifest.get(FILES)
    if not isinstance(files, Mapping):
        return False
    problems = []
    for name, rec in sorted(files.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif path.stat().st_size != rec.get("bytes"):
            problems.append(f"{name} has {path.stat().st_size:,} bytes, the manifest says {rec.get('bytes'):,}")
        elif hashes and sha256_file(path) != rec.get("sha256"):
            problems.append(f"{name} does not match its sha256 in the manifest")
    for name in sorted(set(known) - set(files)):
        if (root / name).exists():
            problems.append(f"{name} is not in the manifest (left by another prepare)")
    if problems:
        raise DataError(f"{root}: incomplete or mixed prepared folder: {'; '.join(problems)}. "
                        f"Do not use it; {rebuild_hint(root)}")
    return True


def data_identity(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two prepared folders the same data: family, the inputs' (and labels file's) sha256,
    the options (without file paths), the seed and the size of each split."""
    options = manifest.get("options") or {}
    labels = manifest.get("labels_file") or {}
    return {
        "family": manifest.get("family"),
        "inputs": [i.get("sha256") for i in manifest.get("inputs") or []],
        "labels": labels.get("sha256"),
        "options": {k: v for k, v in options.items() if k not in _PATH_OPTIONS},
        "seed": manifest.get("seed"),
        "splits": {name: {k: s.get(k) for k in ("sequences", "anomalous")}
                   for name, s in (manifest.get("splits") or {}).items()},
    }


def identity_differences(run: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    """How the data of a folder (``data``, a manifest) differs from a run's (``run``), in words; empty
    when they are the same. A field that one of the manifests lacks (an older logllm) is not compared."""
    a, b = data_identity(run), data_identity(data)
    out = []
    if a["inputs"] != b["inputs"]:
        out.append(f"input files differ (sha256; run: {len(a['inputs'])} file(s), data: {len(b['inputs'])})")
    for key in ("family", "labels", "seed"):
        if a[key] is not None and b[key] is not None and a[key] != b[key]:
            out.append(f"{key}: run {a[key]!r}, data {b[key]!r}" if key != "labels"
                       else "labels file differs (sha256)")
    for key in sorted(set(a["options"]) & set(b["options"])):
        if a["options"][key] != b["options"][key] and key != "seed":
            out.append(f"option {key}: run {a['options'][key]!r}, data {b['options'][key]!r}")
    if a["splits"] and b["splits"] and a["splits"] != b["splits"]:
        out.append(f"splits: run {_sizes(a['splits'])}, data {_sizes(b['splits'])}")
    return out


class PreparedFolder(Protocol):
    """What :func:`check_run_data` reads of a prepared folder (a ``logllm.data.dataset.PreparedData``;
    named by its shape so that this module, which the dataset imports, does not import it back)."""

    root: Path
    manifest: dict[str, Any]

    def verify(self) -> None: ...


def _sizes(splits: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(f"{k} {v.get('sequences')} ({v.get('anomalous')} anomalous)" for k, v in splits.items())


def check_run_data(run_dir: str | Path, data: PreparedFolder, *, allow_other_data: bool = False,
                   command: str = "evaluate") -> dict[str, Any] | None:
    """Verify a prepared folder's files (sha256) and that it holds the data the run was trained on.

    The run's data is ``run_dir/data_manifest.json`` (written by ``logllm train``); a run without one
    is not compared (logged). A difference raises :class:`~logllm.errors.DataError` naming it, unless
    ``allow_other_data``: then it is logged and returned as a record for the caller to write beside its
    results (``{"allow_other_data": True, "data": ..., "differences": [...]}``). None when the data is
    the run's.
    """
    run_dir = Path(run_dir)
    data.verify()
    path = run_dir / RUN_DATA_MANIFEST
    if not path.is_file():
        log.warning("%s has no %s: cannot check that %s is the data it was trained on", run_dir,
                    RUN_DATA_MANIFEST, data.root)
        return None
    try:
        run_manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    if accepts_mutated(run_manifest, data.manifest):
        log.info("%s is a `logllm mutate` folder made from the data %s was trained on, with train and val "
                 "byte-identical (sha256): accepted, its test split is mutated", data.root, run_dir)
        return None
    differences = identity_differences(run_manifest, data.manifest)
    if MUTATION_KEY in data.manifest and not _same_fit_tables(run_manifest, data.manifest):
        differences.append("a `logllm mutate` folder whose train/val tables are not the run's (sha256)")
    if not differences:
        return None
    shown = "; ".join(differences[:6]) + (f"; and {len(differences) - 6} more" if len(differences) > 6 else "")
    if not allow_other_data:
        raise DataError(f"--data {data.root} is not the data {run_dir} was trained on ({shown}). Pass the "
                        f"prepared folder the run was trained on, or add --allow-other-data to {command} "
                        "with this one anyway (it is recorded with the results)")
    log.warning("--allow-other-data: %s is not the data %s was trained on (%s)", data.root, run_dir, shown)
    return {"allow_other_data": True, "data": str(data.root), "differences": differences}


def accepts_mutated(run_manifest: Mapping[str, Any], data_manifest: Mapping[str, Any]) -> bool:
    """True when ``data_manifest`` is a `logllm mutate` folder made from the run's data whose train and val
    tables are byte-identical to the run's (sha256): evaluating on it measures the test mutation only.
    A template holdout (which re-splits train) is never accepted."""
    record = data_manifest.get(MUTATION_KEY)
    if not isinstance(record, Mapping) or record.get("train_unchanged") is not True:
        return False
    source = record.get("mutated_from") or {}
    if source.get("identity") != data_identity(run_manifest):
        return False
    return _same_fit_tables(run_manifest, data_manifest)


def _same_fit_tables(run_manifest: Mapping[str, Any], data_manifest: Mapping[str, Any]) -> bool:
    """Train (and val, where either has it) byte-identical by their recorded sha256."""
    run_files, data_files = run_manifest.get(FILES) or {}, data_manifest.get(FILES) or {}
    names = {f"{s}.parquet" for s in ("train", "val")} & (set(run_files) | set(data_files))
    return "train.parquet" in names and all(
        (run_files.get(n) or {}).get("sha256") is not None
        and (run_files.get(n) or {}).get("sha256") == (data_files.get(n) or {}).get("sha256") for n in names)
