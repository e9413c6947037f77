"""Every method deployable: run folders of bench methods, and one loader for all run folders.

- `logllm.methods.train`: ``logllm train --method NAME`` (`train_method`, `MethodTrainOptions`);
- `logllm.methods.model`: `load_run(RUN)`, the scoring model of any run folder (LogLLM or a
  `BaselineModel`), as used by `logllm evaluate` and `logllm detect`;
- `logllm.methods.features`: message texts -> the run's templates and vectors.
"""

from __future__ import annotations

from logllm.methods.model import BaselineModel, load_run, read_run_config, run_method

__all__ = ["BaselineModel", "load_run", "read_run_config", "run_method"]
