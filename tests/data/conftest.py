"""Fixtures of the data tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(params=["c", "numpy"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once with the C line scanner and once with the numpy/polars path that replaces it
    where it is not built. In CI the C scanner must be there (a failed build would otherwise leave
    its path untested without a word)."""
    from logllm.data import linescan

    if request.param == "c":
        if not linescan.available():
            if os.environ.get("CI"):
                pytest.fail("the C line scanner (logllm.data._linescan) is not built; see setup.py")
            pytest.skip("the C line scanner is not built here (no C compiler at install time)")
    else:
        monkeypatch.setattr(linescan, "_c", None)
    return request.param
