"""Structured log lines -> records: JSON lines, logfmt, and syslog (RFC 5424 and RFC 3164).

Each parser takes one line and returns the record as a dict (nested where the format nests: JSON
objects, RFC 5424 structured data), or raises :class:`BadRecord` saying why the line is not such a
record (the caller adds file and line). Keys are read with :func:`get_path`, where a dotted path
(``log.msg``) walks nested objects and a key that itself holds dots still matches whole.

    record = parse_record("syslog", "<34>1 2003-10-11T22:14:15.003Z mymachine su - ID47 - 'su root' failed")
    record["message"], record["host"], record["app"]    # "'su root' failed", "mymachine", "su"

Syslog records always have the keys ``message`` (the MSG part), ``timestamp``, ``host``, ``app``,
``pid``, ``msgid`` (None where the line has none or the RFC 5424 nil value ``-``), ``priority``,
``facility`` and ``severity`` (None without a ``<PRI>``), ``version`` (RFC 5424 only, else None),
and ``sd``: the RFC 5424 structured data as ``{sd_id: {param: value}}``. RFC 3164 lines written to
files by syslog daemons have no ``<PRI>``; it is optional here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

StructuredFormat = Literal["json", "logfmt", "syslog"]
STRUCTURED_FORMATS: tuple[str, ...] = ("json", "logfmt", "syslog")

#: Keys tried, in this order, for the message when --message-field is not given (json, logfmt).
MESSAGE_KEYS: tuple[str, ...] = ("message", "msg", "log", "MESSAGE", "@message", "text")


class BadRecord(ValueError):
    """A line that is not a record of the format (the text says why, without file and line)."""


_MISSING = object()


def get_path(record: dict[str, Any], path: str) -> Any:
    """The value at ``path`` in ``record`` (a key, or a dotted path into nested objects), or None.

    At each level the longest run of the path's parts that is a key is taken, so ``{"a.b": 1}``
    and ``{"a": {"b": 1}}`` both answer ``a.b``.
    """
    value = _get(record, path.split("."))
    return None if value is _MISSING else value


def _get(node: Any, parts: list[str]) -> Any:
    if not parts:
        return node
    if not isinstance(node, dict):
        return _MISSING
    for k in range(len(parts), 0, -1):
        key = ".".join(parts[:k])
        if key in node:
            found = _get(node[key], parts[k:])
            if found is not _MISSING:
                return found
    return _MISSING


def as_text(value: Any) -> str | None:
    """A record value as text: strings as they are, other values as JSON (``0``, ``true``, ``{...}``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def session_keys(record: dict[str, Any] | None, path: str) -> list[str]:
    """The session ids a record names at ``path`` (``--session-field``): its value as text, or each
    distinct item of a JSON array, in order; empty where the key is absent, null or the empty string."""
    value = None if record is None else get_path(record, path)
    items = value if isinstance(value, list) else [value]
    return list(dict.fromkeys(t for t in map(as_text, items) if t))


# ---- JSON lines ---------------------------------------------------------------------------------
def parse_json(line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise BadRecord(f"invalid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise BadRecord(f"a JSON {type(record).__name__}, not an object")
    return record


# ---- logfmt -------------------------------------------------------------------------------------
# key=value pairs separated by spaces; a value is bare (no spaces or quotes) or double-quoted with
# backslash escapes; a key alone is a key with an empty value (as go-logfmt reads it).
_PAIR = re.compile(r'[ \t]*([^\s="]+)(?:=("(?:[^"\\]|\\.)*"|[^\s"]*))?(?=[ \t]|$)')
_ESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


def _unquote(text: str) -> str:
    try:
        return json.loads(text)  # Go's strconv.Quote output is (nearly always) a JSON string
    except json.JSONDecodeError:
        return _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), text[1:-1])


def parse_logfmt(line: str) -> dict[str, Any]:
    record: dict[str, Any] = {}
    pos, end = 0, len(line.rstrip())
    while pos < end:
        m = _PAIR.match(line, pos)
        if not m or m.end() == pos:
            rest = line[pos:].lstrip()
            why = "an unterminated quote" if rest.count('"') % 2 else f"text that is no key=value pair ({rest[:30]!r})"
            raise BadRecord(f"not logfmt: {why} at column {len(line) - len(rest) + 1}")
        key, value = m.group(1), m.group(2)
        if value is None:
            value = ""
        elif value.startswith('"'):
            value = _unquote(value)
        record[key] = value
        pos = m.end()
    if not record:
        raise BadRecord("not logfmt: no key=value pair")
    return record


# ---- syslog -------------------------------------------------------------------------------------
_RFC5424 = re.compile(r"^<(\d{1,3})>(\d{1,2}) (\S+) (\S+) (\S+) (\S+) (\S+) (.*)$", re.S)
_SD_ELEMENT = re.compile(r'\[([^\s\]="]+)((?:\s+[^\s=\]"]+="(?:[^"\\]|\\.)*")*)\s*\]')
_SD_PARAM = re.compile(r'([^\s=\]"]+)="((?:[^"\\]|\\.)*)"')
_SD_ESCAPE = re.compile(r'\\([\\"\]])')
_RFC3164 = re.compile(r"^(?:<(\d{1,3})>)?([A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (\S+) ?(.*)$", re.S)
_TAG = re.compile(r"^([^\s:\[\]]{1,48})(?:\[([^\]\s]*)\])?: ?(.*)$", re.S)


def _nil(value: str) -> str | None:
    return None if value == "-" else value


def _priority(pri: str | None) -> dict[str, int | None]:
    if pri is None:
        return {"priority": None, "facility": None, "severity": None}
    p = int(pri)
    if p > 191:
        raise BadRecord(f"syslog <PRI> {p} is above 191")
    return {"priority": p, "facility": p // 8, "severity": p % 8}


def _structured_data(text: str) -> tuple[dict[str, dict[str, str]], str]:
    """RFC 5424 STRUCTURED-DATA at the start of ``text`` -> ``({sd_id: {param: value}}, MSG)``."""
    if text == "-" or text.startswith("- "):
        return {}, text[2:]
    out: dict[str, dict[str, str]] = {}
    pos = 0
    while pos < len(text) and text[pos] != " ":
        m = _SD_ELEMENT.match(text, pos)
        if not m:
            raise BadRecord(f"RFC 5424 structured data is malformed at {text[pos:pos + 30]!r}")
        out[m.group(1)] = {k: _SD_ESCAPE.sub(r"\1", v) for k, v in _SD_PARAM.findall(m.group(2))}
        pos = m.end()
    if not out:
        raise BadRecord("RFC 5424 structured data is missing (use '-' for none)")
    return out, text[pos + 1:]


def parse_syslog(line: str) -> dict[str, Any]:
    m = _RFC5424.match(line)
    if m:
        pri, version, ts, host, app, pid, msgid, rest = m.groups()
        sd, msg = _structured_data(rest)
        message = msg.removeprefix("\ufeff")  # RFC 5424 marks a UTF-8 MSG with a BOM
        return {"message": message, "timestamp": _nil(ts), "host": _nil(host), "app": _nil(app),
                "pid": _nil(pid), "msgid": _nil(msgid), **_priority(pri), "version": int(version), "sd": sd}
    m = _RFC3164.match(line)
    if m:
        pri, ts, host, rest = m.groups()
        tag = _TAG.match(rest)
        app, pid, message = tag.groups() if tag else (None, None, rest)
        return {"message": message, "timestamp": ts, "host": host, "app": app, "pid": pid, "msgid": None,
                **_priority(pri), "version": None, "sd": {}}
    raise BadRecord("not syslog: neither RFC 5424 ('<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG') nor "
                    "RFC 3164 ('[<PRI>]Mmm dd hh:mm:ss HOST TAG: MSG')")


PARSERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "json": parse_json, "logfmt": parse_logfmt, "syslog": parse_syslog}

#: The message key of each format when --message-field is not given (None: the first of MESSAGE_KEYS
#: that the records hold, found by :func:`guess_message_key`).
DEFAULT_MESSAGE_KEY: dict[str, str | None] = {"json": None, "logfmt": None, "syslog": "message"}
#: The time key of each format when the time is asked for (time windows) and not named.
DEFAULT_TIME_KEY: dict[str, str | None] = {"json": None, "logfmt": None, "syslog": "timestamp"}


def parse_record(fmt: str, line: str) -> dict[str, Any]:
    """One line of format ``fmt`` (json, logfmt or syslog) as a record; :class:`BadRecord` if it is not one."""
    return PARSERS[fmt](line)


def guess_message_key(fmt: str, lines: list[str]) -> tuple[str | None, int]:
    """The key of :data:`MESSAGE_KEYS` that most records of ``lines`` hold (the earlier key on ties),
    and how many records hold it; ``(None, 0)`` where no record holds any."""
    if DEFAULT_MESSAGE_KEY.get(fmt):
        return DEFAULT_MESSAGE_KEY[fmt], len(lines)
    counts = dict.fromkeys(MESSAGE_KEYS, 0)
    for line in lines:
        try:
            record = parse_record(fmt, line)
        except BadRecord:
            continue
        for key in MESSAGE_KEYS:
            if get_path(record, key) is not None:
                counts[key] += 1
    key, n = max(counts.items(), key=lambda kv: kv[1])  # (max keeps the first of equal counts)
    return (key, n) if n else (None, 0)
