"""Masking as a list of named instructions: a user's TOML file, its checks, and its record in the manifest."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from logllm.cli import main
from logllm.data.dataset import PreparedData
from logllm.data.masking import (
    PAPER,
    Masking,
    MaskInstruction,
    load_masking,
    mask_series,
    mask_text,
    masking_from_manifest,
    resolve_masking,
)
from logllm.data.options import PrepareOptions
from logllm.data.prepare import prepare
from logllm.errors import ConfigError

RULES = """
# node names first, then numbers: order matters
[[mask]]
name = "node"
regex = 'dn[0-9]+'
replace = "<NODE>"

[[mask]]
name = "number"
regex = '[0-9]+'
replace = "<NUM>"
"""


def write(tmp: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def write_log(tmp: Path, n: int = 300) -> Path:
    """A Thunderbird-like log; line i is an alert when i % 97 == 5."""
    lines = [f"{'VAPI' if i % 97 == 5 else '-'} {1131568278 + i} 2005.11.09 dn{i % 7} Nov 9 12:00:{i % 60:02d} "
             f"dn{i % 7}/dn{i % 7} kernel: event {i % 3} on dn{i % 7} took {i * 3} ms" for i in range(n)]
    path = tmp / "tb.log"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_toml_list_runs_in_order(tmp_path: Path) -> None:
    masking = load_masking(write(tmp_path, RULES))
    assert masking.name == "rules.toml"
    assert [i.name for i in masking.instructions] == ["node", "number"]
    text = "event 2 on dn30 took 12 ms"
    assert mask_text(text, masking) == "event <NUM> on <NODE> took <NUM> ms"
    assert mask_series([text, None], masking).to_list() == ["event <NUM> on <NODE> took <NUM> ms", None]
    # The other order gives another result: each instruction runs over the output of the one before.
    swapped = Masking("swapped", masking.instructions[::-1])
    assert mask_text(text, swapped) == "event <NUM> on dn<NUM> took <NUM> ms"


def test_use_builtin_and_literal_replacement(tmp_path: Path) -> None:
    path = write(tmp_path, """
[[mask]]
name = "user"
regex = 'user=[a-z]+'
replace = "user=<USER>"

[[mask]]
use = "paper"
""")
    masking = load_masking(path)
    assert masking.instructions[1:] == PAPER.instructions and not masking.is_paper
    assert mask_text("user=root from 10.0.0.1 at 12:00", masking) == "user=<USER> from <*> at <*>"
    # replacements are literal text: no group references
    literal = Masking("literal", (MaskInstruction("user", "user=([a-z]+)", "user=$1${1}$$ \\1"),))
    assert mask_text("user=root now", literal) == "user=$1${1}$$ \\1 now"
    # a list equal to paper is paper, whatever its name (the fast prepare path keys on the instructions)
    assert Masking("mine", PAPER.instructions).is_paper and resolve_masking("paper") is PAPER


@pytest.mark.parametrize(("text", "message"), [
    ("[[mask]]\nname = 'ip'\nregex = '('\nreplace = '<*>'\n",
     r"rules.toml: entry 1 \('ip'\): regex '\(' is not valid: unclosed group"),
    ("[[mask]]\nname = 'a'\nregex = 'a'\nreplace = ''\n[[mask]]\nname = 'lb'\nregex = '(?<=x)y'\nreplace = ''\n",
     r"rules.toml: entry 2 \('lb'\): regex '\(\?<=x\)y' is not valid: look-around"),
    ("[[mask]]\nname = 'star'\nregex = 'x*'\nreplace = '<*>'\n", r"entry 1 \('star'\): regex 'x\*' matches the empty string"),
    ("[[mask]]\nname = 'b'\nregex = '\\b'\nreplace = '|'\n", r"entry 1 \('b'\): .* matches the empty string"),
    ("[[mask]]\nname = 'ip'\nregex = 'a'\n", r"entry 1: missing replace"),
    ("[[mask]]\nname = 'ip'\nregex = 'a'\nreplace = 'b'\nwith = 'c'\n", r"entry 1: unknown key\(s\) with"),
    ("[[mask]]\nname = 'ip'\nregex = 5\nreplace = 'b'\n", r"entry 1: regex = 5: must be a string"),
    ("[[mask]]\nname = ' '\nregex = 'a'\nreplace = 'b'\n", r"entry 1 \(' '\): empty name"),
    ("[[mask]]\nname = 'a'\nregex = 'a'\nreplace = 'b'\n[[mask]]\nname = 'a'\nregex = 'b'\nreplace = 'c'\n",
     r"two instructions are named 'a'"),
    ("[[mask]]\nuse = 'drain'\n", r"entry 1: use = 'drain' is not a built-in masking"),
    ("[[mask]]\nname = 'a'\nregex = 'a'\nreplace = 'b'\n[other]\nx = 1\n", r"unknown top-level key\(s\) other"),
    ("mask = 'paper'\n", r"no \[\[mask\]\] entries"),
    ("[[mask]\n", r"rules.toml: not valid TOML: .*line 1"),
])
def test_bad_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_masking(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_unknown_name_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--mask 'papr' is neither a built-in masking nor a TOML file"):
        PrepareOptions(family="bgl", inputs=("x.log",), mask="papr").resolved()
    with pytest.raises(ConfigError, match=r"--mask .*nope.toml: no such file"):
        resolve_masking(str(tmp_path / "nope.toml"))
    bad = Masking("code", (MaskInstruction("x", "(", ""),))
    with pytest.raises(ConfigError, match=r"--mask code: entry 1 \('x'\): regex '\(' is not valid"):
        PrepareOptions(family="bgl", inputs=("x.log",), mask=bad).resolved()


def test_options_record_the_list_and_round_trip(tmp_path: Path) -> None:
    rules = write(tmp_path, RULES)
    o = PrepareOptions(family="bgl", inputs=("x.log",), mask=str(rules)).resolved()
    d = o.to_dict()
    assert d["mask"] == "rules.toml"
    assert d["mask_instructions"] == [{"name": "node", "regex": "dn[0-9]+", "replace": "<NODE>"},
                                      {"name": "number", "regex": "[0-9]+", "replace": "<NUM>"}]
    rules.unlink()  # the recorded list is enough: the file is not read again
    back = PrepareOptions.from_dict(json.loads(json.dumps(d)))
    assert back.resolved().to_dict() == d and back.mask == o.mask
    paper = PrepareOptions(family="bgl", inputs=("x.log",)).resolved().to_dict()
    assert paper["mask"] == "paper" and paper["mask_instructions"] == PAPER.to_list()
    # options written before the list was recorded name a built-in list
    old = {k: v for k, v in paper.items() if k != "mask_instructions"}
    assert PrepareOptions.from_dict(old).resolved().mask == PAPER
    assert PrepareOptions.from_dict({**old, "mask": "none"}).resolved().to_dict()["mask_instructions"] == []
    # detection may switch a recorded custom list to a built-in one by name
    assert replace(back, mask="paper").resolved().mask == PAPER
    broken = {**d, "mask_instructions": [{"name": "x", "regex": "(", "replace": ""}]}
    with pytest.raises(ConfigError, match=r"manifest: option mask_instructions: entry 1 \('x'\): regex"):
        PrepareOptions.from_dict(broken)


def test_prepare_applies_and_records_a_custom_list(tmp_path: Path, scanner: str) -> None:
    log, rules = write_log(tmp_path), write(tmp_path, RULES)
    result = prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=50, mask=str(rules)),
                     tmp_path / "p")
    assert set(PreparedData(tmp_path / "p").messages) == {"kernel: event <NUM> on <NODE> took <NUM> ms"}
    masking = masking_from_manifest(result.manifest)
    assert masking.name == "rules.toml" and [i.name for i in masking.instructions] == ["node", "number"]
    # New lines through the recorded list (what detect does) are masked the same way, file or not.
    rules.unlink()
    recorded = PrepareOptions.from_dict(result.manifest["options"]).resolved().mask
    assert recorded == masking
    assert mask_series(["kernel: event 2 on dn5 took 7 ms"], recorded).to_list() == [
        "kernel: event <NUM> on <NODE> took <NUM> ms"]


def test_custom_list_keeps_digits_it_does_not_mask(tmp_path: Path, scanner: str) -> None:
    log = write_log(tmp_path)
    rules = write(tmp_path, "[[mask]]\nname = 'took'\nregex = 'took [0-9]+ ms'\nreplace = 'took <*> ms'\n")
    prepare(PrepareOptions(family="thunderbird", inputs=(str(log),), window=50, mask=str(rules)), tmp_path / "p")
    texts = set(PreparedData(tmp_path / "p").messages)
    assert "kernel: event 1 on dn3 took <*> ms" in texts and len(texts) == 21  # 7 nodes x 3 events


def test_cli_mask_file_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log, rules = write_log(tmp_path), write(tmp_path, RULES)
    rc = main(["-q", "prepare", "thunderbird", "--log", str(log), "--window", "50", "--mask", str(rules),
               "--out", str(tmp_path / "p"), "--no-progress"])
    assert rc == 0 and "mask: rules.toml" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    assert [i["name"] for i in manifest["options"]["mask_instructions"]] == ["node", "number"]
    bad = write(tmp_path, "[[mask]]\nname = 'ip'\nregex = '[0-9'\nreplace = '<*>'\n", "bad.toml")
    rc = main(["prepare", "thunderbird", "--log", str(log), "--mask", str(bad), "--out", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and not (tmp_path / "q").exists()
    assert f"--mask {bad}: entry 1 ('ip'): regex '[0-9' is not valid" in err
