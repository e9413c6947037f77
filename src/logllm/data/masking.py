"""Masking variable parts of log messages: an ordered list of named instructions (METHOD.md section 2).

A masking is a :class:`Masking`: a name and an ordered tuple of :class:`MaskInstruction`
``(name, regex, replace)``. The instructions run in order, each over the whole output of the one
before: every match of its regex (leftmost-first, non-overlapping) becomes its replacement, taken
literally (no group references). Regexes use the syntax of Rust's ``regex`` crate, the engine polars
runs (Python-like, without look-around or back-references). ``logllm prepare`` records the list in
the prepared folder's manifest (``options.mask``, the name, and ``options.mask_instructions``), and
``logllm detect`` applies that recorded list to new lines (:func:`masking_from_manifest`).

Built-in lists (:data:`BUILTIN_MASKINGS`):

* ``paper`` (default): ``dots``, runs of three or more dots become ``.. ``; then ``variables``:
  scanning left to right, the first class of :data:`MASK_CLASSES` that matches at a position is
  replaced by ``<*>`` (one alternation of the ten classes in order: both engines use leftmost-first
  alternation, so this implements "first class that matches");
* ``none``: no instruction (the raw content, the Table IV comparison).

Your own list, ``logllm prepare ... --mask rules.toml``::

    # rules.toml: the instructions run in this order
    [[mask]]
    name = "ip"                                   # unique within the list
    regex = '(?:[0-9]{1,3}\\.){3}[0-9]{1,3}'      # TOML literal string: backslashes as written
    replace = "<IP>"

    [[mask]]
    use = "paper"                                 # the built-in paper instructions at this point

Each ``[[mask]]`` entry holds either ``name``, ``regex`` and ``replace`` (strings; ``replace`` may be
empty) or only ``use`` (a built-in list). A regex must compile and must not match the empty string
(it would insert its replacement between characters). Errors name the file, the entry and the bad
value (:class:`~logllm.errors.ConfigError`).

Engines: :func:`mask_series` / :func:`mask_expr` run polars' (Rust) regex over a whole column
(``prepare``, ``detect``); :func:`mask_text` masks one string, the ``paper`` list with Python's
:mod:`re` (the reference the tests compare polars against), other lists through polars. In ``paper``,
word boundaries and character classes are ASCII-only on purpose: Python's and Rust's Unicode
definitions of ``\\b``/``\\w``/``\\s`` differ on rare characters, and ASCII keeps the two
implementations identical on any text.

Every class of ``paper`` treats the ten ASCII digits alike and no digit survives it (a digit is
either inside a match or starts a class-10 match), so ``mask(x) == mask(digits_to_zero(x))``.
:func:`digits_to_zero` lets callers mask each distinct digit-normalised text once (``logllm prepare``
does this on raw bytes, for the ``paper`` list only); a test checks the property.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from logllm.data.threads import in_blocks
from logllm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MASK_TOKEN = "<*>"

DOTS_PATTERN = r"\.{3,}"
DOTS_REPLACEMENT = ".. "

_WS = r"[ \t\n\r\f\v]"
_NUMBER_WORDS = (
    "zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|"
    "sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    "hundred|thousand|million|billion"
)
_WEEKDAYS = "Monday|Mon|Tuesday|Tue|Wednesday|Wed|Thursday|Thu|Friday|Fri|Saturday|Sat|Sunday|Sun"
_MONTHS = (
    "January|Jan|February|Feb|March|Mar|April|Apr|May|June|Jun|July|Jul|August|Aug|September|Sep|"
    "October|Oct|November|Nov|December|Dec"
)
_HEX2 = "[0-9A-Fa-f]{2}"
_USER = "[A-Za-z0-9_.]+"
_TOKEN = r"[A-Za-z0-9.:_\-]"
# "{B}" stands for an ASCII word boundary; it is spelled per engine below.
MASK_CLASSES: tuple[tuple[str, str], ...] = (
    ("bool", "True|true|False|false"),
    ("number_word", "{B}(?:" + _NUMBER_WORDS + "){B}"),
    ("weekday", "{B}(?:" + _WEEKDAYS + "){B}"),
    ("month_day", "{B}(?:" + _MONTHS + ")" + _WS + "+[0-9]{1,2}" + _WS + "+"),
    ("ipv4", r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?::[0-9]+)?"),
    ("mac", f"(?:{_HEX2}:){{11}}{_HEX2}|(?:{_HEX2}:){{5}}{_HEX2}"),
    ("path", r"[A-Za-z0-9]*[:.]?(?:[/\\][^/\\ \t\n\r\f\v\[\]]+)+"),
    ("hex_word", "{B}(?:[0-9A-Fa-f]{10}|[0-9A-Fa-f]{8}){B}"),
    ("user_host", f"{_USER}@{_USER}-{_USER}|{_USER}@{_USER}"),
    ("digit_token", f"{_TOKEN}*[0-9]{_TOKEN}*"),
)


def _combined(boundary: str) -> str:
    return "|".join(f"(?:{p.replace('{B}', boundary)})" for _, p in MASK_CLASSES)


#: The combined pattern for polars / Rust regex (ASCII word boundary).
POLARS_PATTERN = _combined(r"(?-u:\b)")
#: The combined pattern for Python ``re`` (ASCII word boundary).
PYTHON_PATTERN = _combined(r"(?a:\b)")

_PY_MASK = re.compile(PYTHON_PATTERN)
_PY_DOTS = re.compile(DOTS_PATTERN)
_DIGITS_STR = str.maketrans("123456789", "000000000")
DIGITS_TO_ZERO_BYTES = bytes.maketrans(b"123456789", b"000000000")


# ---- masking as data ------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskInstruction:
    """One step of a masking: every match of ``regex`` (Rust regex syntax) becomes ``replace``."""

    name: str
    regex: str
    #: the replacement, taken literally ("$1" is the two characters "$1")
    replace: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "regex": self.regex, "replace": self.replace}


@dataclass(frozen=True)
class Masking:
    """A named, ordered list of :class:`MaskInstruction`, applied one after the other."""

    #: "paper", "none", or the file name of a user's TOML list (e.g. "rules.toml")
    name: str
    instructions: tuple[MaskInstruction, ...] = ()

    @property
    def is_paper(self) -> bool:
        """Whether this list is exactly the built-in ``paper`` list (what the fast prepare path needs:
        the digit-normalisation property holds for it)."""
        return self.instructions == PAPER.instructions

    def to_list(self) -> list[dict[str, str]]:
        """The instructions as JSON-ready dicts (the manifest's ``options.mask_instructions``)."""
        return [ins.to_dict() for ins in self.instructions]


PAPER = Masking("paper", (MaskInstruction("dots", DOTS_PATTERN, DOTS_REPLACEMENT),
                          MaskInstruction("variables", POLARS_PATTERN, MASK_TOKEN)))
NONE = Masking("none", ())
#: The lists known by name (``--mask paper``, ``--mask none``, ``use = "paper"`` in a TOML list).
BUILTIN_MASKINGS: dict[str, Masking] = {"paper": PAPER, "none": NONE}
MASK_MODES: tuple[str, ...] = tuple(BUILTIN_MASKINGS)

#: What ``mask=`` accepts: a built-in name, a TOML file path, or a :class:`Masking`.
MaskSpec = str | Masking

_ENTRY_KEYS = ("name", "regex", "replace")
# Texts on which a regex that can match the empty string shows it (x*, \b, ^, $, (?:)).
_EMPTY_PROBES = ["", "a b", "0 .-/", "\t"]


def resolve_masking(spec: MaskSpec, what: str = "--mask") -> Masking:
    """``spec`` as a checked :class:`Masking`: a built-in name, a TOML file (:func:`load_masking`), or
    a Masking (its instructions checked as a file's are). Raises ConfigError naming ``what`` and the value."""
    if isinstance(spec, Masking):
        if any(spec.instructions == b.instructions for b in BUILTIN_MASKINGS.values()):
            return spec
        return Masking(spec.name, check_instructions(spec.instructions, f"{what} {spec.name}"))
    if not isinstance(spec, str):
        raise ConfigError(f"{what} {spec!r} is not a masking; give {_choices()}")
    if spec in BUILTIN_MASKINGS:
        return BUILTIN_MASKINGS[spec]
    if spec.endswith(".toml") or Path(spec).is_file():
        return load_masking(spec, what)
    raise ConfigError(f"{what} {spec!r} is neither a built-in masking nor a TOML file; give {_choices()}")


def _choices() -> str:
    return f"{', '.join(BUILTIN_MASKINGS)}, or a TOML file of [[mask]] entries (see logllm.data.masking)"


def load_masking(path: str | Path, what: str = "--mask") -> Masking:
    """Read and check a user's masking list from a TOML file (format: the module docstring)."""
    where = f"{what} {path}"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError as err:
        raise ConfigError(f"{where}: no such file; give {_choices()}") from err
    except OSError as err:
        raise ConfigError(f"{where}: cannot read it ({err.strerror or err})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where}: not valid TOML: {err}") from err
    unknown = sorted(set(data) - {"mask"})
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key(s) {', '.join(unknown)}; the file holds only "
                          "[[mask]] entries (name, regex, replace; or use = \"paper\")")
    entries = data.get("mask")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: no [[mask]] entries; write one [[mask]] table per instruction "
                          "with name, regex and replace")
    return Masking(Path(path).name, check_instructions(entries, where))


def check_instructions(entries: Sequence[Any], where: str) -> tuple[MaskInstruction, ...]:
    """Entries (dicts ``{name, regex, replace}`` or ``{use: BUILTIN}``) as checked instructions;
    a ConfigError names ``where``, the entry (1-based) and the bad value."""
    out: list[MaskInstruction] = []
    for i, entry in enumerate(entries, 1):
        if isinstance(entry, MaskInstruction):
            entry = entry.to_dict()
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: entry {i} is {entry!r}, not a table of name, regex and replace")
        if set(entry) == {"use"}:
            use = entry["use"]
            if use not in BUILTIN_MASKINGS:
                raise ConfigError(f"{where}: entry {i}: use = {use!r} is not a built-in masking; "
                                  f"choose {' or '.join(BUILTIN_MASKINGS)}")
            out.extend(BUILTIN_MASKINGS[use].instructions)
            continue
        out.append(_check_entry(entry, f"{where}: entry {i}"))
    seen: set[str] = set()
    for ins in out:
        if ins.name in seen:
            raise ConfigError(f"{where}: two instructions are named {ins.name!r}; give each a name of its own")
        seen.add(ins.name)
    return tuple(out)


def _check_entry(entry: Mapping[str, Any], where: str) -> MaskInstruction:
    unknown = sorted(set(entry) - set(_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; an entry holds name, regex and "
                          "replace (or only use = \"paper\")")
    missing = [k for k in _ENTRY_KEYS if k not in entry]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)}; an entry holds name, regex and replace")
    bad = [k for k in _ENTRY_KEYS if not isinstance(entry[k], str)]
    if bad:
        raise ConfigError(f"{where}: {', '.join(f'{k} = {entry[k]!r}' for k in bad)}: must be a string")
    name, regex, replace = entry["name"], entry["regex"], entry["replace"]
    where = f"{where} ({name!r})"
    if not name.strip():
        raise ConfigError(f"{where}: empty name; name each instruction (it is recorded in the manifest)")
    if not regex:
        raise ConfigError(f"{where}: empty regex; give the pattern to replace")
    try:
        matches = pl.Series(_EMPTY_PROBES, dtype=pl.String).str.extract_all(regex)
    except pl.exceptions.ComputeError as err:
        raise ConfigError(f"{where}: regex {regex!r} is not valid: {_regex_error(err)} (Rust regex syntax, as "
                          "polars runs it: no look-around or back-references)") from err
    if any("" in found for found in matches.to_list()):
        raise ConfigError(f"{where}: regex {regex!r} matches the empty string, so it would insert {replace!r} "
                          "between characters; make it match at least one character (e.g. x+ instead of x*)")
    return MaskInstruction(name, regex, replace)


def _regex_error(err: Exception) -> str:
    """The one line of polars' regex error that says what is wrong (it also draws the pattern)."""
    lines = [ln.strip() for ln in str(err).splitlines()]
    return next((ln.removeprefix("error: ") for ln in lines if ln.startswith("error:")), lines[0] if lines else "")


def masking_from_options(options: Mapping[str, Any], where: str = "manifest") -> Masking:
    """The masking recorded in a manifest's ``options`` (``mask`` and ``mask_instructions``); options
    written before the instructions were recorded name a built-in list only."""
    name = options.get("mask", "paper")
    instructions = options.get("mask_instructions")
    if instructions is None:
        return resolve_masking(name, f"{where}: option mask")
    if not isinstance(instructions, list):
        raise ConfigError(f"{where}: option mask_instructions is {instructions!r}, not a list of "
                          "{name, regex, replace}; rebuild the prepared folder")
    for builtin in BUILTIN_MASKINGS.values():
        if instructions == builtin.to_list():
            return Masking(str(name), builtin.instructions)
    return Masking(str(name), check_instructions(instructions, f"{where}: option mask_instructions"))


def masking_from_manifest(manifest: Mapping[str, Any], where: str = "manifest") -> Masking:
    """The masking a prepared folder was made with (``mask_series(texts, masking_from_manifest(m))``
    treats new text as that folder's)."""
    return masking_from_options(manifest.get("options") or {}, where)


# ---- applying it ------------------------------------------------------------------------------------
def _as_masking(spec: MaskSpec) -> Masking:
    """``spec`` as a Masking, without checking one given as such again (per batch)."""
    return spec if isinstance(spec, Masking) else resolve_masking(spec)


def _literal(replace: str) -> str:
    """``replace`` for polars' replace_all, where "$" starts a group reference: "$$" is a literal "$"."""
    return replace.replace("$", "$$")


def mask_text(text: str, masking: MaskSpec = "paper") -> str:
    """Mask one message; same output as :func:`mask_series` on that message (the ``paper`` list with
    Python ``re``, other lists through polars)."""
    m = _as_masking(masking)
    if m.is_paper:
        return _PY_MASK.sub(MASK_TOKEN, _PY_DOTS.sub(DOTS_REPLACEMENT, text))
    if not m.instructions:
        return text
    return mask_series([text], m).item()


def mask_expr(expr: pl.Expr, masking: MaskSpec = "paper") -> pl.Expr:
    """The masking as a polars expression over a string column: one ``replace_all`` per instruction."""
    for ins in _as_masking(masking).instructions:
        expr = expr.str.replace_all(ins.regex, _literal(ins.replace))
    return expr


def mask_series(contents: pl.Series | list[str], masking: MaskSpec = "paper") -> pl.Series:
    """Mask a batch of messages with polars' regex engine (nulls stay null)."""
    s = contents if isinstance(contents, pl.Series) else pl.Series("content", contents, dtype=pl.String)
    m = _as_masking(masking)
    if not m.instructions:
        return s
    return s.to_frame("c").select(mask_expr(pl.col("c"), m)).to_series().rename(s.name)


# ---- digit normalisation (the fast prepare path, paper list only) ----------------------------------
def digits_to_zero(text: str) -> str:
    """Replace each ASCII digit by ``0`` (``paper`` masking is invariant under this; see module docstring)."""
    return text.translate(_DIGITS_STR)


def digits_to_zero_array(arr: np.ndarray, block: int = 1 << 20, pool: Executor | None = None) -> bytes:
    """:func:`digits_to_zero` on raw bytes (a uint8 array; UTF-8 continuation bytes are never ASCII
    digits), as a new ``bytes``: ``bytes(arr).translate(DIGITS_TO_ZERO_BYTES)``, done by numpy (SIMD) in
    blocks of at most ``block`` bytes, two threads taking the blocks of a large array in turn (numpy
    releases the GIL). Small blocks keep the temporaries small: a fresh chunk-sized numpy array costs
    20-80 ms of page faults in a new process (numpy asks for huge pages above 4 MB), more than the
    arithmetic.

    numpy writes into a fresh, unfilled numpy buffer (its page faults happen in the two-threaded pass),
    which is then copied once into the ``bytes`` the callers hand to polars."""
    return digits_to_zero_and_count(arr, block, count=False, pool=pool)[2]


def digits_to_zero_and_count(arr: np.ndarray, block: int = 1 << 20, count: bool = True,
                             pool: Executor | None = None) -> tuple[int, int, bytes]:
    """``(number of "\\n" bytes, largest byte, digits_to_zero_array(arr))`` in one blockwise pass (each
    block is counted while it is in cache for the digit pass); with ``count=False`` the first two are 0."""
    n = len(arr)
    if n == 0:
        return 0, 0, b""
    buffer = np.empty(n, dtype=np.uint8)
    found = in_blocks(partial(_digits_to_zero_part, arr, buffer, block, count=count), n, block, pool=pool)
    return sum(k for k, _ in found), max(top for _, top in found), buffer.tobytes()


def _digits_to_zero_part(arr: np.ndarray, out: np.ndarray, block: int, blocks: Iterable[tuple[int, int]],
                         count: bool = False) -> tuple[int, int]:
    """The digit pass over the ``blocks`` (``(lo, hi)`` ranges of at most ``block`` bytes) of ``arr``;
    with ``count``, also ``(number of "\\n", largest byte)`` of those blocks."""
    d = np.empty(min(block, len(arr)), dtype=np.uint8)
    is_digit = np.empty(len(d), dtype=bool)
    lines, top = 0, 0
    for lo, hi in blocks:
        a = arr[lo:hi]
        k = hi - lo
        np.subtract(a, 48, out=d[:k])  # uint8 wraps around: only "0".."9" give 0..9
        np.less(d[:k], 10, out=is_digit[:k])
        np.multiply(d[:k], is_digit[:k], out=d[:k])  # a digit's distance from "0", else 0
        np.subtract(a, d[:k], out=out[lo:hi])
        if count:
            n, t = newlines_and_top(a, is_digit)
            lines, top = lines + n, max(top, t)
    return lines, top


def newlines_and_top(a: np.ndarray, scratch: np.ndarray) -> tuple[int, int]:
    """``(number of "\\n" bytes, largest byte)`` of a uint8 block; ``scratch`` is a bool array at least
    as long, reused between blocks (no fresh temporary per block)."""
    mask = scratch[: len(a)]
    np.equal(a, 10, out=mask)
    return int(np.count_nonzero(mask)), int(a.max())
