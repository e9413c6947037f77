"""logllm: log anomaly detection with large language models (the LogLLM method).

The pipeline runs one way:

    raw log files -> parse -> mask -> sessions/windows -> split        (logllm.data)
    prepared data -> encoder -> projector -> decoder -> answer score   (logllm.model, logllm.training)
    scores -> metrics / report / detections with line numbers          (logllm.evaluate, logllm.detect)
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
