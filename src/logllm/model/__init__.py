"""The LogLLM model: encoder -> projector -> causal decoder, presets, and where weights come from.

Public interface (the training code and the CLI are written against it)::

    from logllm.model import LogLLM, ModelConfig, LoraSpec, PRESETS, preset
    model = LogLLM.build(ModelConfig(), seed=0)          # or LogLLM.from_pretrained(run_or_model_dir)
    model.parts()                                        # {"encoder", "projector", "decoder"} -> params
    model.loss(texts, sequences, labels)                 # mean CE over answer tokens
    model.score(texts, sequences) / model.score(list_of_text_sequences)   # P(anomalous), input order
    model.answer_logits(texts, sequences)                # (N, 2) logits (normal, anomalous) behind score
    model.freeze_encoder_cache(texts); model.clear_cache()
    model.save_pretrained(dir)

Extensions beyond the agreed interface (nothing was changed): ModelConfig.device ("auto"),
ModelConfig.decoder_intermediate, ModelConfig.replace(); preset(name); LogLLM.device,
LogLLM.encoder_trains, LogLLM.message_vectors, LogLLM.stats, LogLLM.threshold
(from RUN/threshold.json when loading a run folder); score() also accepts sequences of texts.
Under LoRA, base tensors that the base checkpoint lacks (e.g. MiniLM's LM-head transform when it is
the decoder) are trainable members of that part and are saved beside the adapter.
Modules: hub (aliases, bundled MiniLM), config, prompt, build (encoder/decoder/LoRA/4-bit), logllm.
"""

from __future__ import annotations

from typing import Any

from logllm.model.config import PRESETS, LoraSpec, ModelConfig, preset

__all__ = ["PRESETS", "LogLLM", "LoraSpec", "ModelConfig", "preset"]


def __getattr__(name: str) -> Any:
    # LogLLM pulls in torch and transformers; import it only when asked for.
    if name == "LogLLM":
        from logllm.model.logllm import LogLLM

        return LogLLM
    raise AttributeError(name)
