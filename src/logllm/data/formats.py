"""Loghub-style log-format strings (``<Date> <Time> <Level> <Component>: <Content>``) -> regexes.

A format is a sequence of ``<Field>`` placeholders and literal separators. As in Loghub, a run of
spaces in a separator matches any run of whitespace and each field matches lazily, so
``<Date> <Time> <Content>`` splits at the first two whitespace runs. ``<Content>`` must be the last
field: everything after the header is the message. Literal text is matched literally; a backslash
escapes the next character (so Loghub's ``\\[<Time>\\]`` and a plain ``[<Time>]`` both work).

Only the header is matched to find where the content starts (a regex *without* capture groups is
several times faster in polars); fields are captured only when a label or timestamp needs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from logllm.errors import ConfigError

_FIELD = re.compile(r"<([^<>]*)>")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CONTENT = "Content"


def _literal(text: str) -> str:
    """A separator as regex: backslash escapes dropped, runs of spaces -> ``\\s+``, the rest escaped."""
    text = re.sub(r"\\(.)", r"\1", text)
    parts = re.split(r" +", text)
    return r"\s+".join(re.escape(p) for p in parts)


@dataclass(frozen=True)
class LogFormat:
    """A parsed log-format string. Build with :meth:`LogFormat.parse`."""

    text: str
    fields: tuple[str, ...]
    separators: tuple[str, ...]  # regex of the literal before each field, and one after the last

    @classmethod
    def parse(cls, text: str) -> LogFormat:
        pieces = _FIELD.split(text)
        seps, fields = pieces[0::2], pieces[1::2]
        if not fields:
            raise ConfigError(f"--format {text!r} has no <Field> placeholders; "
                              "example: '<Date> <Time> <Level> <Component>: <Content>'")
        for name in fields:
            if not _NAME.match(name):
                raise ConfigError(f"--format {text!r}: field name <{name}> must be letters, digits "
                                  "or _ and not start with a digit")
        dup = sorted({f for f in fields if fields.count(f) > 1})
        if dup:
            raise ConfigError(f"--format {text!r}: field <{dup[0]}> appears more than once")
        if fields[-1] != CONTENT:
            raise ConfigError(f"--format {text!r}: the last field must be <{CONTENT}> (the message); "
                              f"found <{fields[-1]}>")
        if seps[-1].strip():
            raise ConfigError(f"--format {text!r}: text after <{CONTENT}> is not supported")
        return cls(text=text, fields=tuple(fields), separators=tuple(_literal(s) for s in seps))

    @property
    def header_fields(self) -> tuple[str, ...]:
        return self.fields[:-1]

    @property
    def header_regex(self) -> str:
        """Anchored regex matching the header up to where ``<Content>`` starts (no captures)."""
        out = "^" + self.separators[0]
        for i in range(len(self.header_fields)):
            out += "(?:.*?)" + self.separators[i + 1]
        return out

    def capture_regex(self, wanted: tuple[str, ...] | list[str]) -> str:
        """Anchored regex of the whole line with named groups for the ``wanted`` fields only."""
        out = "^" + self.separators[0]
        for i, name in enumerate(self.fields):
            body = ".*" if name == CONTENT else ".*?"
            out += f"(?P<{name}>{body})" if name in wanted else f"(?:{body})"
            if i + 1 < len(self.fields):
                out += self.separators[i + 1]
        return out + "$"

    def field_prefix_regex(self, name: str) -> str:
        """Anchored regex of the header up to and including header field ``name`` and the separator
        after it, with the groups ``before`` (the text before the field) and ``value`` (the field), or
        ``alone`` (the field where the line ends after it: one word, without the separator).

        It matches more lines than the whole header does (the fields after ``name`` may be missing),
        which is how a label field is found in a line that does not match the format.
        """
        k = self.header_fields.index(name)
        out = "^(?P<before>" + self.separators[0]
        for i in range(k):
            out += "(?:.*?)" + self.separators[i + 1]
        return out + ")(?:(?P<value>.*?)" + self.separators[k + 1] + r"|(?P<alone>\S*)\s*$)"

    @property
    def header_can_be_empty(self) -> bool:
        """True when the header regex can match the empty string (then every line parses)."""
        return re.match(self.header_regex, "") is not None

    @property
    def literal_has_digit(self) -> bool:
        return any(ch.isdigit() for ch in "".join(self.separators))

    def strip_header(self, lines: pl.Series) -> tuple[pl.Series, pl.Series]:
        """``(content, parsed)``: content is the line minus its header; ``parsed`` is False (and the
        content the whole line) where the header does not match."""
        content = lines.str.replace(self.header_regex, "")
        if self.header_can_be_empty:
            parsed = pl.Series("parsed", [True] * len(lines), dtype=pl.Boolean)
        else:
            # A match always removes at least one character, so an unchanged length means no match.
            parsed = (lines.str.len_bytes() != content.str.len_bytes()).fill_null(False).rename("parsed")
        return content.rename("content"), parsed

    def extract(self, lines: pl.Series, wanted: list[str]) -> pl.DataFrame:
        """The ``wanted`` fields as string columns (null where the line does not parse)."""
        if not wanted:
            return pl.DataFrame()
        groups = lines.str.extract_groups(self.capture_regex(wanted))
        return groups.struct.unnest()


FAMILY_FORMATS: dict[str, str] = {
    "hdfs": "<Date> <Time> <Pid> <Level> <Component>: <Content>",
    "bgl": "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
    "thunderbird": "<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Content>",
    "liberty": "<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Content>",
    "spirit": "<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Content>",
}

_EPOCH = r"^[0-9]+$"
_DOTTED_DATE = r"^[0-9]{4}\.[0-9]{2}\.[0-9]{2}$"
_CLOCK = r"^[0-9]{2}:[0-9]{2}:[0-9]{2}$"

#: What some header fields of the built-in families hold in real logs of that family (all lines of
#: the sample data fit). A line that matches a family's format string but not these is most likely
#: from another log: an HDFS log read as bgl "parses", with its date as the line label.
FAMILY_FIELD_PATTERNS: dict[str, dict[str, str]] = {
    "hdfs": {"Date": r"^[0-9]{6}$", "Time": r"^[0-9]{6}$"},
    "bgl": {"Timestamp": _EPOCH, "Date": _DOTTED_DATE,
            "Time": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}\.[0-9]{2}\.[0-9]{2}\.[0-9]+$"},
    **{family: {"Timestamp": _EPOCH, "Date": _DOTTED_DATE, "Time": _CLOCK}
       for family in ("thunderbird", "liberty", "spirit")},
}


def guess_families(line: str) -> list[str]:
    """The built-in families whose format and :data:`FAMILY_FIELD_PATTERNS` fit ``line`` (for error
    messages that name the likely family of a log)."""
    out = []
    for family, text in FAMILY_FORMATS.items():
        patterns = FAMILY_FIELD_PATTERNS[family]
        m = re.match(LogFormat.parse(text).capture_regex(list(patterns)), line)
        if m and all(re.match(p, m.group(name) or "") for name, p in patterns.items()):
            out.append(family)
    return out


_CLOCK_MS = r"^[0-9]{2}:[0-9]{2}:[0-9]{2}[.,][0-9]+$"
_MONTH = r"^[A-Z][a-z]{2}$"
_DAY = r"^[0-9]{1,2}$"
_DIGITS = r"^[0-9]+$"
_WORD_LEVEL = r"^[A-Z]+$"

#: The Loghub benchmark format strings (logparser's benchmark settings) of the systems in the
#: project's ``loghub_2k`` samples that are not a built-in family, written for :class:`LogFormat`
#: (Loghub's optional ``(\\[<PID>\\])?`` groups are left to the lazy fields), each with what some of
#: its fields hold in that system's logs, the more specific formats first: ``--format auto`` counts a line as matching a format only
#: where these fit too (a lazy format matches many other logs). HDFS and Thunderbird are the
#: ``hdfs`` and ``thunderbird`` families (:data:`FAMILY_FORMATS`); BGL is ``bgl``.
LOGHUB_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    "Android": ("<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
                {"Date": r"^[0-9]{2}-[0-9]{2}$", "Time": _CLOCK_MS, "Pid": _DIGITS, "Tid": _DIGITS,
                 "Level": r"^[VDIWEFA]$"}),
    "Apache": (r"\[<Time>\] \[<Level>\] <Content>",
               {"Time": r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ 0-9][0-9] [0-9:]{8} [0-9]{4}$", "Level": r"^[a-z]+$"}),
    "HPC": ("<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
            {"LogId": _DIGITS, "Time": _DIGITS, "Flag": _DIGITS}),
    "OpenSSH": (r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
                {"Date": _MONTH, "Day": _DAY, "Time": _CLOCK, "Pid": _DIGITS}),
    "Spark": ("<Date> <Time> <Level> <Component>: <Content>",
              {"Date": r"^[0-9]{2}/[0-9]{2}/[0-9]{2}$", "Time": _CLOCK, "Level": _WORD_LEVEL}),
    "Zookeeper": (r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
                  {"Date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "Time": _CLOCK_MS, "Level": _WORD_LEVEL,
                   "Id": _DIGITS}),
    # Last: any syslog-style line fits it, OpenSSH's lines too (auto ranks near-ties in this order).
    "Linux": ("<Month> <Date> <Time> <Level> <Component>: <Content>",
              {"Month": _MONTH, "Date": _DAY, "Time": _CLOCK}),
}


def format_fits(text: str, patterns: dict[str, str], lines: pl.Series) -> pl.Series:
    """Per line: it matches the format string ``text`` and its fields named in ``patterns`` fit them."""
    fmt = LogFormat.parse(text)
    _, parsed = fmt.strip_header(lines)
    if not patterns:
        return parsed
    fields = fmt.extract(lines, list(patterns))
    ok = pl.lit(True)
    for name, pattern in patterns.items():
        ok = ok & pl.col(name).str.contains(pattern).fill_null(False)
    return parsed & fields.select(ok.alias("fits")).to_series()
