"""The `logllm` command: a thin layer that parses arguments and calls the library.

Each subcommand lives in its own module of this package and exposes
``register(subparsers) -> None``, which adds its parser and sets ``func`` (taking the parsed
namespace and returning an exit code). Modules import heavy libraries (torch, transformers)
inside their handlers so that ``logllm prepare`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from logllm import __version__
from logllm.errors import LogLLMError

log = logging.getLogger("logllm")

# Order in `logllm --help`; a module found in this package but not listed here comes after.
_ORDER = ("prepare", "train", "evaluate", "detect", "report", "bench")


def _subcommand_modules() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [n for n in _ORDER if n in found] + sorted(found - set(_ORDER))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logllm", description="Find anomalies in system logs with large language models (LogLLM)."
    )
    parser.add_argument("--version", action="version", version=f"logllm {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _subcommand_modules():
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except LogLLMError as err:
        print(f"logllm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"logllm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
