"""Scoring raw log lines with a trained run (`logllm detect`): one detection per completed sequence.

- `logllm.detect.preprocess`: the run's parsing and masking, rebuilt from its data manifest;
- `logllm.detect.sequencers`: lines -> fixed windows, time windows or sessions, as `prepare` builds them;
- `logllm.detect.detector`: the `Detector` (decode, preprocess, sequence, score, explain).

Reading files, stdin and followed files is `logllm.follow`.
"""

from __future__ import annotations

from logllm.detect.detector import (
    Detection,
    Detector,
    DetectStats,
    ExplainWhich,
    InputCounts,
    decode_line,
    line_spans,
)
from logllm.detect.preprocess import (
    OVERRIDABLE,
    TRAINING_ONLY,
    ParsedBatch,
    Preprocessor,
    RunPreprocessor,
    preprocessor_from_manifest,
)
from logllm.detect.sequencers import (
    Reason,
    SequencePolicy,
    Sequencer,
    SessionSequencer,
    StreamLine,
    StreamSequence,
    TimeWindowSequencer,
    WindowSequencer,
)

__all__ = [
    "OVERRIDABLE",
    "TRAINING_ONLY",
    "DetectStats",
    "Detection",
    "Detector",
    "ExplainWhich",
    "InputCounts",
    "ParsedBatch",
    "Preprocessor",
    "Reason",
    "RunPreprocessor",
    "SequencePolicy",
    "Sequencer",
    "SessionSequencer",
    "StreamLine",
    "StreamSequence",
    "TimeWindowSequencer",
    "WindowSequencer",
    "decode_line",
    "line_spans",
    "preprocessor_from_manifest",
]
