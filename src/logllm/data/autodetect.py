"""``--format auto``: the format of a log, picked from its first lines.

`prepare` reads the first :data:`SAMPLE_LINES` non-blank lines of the first input and tries every
candidate of :func:`candidates`: JSON lines, logfmt, the built-in families' format strings, the Loghub
benchmark formats (:data:`~logllm.data.formats.LOGHUB_FORMATS`) and syslog. A line matches a format
string when the format matches and the fields whose look is known fit it (a lazy format such as
``<Date> <Time> <Level> <Component>: <Content>`` matches many logs); it matches a structured format
when it is a record with a message. The best match rate wins; candidates within
:data:`TIE_MARGIN` of it are ranked in the order of :func:`candidates` (the more specific first:
OpenSSH's ``sshd[<Pid>]`` before Linux's bare ``<Component>``, Loghub formats before plain syslog).
Under :data:`MIN_RATE` `prepare` stops, naming the best candidates and their rates.

The choice is resolved once, at prepare time: the manifest records the format picked (and the
message key found), so detection reads new lines the same way.

    detection = detect_format(sample_lines("app.log"))
    detection.format, detection.rate    # e.g. "json", 1.0
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import polars as pl

from logllm.data.formats import FAMILY_FIELD_PATTERNS, FAMILY_FORMATS, LOGHUB_FORMATS, format_fits
from logllm.data.options import AUTO, PrepareOptions
from logllm.data.structured import STRUCTURED_FORMATS, BadRecord, get_path, guess_message_key, parse_record
from logllm.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["Candidate", "Detection", "candidates", "detect_format", "resolve_format", "sample_lines"]

SAMPLE_LINES = 200
#: `--format auto` stops when no candidate matches this share of the sampled lines
MIN_RATE = 0.9
#: candidates whose rate is this close to the best are ranked by specificity (their order)
TIE_MARGIN = 0.02


@dataclass(frozen=True)
class Candidate:
    """One format `auto` tries: ``format`` is the value of ``--format`` it stands for."""

    name: str
    format: str
    patterns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Detection:
    """What `auto` picked: the candidate, its match rate over ``lines`` sampled lines, the message
    key it found (json, logfmt) and every candidate's rate, best first."""

    candidate: Candidate
    rate: float
    lines: int
    message_field: str | None
    rates: list[tuple[str, float]]

    @property
    def format(self) -> str:
        return self.candidate.format

    def to_dict(self) -> dict[str, Any]:
        return {"picked": self.candidate.name, "format": self.format, "rate": round(self.rate, 4),
                "sampled_lines": self.lines, "message_field": self.message_field,
                "next": [{"name": n, "rate": round(r, 4)} for n, r in self.rates[1:4]]}


def candidates() -> list[Candidate]:
    """Every format `auto` tries, the more specific first (the order breaks near-ties)."""
    out = [Candidate("json", "json"), Candidate("logfmt", "logfmt")]
    seen: set[str] = set()
    for family, text in FAMILY_FORMATS.items():
        if text not in seen:  # thunderbird, liberty and spirit share one format
            seen.add(text)
            out.append(Candidate(family, text, FAMILY_FIELD_PATTERNS.get(family, {})))
    for system, (text, patterns) in LOGHUB_FORMATS.items():
        out.append(Candidate(f"Loghub {system}", text, patterns))
    out.append(Candidate("syslog", "syslog"))
    return out


def _structured_rate(fmt: str, lines: list[str], message_field: str | None) -> tuple[float, str | None]:
    key = message_field or guess_message_key(fmt, lines)[0]
    if key is None:
        return 0.0, None
    ok = 0
    for line in lines:
        try:
            ok += get_path(parse_record(fmt, line), key) is not None
        except BadRecord:
            pass
    return ok / len(lines), key


def detect_format(lines: list[str], message_field: str | None = None, where: str = "the input") -> Detection:
    """The best candidate for ``lines`` (non-blank, without line ends); ConfigError under :data:`MIN_RATE`."""
    if not lines:
        raise DataError(f"--format auto: {where} has no non-blank line to look at")
    series = pl.Series("line", lines, dtype=pl.String)
    rated: list[tuple[Candidate, float, str | None]] = []
    for cand in candidates():
        if cand.format in STRUCTURED_FORMATS:
            rate, key = _structured_rate(cand.format, lines, message_field)
        else:
            rate, key = float(format_fits(cand.format, cand.patterns, series).mean() or 0.0), None
        rated.append((cand, rate, key))
    best = max(rate for _, rate, _ in rated)
    pick = next(r for r in rated if r[1] >= best - TIE_MARGIN)
    ranking = sorted(rated, key=lambda r: -r[1])
    rates = [(pick[0].name, pick[1])] + [(c.name, r) for c, r, _ in ranking if c is not pick[0]]
    if pick[1] < MIN_RATE:
        best3 = "; ".join(f"{c.name} {r:.0%}" + ("" if c.format in STRUCTURED_FORMATS else f" ({c.format!r})")
                          for c, r, _ in ranking[:3])
        raise DataError(f"--format auto: no format matches {MIN_RATE:.0%} of the first {len(lines)} non-blank "
                        f"lines of {where}; best: {best3}. Pass --format (a Loghub format string, json, logfmt "
                        "or syslog; json/logfmt with --message-field KEY if the message key is another)")
    return Detection(pick[0], pick[1], len(lines), pick[2], rates)


def sample_lines(path: str, n: int = SAMPLE_LINES) -> list[str]:
    """The first ``n`` non-blank lines of ``path`` (plain or gzip), without line ends."""
    try:
        with open(path, "rb") as raw:
            gz = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        out: list[str] = []
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:  # type: ignore[operator]
            for line in f:
                line = line.rstrip("\r\n").removeprefix("\ufeff")
                if line.strip():
                    out.append(line)
                    if len(out) >= n:
                        break
        return out
    except (OSError, EOFError) as err:
        raise DataError(f"--log {path}: cannot read ({err})") from err


def resolve_format(options: PrepareOptions) -> tuple[PrepareOptions, dict[str, Any] | None]:
    """``options`` with ``--format auto`` replaced by the format picked from the first input's first
    lines, and a json/logfmt message key found there where none is named; and what `auto` found (for
    the manifest; None without auto). Logs the choice and its rate."""
    o = options
    if o.format != AUTO and not (o.format in ("json", "logfmt") and not o.message_field):
        return o, None
    if not o.inputs:
        raise ConfigError("no input files given; pass --log FILE (several allowed, read in order)")
    where = o.inputs[0]
    lines = sample_lines(where)
    if o.format != AUTO:
        key, n = guess_message_key(str(o.format), lines)
        if key is None:
            raise DataError(f"--format {o.format}: none of the first {len(lines)} records of {where} has a key "
                            f"of {', '.join(repr(k) for k in ('message', 'msg', 'log'))}, ...; pass "
                            "--message-field KEY (a dotted path for nested keys, e.g. log.msg)")
        log.info("--format %s: message key %r (in %d of the first %d records of %s)", o.format, key, n,
                 len(lines), where)
        return replace(o, message_field=key), None
    found = detect_format(lines, o.message_field, where)
    others = ", ".join(f"{name} {rate:.0%}" for name, rate in found.rates[1:4])
    log.info("--format auto: picked %s (%r%s): %.1f%% of the first %d non-blank lines of %s match (next: %s)",
             found.candidate.name, found.format,
             f", message key {found.message_field!r}" if found.message_field else "", 100 * found.rate,
             found.lines, where, others)
    if (o.family == "custom" and found.candidate.name in FAMILY_FORMATS and "Label" in found.format
            and not o.label_field):
        log.warning("--format auto: the lines look like %s logs, whose first token is each line's label; "
                    "`logllm prepare %s` reads it (custom reads it with --label-field Label)",
                    found.candidate.name, found.candidate.name)
    updates: dict[str, Any] = {"format": found.format}
    if found.message_field:
        updates["message_field"] = found.message_field
    return replace(o, **updates), found.to_dict()
