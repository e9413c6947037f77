"""Builders for the LogLLM parts: encoder, decoder (three kinds), LoRA adapters and 4-bit loading.

Everything heavy (transformers, peft, bitsandbytes) is imported inside functions, and bitsandbytes
only when 4-bit loading is asked for, so the package imports on machines without a GPU stack.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch

from logllm.errors import ConfigError
from logllm.model.config import LoraSpec, ModelConfig
from logllm.model.gguf import check_pinned, converted_decoder, gguf_source, is_gguf_decoder
from logllm.model.hub import resolve

log = logging.getLogger(__name__)

# Dropout probabilities in Hugging Face decoder configs (BERT, Llama and kin, GPT-2, others).
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "resid_pdrop",
                "embd_pdrop", "attn_pdrop", "hidden_dropout", "dropout")

# BERT-family configs that can run as causal decoders once `is_decoder=True`.
_BERT_LIKE = {"bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"}


def resolve_device(config: ModelConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"model.device = {config.device!r} but torch finds no CUDA device "
                          f"(torch {torch.__version__}); use device = \"cpu\" or \"auto\"")
    return torch.device(config.device)


def torch_dtype(config: ModelConfig) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config.dtype]


def check_4bit_available() -> None:
    """Raise ConfigError unless 4-bit loading can work here (CUDA and bitsandbytes present)."""
    if not torch.cuda.is_available():
        raise ConfigError(
            "model.quantize_4bit = true (the `paper` preset: 4-bit NF4 via bitsandbytes) needs a CUDA GPU, "
            f"and torch {torch.__version__} finds none. On a CPU use `--preset small`, or set "
            "quantize_4bit = false in the model config (the full model then needs memory for its bf16 weights)"
        )
    try:
        importlib.import_module("bitsandbytes")
    except ImportError as err:
        raise ConfigError(
            "model.quantize_4bit = true needs the bitsandbytes package, which is not installed: "
            "`pip install 'logllm[gpu]'` (or `pip install bitsandbytes`), or set quantize_4bit = false"
        ) from err


def quantization_config() -> Any:
    """The paper's QLoRA quantisation: NF4 weights, bf16 compute (transformers.BitsAndBytesConfig)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def lora_targets(model: torch.nn.Module) -> list[str]:
    """The attention projections LoRA wraps, found from the module names of the architecture."""
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":
            names.add(name.rsplit(".", 1)[-1])
    for choice in (["q_proj", "v_proj"], ["query", "value"], ["c_attn"], ["query_key_value"], ["Wqkv"]):
        if set(choice) <= names:
            return choice
    raise ConfigError(f"cannot tell which modules of {type(model).__name__} LoRA should wrap (linear layers: "
                      f"{sorted(names)[:20]}); set target_modules in the model's *_lora config")


def lora_config(spec: LoraSpec, model: torch.nn.Module | None, task: Literal["CAUSAL_LM", "FEATURE_EXTRACTION"]) -> Any:
    """A peft.LoraConfig from a LoraSpec (targets found from ``model`` when the spec gives none)."""
    from peft import LoraConfig

    targets = spec.target_modules
    if targets is None:
        if model is None:
            raise ConfigError("LoRA target_modules not given and no model to find them from")
        targets = lora_targets(model)
    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=list(targets), bias="none", task_type=task)


NEW_KEYS_ATTR = "logllm_new_keys"


def _log_loading(what: str, path: str, info: dict[str, Any], model: torch.nn.Module) -> None:
    """Log what the checkpoint lacked (newly initialised) or had in excess; remember the new tensors.

    The names are kept on the model (``logllm_new_keys``) so that a LoRA-adapted part can train and
    save them beside its adapter: they are not in the base checkpoint the adapter refers to.
    """
    missing = sorted(info.get("missing_keys") or [])
    setattr(model, NEW_KEYS_ATTR, missing)
    unexpected = sorted(info.get("unexpected_keys") or [])
    if missing:
        log.info("%s from %s: %d tensors newly initialised (not in the checkpoint): %s",
                 what, path, len(missing), ", ".join(missing))
    if unexpected:
        log.info("%s from %s: %d checkpoint tensors unused: %s", what, path, len(unexpected), ", ".join(unexpected))


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hold back transformers' own loading report: `_log_loading` logs the same facts, once, as counts."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def decoder_attention(config: ModelConfig, device: torch.device) -> str | None:
    """The decoder's attention implementation: ``"eager"`` for half-precision compute on CUDA, else
    the library's default.

    Batches are left-padded, so a padded position's causal row masks every key. CUDA's fused SDPA
    kernels turn such fully masked rows into NaN in half precision, and the NaN reaches every gradient
    through the backward pass although those positions are never read (seen on an H100 with the
    `small` preset in bfloat16: all gradients non-finite at the first step). Eager attention adds a
    large finite negative instead, so those rows stay finite. float32, and the CPU, keep SDPA (exact
    there, and tested for padding invariance).
    """
    half = config.quantize_4bit or config.dtype in ("bfloat16", "float16")
    return "eager" if half and device.type == "cuda" else None


def _load_kwargs(config: ModelConfig, device: torch.device) -> dict[str, Any]:
    if config.quantize_4bit:
        check_4bit_available()
        index = device.index if device.index is not None else torch.cuda.current_device()
        return {"quantization_config": quantization_config(), "dtype": torch.bfloat16, "device_map": {"": index}}
    return {"dtype": torch_dtype(config)}


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer with a padding token set explicitly (its end token where it defines none).

    LogLLM pads decoder rows itself (embedding rows with explicit position ids), so the token only
    matters to code that pads with the tokenizer; it is set so that such code never fails or guesses.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except OSError as err:
        raise ConfigError(f"cannot load a tokenizer from {path!s}: {err}") from err
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.sep_token or tokenizer.unk_token
        if fallback is not None:
            tokenizer.pad_token = fallback
    return tokenizer


def pin_decoder_source(config: ModelConfig) -> ModelConfig:
    """``config`` with ``decoder_source`` naming the GGUF file (name, sha256, package version) its
    decoder comes from; unchanged for other decoders. A run records this in its config.json."""
    if not is_gguf_decoder(config.decoder, config.decoder_gguf_file):
        return config
    source = gguf_source(config.decoder, config.decoder_gguf_file)
    check_pinned(source, config.decoder_source)
    return config.replace(decoder_source=source.record())


def decoder_path(config: ModelConfig) -> str:
    """A loadable Hugging Face id or folder for ``config.decoder`` (GGUF weights: the converted cache)."""
    if config.decoder == "minilm-causal":
        return resolve("minilm")
    if is_gguf_decoder(config.decoder, config.decoder_gguf_file):
        source = gguf_source(config.decoder, config.decoder_gguf_file)
        check_pinned(source, config.decoder_source)
        return str(converted_decoder(source))
    return resolve(config.decoder)


def build_encoder(config: ModelConfig, device: torch.device, weights: str | Path | None = None) -> Any:
    """The BERT-like encoder (pooler output is the message vector), from ``weights`` or the config's model."""
    from transformers import AutoModel

    path = str(weights) if weights is not None else resolve(config.encoder)
    kwargs = _load_kwargs(config, device)
    try:
        with _quiet_transformers():
            model, info = AutoModel.from_pretrained(path, output_loading_info=True, **kwargs)
    except OSError as err:
        raise ConfigError(f"model.encoder = {config.encoder!r}: cannot load it from {path}: {err}") from err
    _log_loading("encoder", path, info, model)
    if getattr(model, "pooler", None) is None:
        raise ConfigError(f"model.encoder = {config.encoder!r} ({type(model).__name__}) has no pooler; LogLLM uses "
                          "BERT's pooler output as the message vector: choose a BERT-like encoder with a pooler")
    if config.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = model.to(device)
    return model


def build_message_encoder(config: ModelConfig, device: torch.device, n_templates: int = 0) -> Any:
    """What turns a message into its vector: the BERT-like encoder (`build_encoder`), or with input mode
    ``template-id`` an embedding table over the ``n_templates`` Drain templates and the unseen id."""
    if config.input_mode == "template-id":
        from logllm.model.template_encoder import TemplateEncoder

        return TemplateEncoder(n_templates, config.template_width).to(device)
    return build_encoder(config, device)


def set_dropout(cfg: Any, value: float | None, what: str) -> None:
    """Set every dropout probability that the Hugging Face config ``cfg`` has to ``value`` (None: keep)."""
    if value is None:
        return
    keys = [k for k in DROPOUT_KEYS if isinstance(getattr(cfg, k, None), (int, float))]
    if not keys:
        raise ConfigError(f"model.{what}_dropout = {value}: the {cfg.model_type} config has none of the dropout "
                          f"settings {list(DROPOUT_KEYS)}; leave it null")
    before = {k: getattr(cfg, k) for k in keys}
    for k in keys:
        setattr(cfg, k, float(value))
    log.info("%s dropout set to %s (was %s)", what, value, before)


def tiny_llama(config: ModelConfig, tokenizer: Any, attention: str | None = None) -> Any:
    """A compact Llama-architecture decoder over the encoder tokenizer's vocabulary (random init)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    width = config.decoder_width
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=config.decoder_intermediate or 4 * width,
        num_hidden_layers=config.decoder_layers,
        num_attention_heads=config.decoder_heads,
        num_key_value_heads=config.decoder_heads,
        max_position_embeddings=2048,
        # Tied embeddings halve the parameter count; the vocabulary (30k) dominates a model this small.
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        attn_implementation=attention,  # None: the library's default
    )
    set_dropout(cfg, config.decoder_dropout, "decoder")
    return LlamaForCausalLM(cfg)


def build_decoder(config: ModelConfig, device: torch.device, encoder_tokenizer: Any,
                  weights: str | Path | None = None) -> tuple[Any, Any]:
    """The causal decoder and its tokenizer.

    ``weights``: a saved full decoder folder to load instead of building (tiny-llama) or downloading.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    if config.decoder == "tiny-llama" and weights is None:
        if config.quantize_4bit:
            raise ConfigError("model.decoder = 'tiny-llama' is built from scratch and cannot be 4-bit "
                              "quantised; set quantize_4bit = false")
        model = tiny_llama(config, encoder_tokenizer, decoder_attention(config, device))
        model = model.to(dtype=torch_dtype(config), device=device)
        return model, encoder_tokenizer
    path = str(weights) if weights is not None else decoder_path(config)
    try:
        cfg = AutoConfig.from_pretrained(path)
    except OSError as err:
        raise ConfigError(f"model.decoder = {config.decoder!r}: cannot load it from {path}: {err}") from err
    if cfg.model_type in _BERT_LIKE:
        # A BERT checkpoint as a left-to-right decoder: causal attention mask, LM head tied to the word
        # embeddings (the MLM head's transform and bias are not in sentence-transformers checkpoints).
        cfg.is_decoder = True
        cfg.tie_word_embeddings = True
    set_dropout(cfg, config.decoder_dropout, "decoder")
    kwargs = _load_kwargs(config, device)
    attention = decoder_attention(config, device)
    if attention:
        kwargs["attn_implementation"] = attention
    with _quiet_transformers():
        model, info = AutoModelForCausalLM.from_pretrained(path, config=cfg, output_loading_info=True, **kwargs)
    _log_loading("decoder", path, info, model)
    if config.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model = model.to(device)
    return model, load_tokenizer(path)
