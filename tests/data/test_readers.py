"""Reading: plain and gzip, several files in order, line ranges, chunk edges, invalid UTF-8, long lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from logllm.data.readers import LineReader, lines_series
from logllm.errors import DataError


def _read(paths: list[Path], **kw: object) -> tuple[list[tuple[int, int, str]], LineReader]:
    reader = LineReader([str(p) for p in paths], **kw)  # type: ignore[arg-type]
    out = []
    for chunk in reader:
        for i, text in enumerate(lines_series(chunk.data, chunk.n_lines).to_list()):
            out.append((chunk.file_index, chunk.first_line + i, text))
    return out, reader


def test_plain_gzip_order_and_line_numbers(tmp_path: Path) -> None:
    a = tmp_path / "a.log"
    a.write_text("a1\na2\n\na4")  # empty line kept, last line without newline
    b = tmp_path / "b.log.gz"
    with gzip.open(b, "wb") as f:
        f.write(b"b1\r\nb2 \"quoted, text\"\n")
    lines, reader = _read([a, b])
    assert lines == [(0, 1, "a1"), (0, 2, "a2"), (0, 3, ""), (0, 4, "a4"), (1, 1, "b1"), (1, 2, 'b2 "quoted, text"')]
    assert [i.lines for i in reader.inputs] == [4, 2]
    assert all(len(i.sha256) == 64 for i in reader.inputs)
    assert reader.inputs[1].bytes == b.stat().st_size  # the size on disk (compressed)


def test_small_chunks_give_the_same_lines(tmp_path: Path) -> None:
    p = tmp_path / "x.log"
    p.write_text("".join(f"line {i} " + "x" * (i % 37) + "\n" for i in range(500)))
    big, _ = _read([p])
    small, _ = _read([p], chunk_bytes=64)
    assert small == big and len(big) == 500


def test_line_range_over_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_text("".join(f"a{i}\n" for i in range(1, 6)))
    b.write_text("".join(f"b{i}\n" for i in range(1, 6)))
    lines, reader = _read([a, b], start_line=4, end_line=7, chunk_bytes=8)
    assert [t for _, _, t in lines] == ["a4", "a5", "b1", "b2"]
    assert [(f, n) for f, n, _ in lines] == [(0, 4), (0, 5), (1, 1), (1, 2)]
    assert reader.lines_in_range == 4 and reader.inputs[1].lines == 5  # the rest is still hashed


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    p = tmp_path / "latin1.log"
    p.write_bytes(b"ok\n" + "caf\xe9 au lait\n".encode("latin-1") + "naïve\n".encode())
    lines, reader = _read([p])
    assert [t for _, _, t in lines] == ["ok", "caf\ufffd au lait", "naïve"]
    assert reader.invalid_utf8 == 1


def test_ten_megabyte_line(tmp_path: Path) -> None:
    p = tmp_path / "long.log"
    long = "word 123 " * (10_000_000 // 9)
    p.write_text("short\n" + long + "\nafter\n")
    lines, _ = _read([p], chunk_bytes=1 << 20)
    assert [len(t) for _, _, t in lines] == [5, len(long), 5]


def test_missing_empty_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.log: file not found"):
        LineReader([str(tmp_path / "nope.log")])
    (tmp_path / "empty.log").write_text("")
    with pytest.raises(DataError, match="empty.log: file is empty"):
        LineReader([str(tmp_path / "empty.log")])
    data = gzip.compress(b"x\n" * 10000)
    (tmp_path / "cut.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.gz: cannot read"):
        _read([tmp_path / "cut.gz"])


def test_distinct_lines_restores_log_order() -> None:
    from logllm.data.readers import distinct_lines

    data = b"".join(f"line {i % 7}\n".encode() for i in range(200)) + b'a\rb\n\n"q""x,\ny\r\r\nline 3\n'
    n = data.count(b"\n")
    codes, distinct, first = distinct_lines(data, n)
    lines = lines_series(data, n).to_list()
    assert [distinct[int(c)] for c in codes] == lines
    assert distinct.to_list() == list(dict.fromkeys(lines))  # first-appearance order
    assert [lines.index(t) for t in distinct.to_list()] == first.tolist()


@pytest.mark.parametrize("kw", [{}, {"chunk_bytes": 7}, {"start_line": 3, "end_line": 8}])
def test_chunk_line_starts_point_at_each_line(tmp_path: Path, kw: dict) -> None:
    """``LineChunk.line_starts()`` (from the newline offsets the reader keeps, also after a line range
    cut or a UTF-8 repair) gives the first byte of every line of ``data``."""
    import numpy as np

    from logllm.data.readers import newline_offsets

    log = tmp_path / "a.log"
    log.write_bytes(b"".join(b"line %d \xe9\n" % i if i == 5 else b"line %d\n" % i for i in range(1, 12)))
    seen = []
    for chunk in LineReader([str(log)], **kw):
        lines = chunk.data.split(b"\n")[:-1]
        assert chunk.line_starts().tolist() == np.cumsum([0] + [len(x) + 1 for x in lines[:-1]]).tolist()
        seen += [(chunk.first_line + i, chunk.data[s:].split(b"\n", 1)[0]) for i, s in enumerate(chunk.line_starts())]
    first, last = kw.get("start_line", 1), kw.get("end_line", 11)
    assert [n for n, _ in seen] == list(range(first, last + 1))
    assert all(text.startswith(b"line %d" % n) for n, text in seen)
    data = b"a\n" * 3000
    assert newline_offsets(data, block=1000).tolist() == [i for i, c in enumerate(data) if c == 10]


@pytest.mark.parametrize("min_bytes", [1, 1 << 40])  # split over threads, and not
def test_threaded_byte_passes_match_plain_python(monkeypatch: pytest.MonkeyPatch, min_bytes: int) -> None:
    import numpy as np

    from logllm.data import threads
    from logllm.data.masking import DIGITS_TO_ZERO_BYTES, digits_to_zero_array
    from logllm.data.readers import count_lines, count_lines_and_zero_digits

    monkeypatch.setattr(threads, "MIN_PARALLEL_BYTES", min_bytes)
    rng = np.random.default_rng(0)
    for size in (0, 1, 7, 1001, 65_537):
        raw = rng.choice(np.frombuffer(b"0123456789\nab \xc3\xa9", dtype=np.uint8), size=size)
        data = raw.tobytes()
        # Blocks smaller than a part, so blocks and parts both have ragged ends.
        out, expected = digits_to_zero_array(raw, block=1000), data.translate(DIGITS_TO_ZERO_BYTES)
        # a bytes object filled in place: equal, hashed and sliced like one built from scratch
        assert type(out) is bytes and out == expected and hash(out) == hash(expected)
        assert out[size // 2:] == expected[size // 2:] and {out: 1}[expected] == 1
        assert count_lines(raw, block=1000) == (data.count(b"\n"), data.isascii())
        zeroed = count_lines_and_zero_digits(raw, block=1000)
        assert zeroed == (data.count(b"\n"), data.isascii(), data.translate(DIGITS_TO_ZERO_BYTES))
        assert type(zeroed[2]) is bytes
    seen: list[tuple[int, int]] = []
    results = threads.in_parts(lambda lo, hi: seen.append((lo, hi)) or (lo, hi), 10, min_bytes=min_bytes)
    assert results == sorted(seen)  # in part order, whichever thread finished first
    assert results[0][0] == 0 and results[-1][1] == 10 and all(a[1] == b[0] for a, b in zip(results, results[1:]))
