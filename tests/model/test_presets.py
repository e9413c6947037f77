"""Model configs and presets: round trips, clear errors, the paper's QLoRA objects (no download)."""

from __future__ import annotations

import builtins

import pytest
import torch

from logllm.errors import ConfigError
from logllm.model import PRESETS, LogLLM, LoraSpec, ModelConfig, preset
from logllm.model.build import check_4bit_available, lora_config, lora_targets, quantization_config


def test_config_round_trips_through_dict() -> None:
    for name in PRESETS:
        config = preset(name)
        again = ModelConfig.from_dict(config.to_dict())
        assert again == config
        assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize(("data", "needle"), [
    ({"encodr": "x"}, "encodr"),
    ({"decoder_layers": 0}, "decoder_layers"),
    ({"dtype": "float64"}, "float64"),
    ({"decoder_lora": {"r": 0}}, "decoder_lora.r"),
    ({"decoder_lora": {"rank": 4}}, "rank"),
    ({"decoder_width": 250, "decoder_heads": 4}, "divisible"),
])
def test_bad_config_values_name_the_option(data, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        ModelConfig.from_dict(data)


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="small"):
        preset("huge")


def test_paper_preset_is_the_papers_setting() -> None:
    paper = PRESETS["paper"]
    assert paper.encoder == "google-bert/bert-base-uncased"
    assert paper.decoder == "meta-llama/Meta-Llama-3-8B"
    assert paper.quantize_4bit and paper.dtype == "bfloat16"
    assert paper.decoder_lora == LoraSpec(r=8, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"])
    assert paper.encoder_lora == LoraSpec(r=4, alpha=32, dropout=0.01, target_modules=["query", "value"])
    small = PRESETS["small"]
    assert small.encoder == "minilm" and not small.quantize_4bit and small.device == "auto"
    assert small.decoder == "smollm2-135m" and small.decoder_lora == LoraSpec(r=8, alpha=16, dropout=0.1)


def test_small_stages_follow_the_papers_structure_with_caps() -> None:
    from logllm.config import paper_stages, preset

    small, paper = preset("small"), paper_stages()
    assert [(s.name, s.trainable, s.lr) for s in small.stages] == [(s.name, s.trainable, s.lr) for s in paper]
    assert [s.epochs for s in small.stages] == [1, 1, 1, 3] and [s.epochs for s in paper] == [1, 1, 1, 2]
    assert [s.max_samples for s in small.stages] == [500, 500, 500, 1250]
    assert small.effective_batch == 16 and small.distinct_samples and small.distinct_weight == "one"
    assert not preset("paper").distinct_samples
    assert small.autocast == "auto" and preset("paper").autocast is None


def test_paper_quantisation_and_lora_objects() -> None:
    bnb = quantization_config()
    assert bnb.load_in_4bit and not bnb.load_in_8bit
    assert bnb.bnb_4bit_quant_type == "nf4"
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    paper = PRESETS["paper"]
    dec = lora_config(paper.decoder_lora, None, "CAUSAL_LM")
    assert (dec.r, dec.lora_alpha, dec.lora_dropout) == (8, 16, 0.1)
    assert set(dec.target_modules) == {"q_proj", "v_proj"} and dec.task_type == "CAUSAL_LM"
    enc = lora_config(paper.encoder_lora, None, "FEATURE_EXTRACTION")
    assert (enc.r, enc.lora_alpha, enc.lora_dropout) == (4, 32, 0.01)
    assert set(enc.target_modules) == {"query", "value"}


def test_4bit_without_cuda_is_a_clear_config_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA GPU.*--preset small"):
        check_4bit_available()
    # Building the paper preset stops before any download.
    with pytest.raises(ConfigError, match="CUDA GPU"):
        LogLLM.build(PRESETS["paper"])
    with pytest.raises(ConfigError, match="CUDA GPU"):
        LogLLM.build(PRESETS["paper"].replace(device="auto"))


def test_4bit_without_bitsandbytes_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    real_import = builtins.__import__

    def no_bnb(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError("No module named 'bitsandbytes'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bnb)
    with pytest.raises(ConfigError, match=r"logllm\[gpu\]"):
        check_4bit_available()


def test_4bit_needs_lora_on_both_parts() -> None:
    with pytest.raises(ConfigError, match="decoder_lora and encoder_lora"):
        LogLLM.build(PRESETS["paper"].replace(encoder_lora=None))


def test_tiny_llama_refuses_lora(tiny_config) -> None:
    with pytest.raises(ConfigError, match="tiny-llama"):
        LogLLM.build(tiny_config.replace(decoder_lora=LoraSpec()))


def test_lora_targets_are_found_per_architecture(tiny_models) -> None:
    from transformers import AutoModel, AutoModelForCausalLM

    assert lora_targets(AutoModelForCausalLM.from_pretrained(str(tiny_models.llama))) == ["q_proj", "v_proj"]
    assert lora_targets(AutoModel.from_pretrained(str(tiny_models.encoder))) == ["query", "value"]
    assert lora_targets(AutoModelForCausalLM.from_pretrained(str(tiny_models.gpt2))) == ["c_attn"]
    with pytest.raises(ConfigError, match="target_modules"):
        lora_targets(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_missing_model_is_a_config_error(tmp_path) -> None:
    config = ModelConfig(encoder=str(tmp_path / "nowhere"), device="cpu")
    with pytest.raises(ConfigError, match="nowhere"):
        LogLLM.build(config)


def test_decoder_variant_files_resolve() -> None:
    """The config files behind docs/model.md's decoder table stay valid configs of the small preset."""
    from pathlib import Path

    from logllm.config import resolve_config

    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "decoder_variants"
    files = sorted(folder.glob("*.toml"))
    assert len(files) >= 7
    configs = {f.stem: resolve_config(None, f) for f in files}
    assert all(c.preset == "small" for c in configs.values())
    one = configs["lora_distinct_one"]
    assert one.distinct_samples and one.distinct_weight == "one"
    assert (one.stages[-1].name, one.stages[-1].epochs, one.stages[-1].max_samples) == ("3", 3, None)
