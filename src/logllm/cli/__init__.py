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
_ORDER = ("prepare", "mutate", "train", "evaluate", "detect", "score", "report", "bench", "experiment")


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


class _PrintableFormatter(logging.Formatter):
    """Log records with control characters escaped: a message may quote a log line, and a log line
    may hold terminal escapes (retitle, clear screen) that must not reach the terminal raw."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        from logllm.follow import printable

        safe = logging.makeLogRecord(record.__dict__)
        safe.message = printable(record.message, keep_newlines=True)
        return super().formatMessage(safe)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler])


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line; options may stand anywhere after the subcommand, also between or after
    its positional arguments (`logllm detect RUN --follow FILE`).

    argparse stops filling a positional list (``FILE ...``) at the first option, and
    `parse_intermixed_args` refuses a parser with subcommands; so the command line is parsed as usual
    first, and when arguments are left over, the subcommand's own arguments are parsed again
    intermixed (which reports any that are still unknown).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    subparser = sub.choices[args.command]
    # The subcommand is the first argument that is not a top-level option (those take no value).
    at = next(i for i, a in enumerate(argv) if not a.startswith("-"))
    parsed = subparser.parse_intermixed_args(argv[at + 1 :])
    for key, value in vars(parsed).items():
        setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except LogLLMError as err:
        from logllm.follow import printable

        print(f"logllm {args.command}: error: {printable(str(err), keep_newlines=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"logllm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
