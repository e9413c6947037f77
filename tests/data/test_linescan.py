"""The C line scanner (``logllm.data._linescan``) against plain-Python definitions of what it computes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from logllm.data import linescan
from logllm.data.masking import DIGITS_TO_ZERO_BYTES
from logllm.data.readers import distinct_lines

pytestmark = pytest.mark.skipif(not linescan.available(), reason="the C line scanner is not built here")


def python_scan(data: bytes) -> tuple[int, bool, list[int], list[int], list[int], list[str]]:
    """What ``scan_lines`` returns, in plain Python: lines split at "\\n" (a last line without one
    counts), keyed by their digit-normalised text without one trailing "\\r"."""
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    starts, pos = [], 0
    for piece in pieces:
        starts.append(pos)
        pos += len(piece) + 1
    keys = [p.removesuffix(b"\r").translate(DIGITS_TO_ZERO_BYTES).decode() for p in pieces]
    table: dict[str, int] = {}
    codes = [table.setdefault(k, len(table)) for k in keys]
    first = [keys.index(k) for k in table]
    return len(pieces), data.isascii(), codes, starts, first, list(table)


def random_log(rng: np.random.Generator, n: int, distinct: int) -> bytes:
    words = ["open", "blk_-12", "0x1f", "10.0.0.1:50010", "é", "日本", "", "a\rb", "12345678901234567", "x" * 40]
    templates = [" ".join(rng.choice(words, size=int(rng.integers(0, 12)))) for _ in range(distinct)]
    lines = []
    for _ in range(n):
        text = templates[int(rng.integers(0, distinct))]
        # other digits, same digit-normalised text
        text = re.sub(r"\d", lambda m: str(int(rng.integers(0, 10))), text)
        lines.append(text + ("\r" if rng.random() < 0.1 else ""))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("simd", [True, False])  # the AVX2 loop (where the CPU has it) and the portable one
@pytest.mark.parametrize("hash_bits", [64, 3, 1])  # 3 and 1: nearly every line collides with others
@pytest.mark.parametrize("min_bytes", [1 << 40, 1])  # one pass, and two halves at once (merged)
def test_scan_lines_matches_python(hash_bits: int, simd: bool, min_bytes: int) -> None:
    rng = np.random.default_rng(0)
    cases = [
        random_log(rng, 3000, 40),
        random_log(rng, 6000, 2500),  # the hash table grows (1,024 slots at first)
        b"a 1\nb 22\r\n\n\r\n\n0\n9\n" + b"no final line end 7",
        b"\n",
        b"",
        b"x" * 10_000_000 + b" 12\n" + b"x" * 10_000_000 + b" 34\n",  # long lines: the scratch buffer grows
        b"".join(b"%s %d\n" % (b"y" * k, k) for k in range(80)),  # every length mod 32, the last bytes at the end
        b"z" * 31 + b"\r",  # a last line of 32 bytes without a line end
        "caf\u00e9 1\ncaf\u00e9 2\n\u0661\n".encode(),  # non-ASCII (an Arabic-Indic digit is not an ASCII digit)
    ]
    for data in cases:
        n, is_ascii, codes, starts, first, lines = python_scan(data)
        got_n, got_ascii, got = linescan.scan_lines(np.frombuffer(data, dtype=np.uint8), hash_bits, min_bytes, simd)
        assert (got_n, got_ascii) == (n, is_ascii)
        assert got is not None
        assert got.codes.tolist() == codes and got.starts.tolist() == starts
        assert got.first.tolist() == first and got.lines.to_list() == lines


def test_scan_lines_matches_the_numpy_path_on_hdfs_sample(shared_data) -> None:  # type: ignore[no-untyped-def]
    data = (shared_data / "HDFS_2pct" / "HDFS_2pct.log").read_bytes()
    n, is_ascii, got = linescan.scan_lines(data)
    assert (n, is_ascii) == (222_579, True) and got is not None
    codes, lines, first = distinct_lines(data.translate(DIGITS_TO_ZERO_BYTES), n)
    assert len(got.lines) == 1737
    assert (got.codes == codes).all() and got.lines.to_list() == lines.to_list() and (got.first == first).all()
    assert (got.starts[1:] == np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)[:-1] + 1).all()


def test_scan_lines_invalid_utf8_gives_no_distinct_lines() -> None:
    n, is_ascii, got = linescan.scan_lines(b"ok 1\ncaf\xe9 2\n")
    assert (n, is_ascii, got) == (2, False, None)


def _block_key_args(lines: list[str]) -> tuple:
    """The arguments of ``block_keys`` for raw lines that are their own distinct lines (code i = line
    i), the matches found with Python's regex."""
    data = ("\n".join(lines) + "\n").encode()
    starts = np.cumsum([0] + [len(s.encode()) + 1 for s in lines[:-1]])
    matches = [list(re.finditer(rb"blk_(-?)(\d+)", s.encode())) for s in lines]
    ptr = np.cumsum([0] + [len(m) for m in matches])
    flat = [m for ms in matches for m in ms]
    digit_at = np.array([m.start(2) for m in flat], dtype=np.int32)
    digits = np.array([m.end(2) - m.start(2) for m in flat], dtype=np.int32)
    negative = np.array([m.group(1) == b"-" for m in flat], dtype=np.uint8)
    return data, starts, np.arange(len(lines), dtype=np.int32), ptr, digit_at, digits, negative


def test_block_keys_match_python_int() -> None:
    rng = np.random.default_rng(1)
    ids = [str(int(rng.integers(10 ** (d - 1) if d > 1 else 0, 10**d if d < 19 else 2**63 - 1, dtype=np.int64)))
           for d in rng.integers(1, 20, size=3000)]
    ids = [("-" if rng.random() < 0.5 and s != "0" else "") + s for s in ids]
    lines = [f"x {i} blk_{a} y blk_{b} blk_{a}" for i, (a, b) in enumerate(zip(ids[::2], ids[1::2]))]
    lines += ["no block here", "blk_9223372036854775807 blk_-9223372036854775807"]
    got = linescan.block_keys(*_block_key_args(lines))
    assert got is not None
    expected = [(i, k) for i, s in enumerate(lines)
                for k in dict.fromkeys(int(m) for m in re.findall(r"blk_(-?\d+)", s))]  # a repeat once
    assert list(zip(got[0].tolist(), got[1].tolist())) == expected


@pytest.mark.parametrize("bad", ["blk_007", "blk_-0", "blk_9223372036854775808", "blk_99999999999999999999"])
def test_block_keys_refuse_ids_that_are_not_an_int64_spelling(bad: str) -> None:
    assert linescan.block_keys(*_block_key_args(["blk_1 ok", f"then {bad}"])) is None


def test_block_keys_check_their_indices() -> None:
    data, starts, codes, ptr, digit_at, digits, negative = _block_key_args(["a blk_12", "b blk_34"])
    with pytest.raises(ValueError, match="outside the data"):
        linescan.block_keys(data, starts + 100, codes, ptr, digit_at, digits, negative)
    with pytest.raises(ValueError, match="outside the data"):
        linescan.block_keys(data, starts, codes + 5, ptr, digit_at, digits, negative)
    with pytest.raises(ValueError, match="differ in length"):
        linescan.block_keys(data, starts[:1], codes, ptr, digit_at, digits, negative)


def test_block_keys_at_the_start_of_a_mapped_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An id whose digits begin 4 bytes into the data (a file starting "blk_"): the 8-digit words are
    read only inside the data (a read before a memory map's first page would crash), for every length."""
    import mmap

    for nd in range(1, 20):
        value = int("9" + "87654321" * 3) % 10**nd if nd > 1 else 7
        value = max(value, 10 ** (nd - 1))  # nd digits, no leading zero
        path = tmp_path / f"ids{nd}.log"
        path.write_bytes(f"blk_{value} x\n".encode())
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            view = np.frombuffer(m, dtype=np.uint8)
            args = _block_key_args([f"blk_{value} x"])
            got = linescan.block_keys(view, *args[1:])
            assert got is not None and got[1].tolist() == [value], nd
            del view, got
