"""Masking: METHOD.md section 2 examples, and the polars and Python implementations agree."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from logllm.data import masking
from logllm.data.masking import (
    DOTS_PATTERN,
    NONE,
    PAPER,
    POLARS_PATTERN,
    digits_to_zero,
    digits_to_zero_array,
    mask_series,
    mask_text,
)

EXAMPLES = [
    ("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
     "Receiving block <*> src: <*> dest: <*>"),
    ("BLOCK* NameSystem.allocateBlock: /user/root/rand/_temporary/_task_200811092030_0001_m_000081_0/"
     "part-00081. blk_4394112519745907149", "BLOCK* NameSystem.allocateBlock: <*> <*>"),
    ("CE sym 2, at 0x0b85eee0, mask 0x05", "CE sym <*>, at <*>, mask <*>"),
    ("session opened for user root by (uid=0)", "session opened for user root by (uid=<*>)"),
    ("Failed password for invalid user admin from 218.65.30.4 port 1234 ssh2 on Mon Jun 3 12:00",
     "Failed password for invalid user admin from <*> port <*> <*> on <*> <*><*>"),
    ("Tue Nov 15 aadmin1 is true and untrue... done", "<*> <*><*> is <*> and un<*>..  done"),
    ("MAC 00:1A:2B:3C:4D:5E link up on eth0", "MAC <*> link up on <*>"),
    ("job 72510.ladmin2 task one of twenty at dn30@tbird-admin1", "job <*> task <*> of <*> at <*>"),
    ("ERROR 0xdeadbeef at 1a2b3c4d5e", "ERROR <*> at <*>"),
]

# Each class on its own, including cases where an earlier class must win.
CLASS_CASES = [
    ("it is False", "it is <*>"),
    ("sixteen items", "<*> items"),
    ("someone said", "someone said"),  # number words only as whole words
    ("on Thursday we", "on <*> we"),
    ("Sunday", "<*>"),
    ("since December 25 at", "since <*>at"),
    ("Mayday", "Mayday"),  # a month needs whitespace and a day after it
    ("peer 192.168.0.1 up", "peer <*> up"),
    ("mac 00:11:22:33:44:55:66:77:88:99:aa:bb x", "mac <*> x"),
    ("open C:\\Windows\\system32 now", "open <*> now"),
    ("read ./conf/app.yaml", "read <*>"),
    ("id deadbeef and cafebabe12", "id <*> and <*>"),
    ("mail root@localhost", "mail <*>"),
    ("no variables here", "no variables here"),
    ("a.. b.... c", "a.. b..  c"),
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), EXAMPLES + CLASS_CASES)
def test_examples_python_and_polars(text: str, expected: str) -> None:
    assert mask_text(text) == expected
    assert mask_series([text]).to_list() == [expected]


def test_mask_none_is_identity() -> None:
    text = "job 72510 failed"
    assert mask_text(text, "none") == text
    assert mask_series([text], "none").to_list() == [text]


def test_paper_and_none_are_lists_of_named_instructions() -> None:
    assert [(i.name, i.regex, i.replace) for i in PAPER.instructions] == [
        ("dots", DOTS_PATTERN, ".. "), ("variables", POLARS_PATTERN, "<*>")]
    assert NONE.instructions == () and NONE.to_list() == []
    texts = [t for t, _ in EXAMPLES + CLASS_CASES]
    assert mask_series(texts, PAPER).to_list() == mask_series(texts, "paper").to_list() == [e for _, e in EXAMPLES + CLASS_CASES]
    assert [mask_text(t, NONE) for t in texts] == mask_series(texts, NONE).to_list() == texts


def test_digit_pass_writes_no_immutable_object() -> None:
    """The digit pass fills a numpy buffer it owns (no ctypes write into a ``bytes``)."""
    import ast

    tree = ast.parse(Path(masking.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "ctypes" not in imported
    raw = bytes(range(256)) * 50 + b"12 345\n"
    out = digits_to_zero_array(np.frombuffer(raw, dtype=np.uint8), block=1000)
    assert isinstance(out, bytes) and out == raw.translate(masking.DIGITS_TO_ZERO_BYTES)


def test_nulls_stay_null() -> None:
    assert mask_series(pl.Series([None, "x 1"], dtype=pl.String)).to_list() == [None, "x <*>"]


def _sample_texts(shared: Path) -> list[str]:
    texts: list[str] = []
    with open(shared / "HDFS_2pct" / "HDFS_2pct.log", encoding="utf-8") as f:
        texts += [next(f).rstrip("\n") for _ in range(5000)]
    for path in [shared / "BGL_2k" / "BGL_2k.log", *sorted((shared / "Thunderbird").glob("*.log")),
                 *sorted((shared / "loghub_2k").glob("*.log"))]:
        texts += path.read_text(encoding="utf-8", errors="replace").splitlines()[:3000]
    return texts


@pytest.mark.integration
def test_polars_and_python_agree_on_sample_data(shared_data: Path) -> None:
    texts = _sample_texts(shared_data)
    assert len(texts) > 30_000
    assert mask_series(texts).to_list() == [mask_text(t) for t in texts]


def test_polars_and_python_agree_on_random_text() -> None:
    rng = random.Random(0)
    alphabet = "ab01:./\\-_@ xX9eEfF[]()=,\tTrueMonJan…é٣"
    words = ["true", "False", "one", "twenty", "Mon", "Sunday", "Nov", "12", "1.2.3.4", "10.0.0.1:80",
             "00:1a:2b:3c:4d:5e", "/usr/bin", "deadbeef", "a@b-c", "...", "x9", "é1", "٣"]
    texts = []
    for _ in range(3000):
        parts = [rng.choice(words) if rng.random() < 0.5 else
                 "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(0, 8))]
        texts.append(rng.choice([" ", "", "  ", "\t"]).join(parts))
    assert mask_series(texts).to_list() == [mask_text(t) for t in texts]


def test_digit_normalisation_does_not_change_masking() -> None:
    rng = random.Random(1)
    texts = [t for t, _ in EXAMPLES + CLASS_CASES]
    for _ in range(2000):
        texts.append("".join(rng.choice("0123456789abcdefABCDEF.:-_/ @xyz") for _ in range(rng.randint(0, 30))))
    for t in texts:
        assert mask_text(digits_to_zero(t)) == mask_text(t), t
        # No ASCII digit survives masking (the property the shortcut relies on).
        assert not any(ch in "0123456789" for ch in mask_text(t)), t
