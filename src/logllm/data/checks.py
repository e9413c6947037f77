"""The counts `logllm prepare` keeps over a run's lines, and the check that stops a run whose input
is not the log it was told (another family or format, a binary file): :func:`check_input`."""

from __future__ import annotations

from dataclasses import dataclass, field

from logllm.data.formats import FAMILY_FIELD_PATTERNS, guess_families
from logllm.data.options import PrepareOptions
from logllm.errors import DataError


@dataclass
class Counts:
    """What `prepare` counted over the run's lines (for the manifest, the summary and the checks)."""

    lines: int = 0
    unparsed: int = 0
    skipped: int = 0
    truncated: int = 0
    bad_timestamps: int = 0
    unparsed_examples: list[str] = field(default_factory=list)
    truncated_examples: list[str] = field(default_factory=list)
    invalid_examples: list[str] = field(default_factory=list)
    #: lines that match a built-in family's format but not what its logs hold (another log?)
    unlike: int = 0
    unlike_examples: list[str] = field(default_factory=list)
    #: unparsed lines that are not blank; the first of them and the first "unlike" line (file:line,
    #: text), for error messages
    unparsed_text: int = 0
    first_unparsed: tuple[str, str] | None = None
    first_unlike: tuple[str, str] | None = None


def check_input(o: PrepareOptions, c: Counts, invalid: int, format_text: str) -> None:
    """Stop when more than ``max_unparsed`` of the lines are not valid UTF-8, or do not match the
    format or look like the family's logs: the input is then most likely another kind of file
    (binary, compressed other than gzip) or log (another family or format), and what would be
    written is noise (e.g. every window anomalous, from dates read as labels).

    ``c``: the run's counts, ``invalid``: its lines with invalid UTF-8, ``format_text``: its log format.
    Raises :class:`~logllm.errors.DataError` naming the first bad line and what to pass instead."""
    n, limit = c.lines, o.max_unparsed
    allow = (f"If such lines are expected, pass --on-unparsed keep (takes them as they are) or "
             f"--max-unparsed above {limit:g}")
    if invalid > limit * n:
        raise DataError(f"{invalid:,} of {n:,} lines ({invalid / n:.0%}) are not valid UTF-8 (first: "
                        f"{c.invalid_examples[0]}): is the input a binary file, compressed other than by "
                        "gzip, or text in another encoding? Pass the text log (convert another encoding "
                        f"with e.g. iconv -f latin1 -t utf-8). {allow}")
    blank = c.unparsed - c.unparsed_text  # blank lines say nothing about the format: not counted
    n -= blank
    bad = c.unparsed_text + c.unlike
    if bad <= limit * n:
        return
    example, text = (c.first_unparsed if c.unparsed_text >= c.unlike else c.first_unlike) or ("", "")
    what = f"do not match the format {format_text!r}"
    if c.unlike:  # a built-in family read with its own format
        fields = ", ".join(f"<{f}>" for f in FAMILY_FIELD_PATTERNS[o.family])
        parts = [f"{c.unparsed_text:,} do not match its format"] if c.unparsed_text else []
        parts.append(f"{c.unlike:,} match it but their {fields} are not as in {o.family} logs")
        what = f"are not {o.family} log lines ({', '.join(parts)})"
    guess = [f for f in guess_families(text) if f != o.family]
    cause = (f"It looks like a log of family {' / '.join(guess)}: run `logllm prepare {guess[0]}`" if guess
             else "Is it a log of another family, or in another format? Pass the right family or --format")
    raise DataError(f"{bad:,} of {n:,} {'non-blank ' if blank else ''}lines ({bad / n:.0%}) {what}; first: "
                    f"{example}: {text!r}. "
                    f"{cause}. {allow}")
