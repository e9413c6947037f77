"""The LogLLM module on tiny random models: prompt, loss masking, padding invariance, cache, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logllm.model import LogLLM, LoraSpec, ModelConfig
from logllm.model.prompt import ANSWERS

from .conftest import MESSAGES

SEQS = [[0, 1, 2], [0, 1, 3, 1, 2], [4, 4, 4, 4, 4, 4, 4, 4, 1], [0, 2], [3], [5, 0, 5, 1, 2, 2, 2, 2, 2, 2, 2]]


def _configs(tiny_models) -> dict[str, ModelConfig]:
    base = dict(encoder=str(tiny_models.encoder), device="cpu", decoder_width=32, decoder_heads=2)
    return {
        "tiny-llama": ModelConfig(decoder="tiny-llama", **base),
        "bert-causal": ModelConfig(decoder=str(tiny_models.encoder), **base),
        "llama-lora": ModelConfig(decoder=str(tiny_models.llama), decoder_lora=LoraSpec(r=4, alpha=8, dropout=0.0),
                                  encoder_lora=LoraSpec(r=2, alpha=4, dropout=0.0), **base),
        "gpt2": ModelConfig(decoder=str(tiny_models.gpt2), **base),
        # LoRA on a BERT decoder whose LM-head transform is not in the checkpoint (as MiniLM's).
        "bert-causal-lora": ModelConfig(decoder=str(tiny_models.encoder), decoder_lora=LoraSpec(r=4, alpha=8), **base),
    }


@pytest.fixture(params=["tiny-llama", "bert-causal", "llama-lora", "gpt2", "bert-causal-lora"])
def model(request, tiny_models) -> LogLLM:
    return LogLLM.build(_configs(tiny_models)[request.param], seed=0)


def test_prompt_label_position_is_first_difference(model: LogLLM) -> None:
    p = model.prompt
    normal, anomalous = p.answers[0], p.answers[1]
    assert normal[: p.label_offset] == anomalous[: p.label_offset]
    assert p.label_tokens == (normal[p.label_offset], anomalous[p.label_offset])
    assert p.label_tokens[0] != p.label_tokens[1]
    decoded = model.decoder_tokenizer.decode(list(anomalous), skip_special_tokens=True)
    assert decoded.replace(" ", "").lower().startswith(ANSWERS[1].replace(" ", "").lower().rstrip("."))


def test_score_does_not_depend_on_padding_or_batch(model: LogLLM) -> None:
    alone = np.array([model.score(MESSAGES, [s])[0] for s in SEQS])
    together = model.score(MESSAGES, SEQS, batch_size=64)
    pairs = model.score(MESSAGES, SEQS, batch_size=2)
    assert np.abs(alone - together).max() < 1e-5
    assert np.abs(alone - pairs).max() < 1e-5
    assert ((together > 0) & (together < 1)).all()
    # Scores differ between sequences: the messages reach the decoder.
    assert np.ptp(together) > 1e-6


def test_loss_is_cross_entropy_on_answer_tokens_only(model: LogLLM) -> None:
    """Against the decoder's own loss with every non-answer label set to -100, over full logits."""
    seqs, labels = SEQS[:4], [0, 1, 1, 0]
    with torch.no_grad():
        ours = model.loss(MESSAGES, seqs, labels)
        used = sorted({i for s in seqs for i in s})
        projected = model._project(MESSAGES, used)
        answers = [model.prompt.answers[y] for y in labels]
        rows = [[used.index(i) for i in s] for s in seqs]
        embeds, mask, pos = model._decoder_inputs(rows, projected, answers)
        target = torch.full(mask.shape, -100)
        for b, a in enumerate(answers):
            target[b, -len(a):] = torch.tensor(a)
        full = model.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits
        reference = torch.nn.functional.cross_entropy(full[:, :-1].reshape(-1, full.shape[-1]),
                                                      target[:, 1:].reshape(-1), ignore_index=-100)
        flipped = model.loss(MESSAGES, seqs, [1 - y for y in labels])
    assert torch.allclose(ours, reference, atol=1e-5)
    assert not torch.allclose(ours, flipped)


def test_repeated_rows_go_through_the_decoder_once_with_the_same_loss_and_gradient(model: LogLLM) -> None:
    """A batch with repeats has the loss and gradient of the same batch computed row by row."""
    model.eval()  # no dropout, so the comparison is exact up to rounding
    seqs = [SEQS[0], SEQS[1], SEQS[0], SEQS[3], SEQS[0], SEQS[1]]
    labels = [0, 1, 0, 0, 1, 1]  # SEQS[0] twice as normal and once as anomalous: different rows
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_and_grads(fn):
        model.zero_grad()
        value = fn()
        value.backward()
        return value.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    rows_seen = []
    hook = model.decoder.register_forward_pre_hook(
        lambda _m, _a, kw: rows_seen.append(kw["inputs_embeds"].shape[0]), with_kwargs=True)
    try:
        batched, batched_grads = loss_and_grads(lambda: model.loss(MESSAGES, seqs, labels))
    finally:
        hook.remove()
    assert rows_seen == [4]  # (SEQS[0], 0), (SEQS[1], 1), (SEQS[3], 0), (SEQS[0], 1)

    # Reference: each row alone, weighted by its answer tokens, as the mean over the whole batch.
    tokens = [len(model.prompt.answers[y]) for y in labels]
    reference, reference_grads = loss_and_grads(lambda: sum(
        model.loss(MESSAGES, [s], [y]) * n for s, y, n in zip(seqs, labels, tokens, strict=True)) / sum(tokens))
    assert torch.allclose(batched, reference, atol=1e-6)
    for got, want in zip(batched_grads, reference_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)
    assert any(g.abs().sum() > 0 for g in batched_grads)


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bfloat16-autocast"])
def test_gradients_are_bit_identical_run_to_run_with_two_threads(model: LogLLM, autocast: bool) -> None:
    """The same batch gives the same gradient bits every time on a 2-thread CPU (seeded runs repeat),
    in float32 and under the bfloat16 autocast that training may use.

    Long rows that repeat a few messages make the decoder-input gather add many gradients into the
    same table row; the backward of ``table[index]`` did that in a thread-dependent order.
    """
    model.eval()
    # 16 distinct rows of 80 messages (within the tiny BERT's 128 positions): enough rows and repeats
    # that the old gather's backward differed between runs here.
    seqs = np.random.default_rng(0).integers(0, 6, (16, 80)).tolist()
    labels = [i % 2 for i in range(16)]
    params = [p for p in model.parameters() if p.requires_grad]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for _ in range(4):
            model.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = model.loss(MESSAGES, seqs, labels)
            loss.backward()
            runs.append([p.grad.clone() if p.grad is not None else None for p in params])
    finally:
        torch.set_num_threads(threads)
    assert any(g is not None and g.abs().sum() > 0 for g in runs[0])
    for run in runs[1:]:
        for got, want in zip(run, runs[0], strict=True):
            assert (got is None and want is None) or torch.equal(got, want)


def test_loss_gradient_reaches_every_trainable_part(model: LogLLM) -> None:
    model.train()
    model.loss(MESSAGES, SEQS[:3], [0, 1, 0]).backward()
    for name, params in model.parts().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in params), name


def test_label_position_logits_match_full_forward(model: LogLLM) -> None:
    with torch.no_grad():
        score = model.score(MESSAGES, [SEQS[1]])[0]
        ids = model.prompt.answers[1]
        used = sorted(set(SEQS[1]))
        projected = model._project(MESSAGES, used)
        embeds, mask, pos = model._decoder_inputs([[used.index(i) for i in SEQS[1]]], projected, [ids])
        full = model.decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits[0]
        at = full.shape[0] - len(ids) - 1 + model.prompt.label_offset  # predicts answer[label_offset]
        pair = full[at, list(model.prompt.label_tokens)]
    assert score == pytest.approx(torch.softmax(pair, -1)[1].item(), abs=1e-5)


def test_parts_partition_the_trainable_parameters(model: LogLLM) -> None:
    parts = model.parts()
    ids = {name: {id(p) for p in ps} for name, ps in parts.items()}
    assert all(ids.values())
    assert not (ids["encoder"] & ids["projector"] or ids["encoder"] & ids["decoder"] or ids["projector"] & ids["decoder"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == ids["encoder"] | ids["projector"] | ids["decoder"]
    if model.config.decoder_lora is not None:
        names = {n for n, p in model.decoder.named_parameters() if id(p) in ids["decoder"]}
        new = set(getattr(model.decoder.get_base_model(), "logllm_new_keys", []))
        assert any("lora_" in n for n in names)
        # Besides LoRA weights, only tensors the base checkpoint lacked train (they are saved too).
        assert all("lora_" in n or any(n.endswith(k) for k in new) for n in names)


def test_save_load_gives_the_same_scores(model: LogLLM, tmp_path) -> None:
    model.train()
    opt = torch.optim.AdamW([p for ps in model.parts().values() for p in ps], lr=1e-2)
    model.loss(MESSAGES, SEQS, [0, 1, 0, 0, 1, 1]).backward()
    opt.step()  # move away from the seeded init so loading must really read the weights
    before = model.score(MESSAGES, SEQS)
    model.save_pretrained(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*")}
    assert "logllm_config.json" in files and "versions.json" in files and "projector.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    loaded = LogLLM.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    np.testing.assert_allclose(loaded.score(MESSAGES, SEQS), before, atol=1e-6)
    if model.config.decoder_lora is not None:
        assert (tmp_path / "m" / "decoder" / "adapter" / "adapter_model.safetensors").is_file()
        assert not (tmp_path / "m" / "decoder" / "model.safetensors").exists()
    if model.config.encoder_lora is not None:
        assert (tmp_path / "m" / "encoder" / "adapter" / "adapter_model.safetensors").is_file()
    if model.config.decoder_lora is not None:
        new = getattr(model.decoder.get_base_model(), "logllm_new_keys", [])
        assert bool(new) == (tmp_path / "m" / "decoder" / "adapter" / "new_base_tensors.safetensors").is_file()


def test_texts_form_of_score_matches_ids_form(model: LogLLM) -> None:
    as_texts = [[MESSAGES[i] for i in s] for s in SEQS]
    np.testing.assert_allclose(model.score(as_texts), model.score(MESSAGES, SEQS), atol=1e-6)


def test_run_folder_loads_model_and_threshold(tiny_config, tmp_path) -> None:
    model = LogLLM.build(tiny_config, seed=1)
    model.save_pretrained(tmp_path / "run" / "model")
    (tmp_path / "run" / "threshold.json").write_text('{"threshold": 0.25, "source": "val"}')
    loaded = LogLLM.from_pretrained(tmp_path / "run")
    assert loaded.threshold == 0.25
    np.testing.assert_allclose(loaded.score(MESSAGES, SEQS), model.score(MESSAGES, SEQS), atol=1e-6)


def test_loading_a_foreign_folder_is_a_clear_error(tmp_path) -> None:
    from logllm.errors import ConfigError

    with pytest.raises(ConfigError, match="logllm_config.json is missing"):
        LogLLM.from_pretrained(tmp_path)


def test_seed_decides_the_random_parts(tiny_config) -> None:
    state = torch.random.get_rng_state()
    a, b, c = (LogLLM.build(tiny_config, seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)  # building leaves the caller's RNG alone
    assert torch.equal(a.projector.weight, b.projector.weight)
    assert not torch.equal(a.projector.weight, c.projector.weight)
    np.testing.assert_allclose(a.score(MESSAGES, SEQS), b.score(MESSAGES, SEQS), atol=0)


def test_bfloat16_decoder_scores_close_to_float32(tiny_config) -> None:
    full = LogLLM.build(tiny_config, seed=0)
    half = LogLLM.build(tiny_config.replace(dtype="bfloat16"), seed=0)
    assert half.decoder.get_input_embeddings().weight.dtype == torch.bfloat16
    np.testing.assert_allclose(half.score(MESSAGES, SEQS), full.score(MESSAGES, SEQS), atol=0.05)
    assert torch.isfinite(half.loss(MESSAGES, SEQS[:2], [0, 1]))


@pytest.mark.parametrize("name", ["bert-causal", "gpt2", "tiny-llama"])
def test_decoder_dropout_sets_the_decoders_dropout_only(tiny_models, name: str, tmp_path) -> None:
    config = _configs(tiny_models)[name].replace(decoder_dropout=0.25)
    model = LogLLM.build(config, seed=0)
    keys = [k for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "resid_pdrop",
                        "embd_pdrop", "attn_pdrop") if hasattr(model.decoder.config, k)]
    assert keys and all(getattr(model.decoder.config, k) == 0.25 for k in keys)
    dropouts = [m.p for m in model.decoder.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(p == 0.25 for p in dropouts)
    assert {m.p for m in model.encoder.modules() if isinstance(m, torch.nn.Dropout)} != {0.25}  # untouched
    default = LogLLM.build(_configs(tiny_models)[name], seed=0)
    assert all(getattr(default.decoder.config, k) != 0.25 for k in keys)
    loaded = LogLLM.from_pretrained(model.save_pretrained(tmp_path / "m"))  # the setting travels with the model
    assert loaded.config.decoder_dropout == 0.25
    assert all(m.p == 0.25 for m in loaded.decoder.modules() if isinstance(m, torch.nn.Dropout))


def test_decoder_dropout_out_of_range_is_a_config_error(tiny_config) -> None:
    from logllm.errors import ConfigError

    with pytest.raises(ConfigError, match="decoder_dropout"):
        tiny_config.replace(decoder_dropout=1.5)


def test_merged_adapters_score_as_the_adapters_do(tiny_models, tmp_path) -> None:
    """A LoRA model loaded for scoring with its adapters folded in gives the scores of the adapters."""
    model = LogLLM.build(_configs(tiny_models)["llama-lora"], seed=0)
    with torch.no_grad():  # move the adapters off their zero start so that merging matters
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "m")
    loaded = LogLLM.from_pretrained(tmp_path / "m")
    merged = LogLLM.from_pretrained(tmp_path / "m", merge_adapters=True)
    assert loaded._decoder_adapter and not merged._decoder_adapter and not merged._encoder_adapter
    assert not any("lora" in name for name, _ in merged.named_parameters())
    a, b = loaded.score(MESSAGES, SEQS), merged.score(MESSAGES, SEQS)
    assert np.abs(a - b).max() < 1e-5 and np.ptp(a) > 1e-4


def test_saving_an_adapter_named_by_an_alias_does_not_look_up_the_hub(tiny_models, tmp_path, monkeypatch) -> None:
    import peft.utils.save_and_load as peft_save

    def no_hub(*args, **kwargs):
        raise AssertionError("save_pretrained asked the hub about the base model")

    monkeypatch.setattr(peft_save, "check_file_exists_on_hf_hub", no_hub)
    model = LogLLM.build(_configs(tiny_models)["llama-lora"], seed=0)
    for adapter in model.decoder.peft_config.values():
        adapter.base_model_name_or_path = "smollm2-135m"  # an alias, as the `small` preset records
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "decoder" / "adapter" / "adapter_model.safetensors").is_file()
