"""The paper preset's real code path on a GPU: 4-bit NF4 loading and one LoRA step (tiny models)."""

from __future__ import annotations

import pytest
import torch

from logllm.model import LogLLM, LoraSpec, ModelConfig

from .conftest import MESSAGES

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_4bit_load_and_one_lora_step(tiny_models, tmp_path) -> None:
    pytest.importorskip("bitsandbytes")
    config = ModelConfig(encoder=str(tiny_models.encoder), decoder=str(tiny_models.llama), quantize_4bit=True,
                         dtype="bfloat16", device="cuda",
                         decoder_lora=LoraSpec(r=8, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"]),
                         encoder_lora=LoraSpec(r=4, alpha=32, dropout=0.01, target_modules=["query", "value"]))
    model = LogLLM.build(config, seed=0)
    linear_types = {type(m).__name__ for m in model.decoder.modules()}
    assert "Linear4bit" in linear_types
    parts = model.parts()
    assert all("lora_" in n for n, p in model.decoder.named_parameters() if p.requires_grad)
    before = {id(p): p.detach().clone() for ps in parts.values() for p in ps}
    frozen = {n: p.detach().clone() for n, p in model.decoder.named_parameters() if not p.requires_grad}
    model.train()
    opt = torch.optim.AdamW([p for ps in parts.values() for p in ps], lr=1e-3)
    loss = model.loss(MESSAGES, [[0, 1, 2], [3, 4]], [0, 1])
    loss.backward()
    opt.step()
    changed = [not torch.equal(before[id(p)], p.detach()) for ps in parts.values() for p in ps]
    assert any(changed)
    assert all(torch.equal(frozen[n], p.detach()) for n, p in model.decoder.named_parameters() if n in frozen)
    scores = model.score(MESSAGES, [[0, 1, 2], [3, 4]])
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "decoder" / "adapter" / "adapter_model.safetensors").is_file()
    again = LogLLM.from_pretrained(tmp_path / "m")
    assert abs(again.score(MESSAGES, [[0, 1, 2], [3, 4]]) - scores).max() < 1e-2
