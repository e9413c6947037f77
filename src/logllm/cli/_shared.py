"""Options that several subcommands share: the run's preprocessing, overridden (`detect`, `score`), comma
lists and ``--set METHOD.PARAM=VALUE`` (`bench`, `experiment`).

The file name starts with an underscore only so that the CLI does not take it for a subcommand.
"""

from __future__ import annotations

import argparse
from typing import Any

from logllm.errors import ConfigError


def add_preprocessing_overrides(parser: argparse.ArgumentParser, title: str) -> None:
    """The options that change the run's preprocessing (default: the run's, from its data manifest)."""
    pre = parser.add_argument_group(title)
    pre.add_argument("--log-format", dest="log_format", default=None,
                     help="Loghub-style format, e.g. '<Date> <Time> <Level> <Component>: <Content>'")
    pre.add_argument("--mask", choices=["paper", "none"], default=None)
    pre.add_argument("--on-unparsed", choices=["keep", "skip"], default=None)
    pre.add_argument("--window", type=int, default=None)
    pre.add_argument("--step", type=int, default=None)
    pre.add_argument("--session-regex", default=None)
    pre.add_argument("--session-field", default=None, metavar="KEY",
                     help="json/logfmt/syslog runs: sessions by the value at this key (default: the run's)")
    pre.add_argument("--time-window", default=None)
    pre.add_argument("--timestamp-field", default=None)
    pre.add_argument("--timestamp-format", default=None)
    pre.add_argument("--max-line-chars", type=int, default=None)


def preprocessing_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The `prepare` options given on the command line by :func:`add_preprocessing_overrides` (None: not given)."""
    return {
        "format": args.log_format, "mask": args.mask, "on_unparsed": args.on_unparsed, "window": args.window,
        "step": args.step, "session_regex": args.session_regex,
        "session_field": args.session_field, "time_window": args.time_window,
        "timestamp_field": args.timestamp_field, "timestamp_format": args.timestamp_format,
        "max_line_chars": args.max_line_chars,
    }


def method_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``--set METHOD.PARAM=VALUE`` options (bench, experiment) as {method: {param: value}}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method.strip() or not name.strip():
            raise ConfigError(f"--set {item!r}: expected METHOD.PARAM=VALUE, e.g. logrobust.epochs=10")
        out.setdefault(method.strip(), {})[name.strip()] = value.strip()
    return out


def comma_list(text: str, option: str, kind: Any = str) -> tuple:
    """``0,1,2`` -> ``(0, 1, 2)`` with each value made by ``kind``; empty items are left out. A value
    ``kind`` refuses, or no value at all, is a ConfigError naming ``option`` and ``text``."""
    try:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError as err:
        raise ConfigError(f"{option} {text!r}: expected a comma list of numbers, e.g. 0,1,2") from err
    if not values:
        raise ConfigError(f"{option} {text!r}: give at least one value")
    return values
