"""Library versions recorded beside every result, so that numbers can be traced and reproduced."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

_PACKAGES = (
    "logllm", "torch", "transformers", "peft", "polars", "numpy", "scikit-learn",
    "safetensors", "drain3", "bitsandbytes",
)


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape results (absent ones are left out)."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
