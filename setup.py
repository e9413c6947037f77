"""The C line scanner of `logllm prepare` (src/logllm/data/_linescan.c); everything else is in pyproject.toml.

The extension is optional: where it cannot be compiled (no C compiler), the package installs without it
and `prepare` takes its numpy/polars path, which gives the same output, slower.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("logllm.data._linescan", ["src/logllm/data/_linescan.c"], optional=True)])
