"""Batch scoring of whole log archives with a trained run (`logllm score`), in-process or on Ray Data.

- `logllm.score.inputs`: files, globs and folders -> files; plain and gzip files -> numbered lines;
- `logllm.score.sequences`: the CPU stage, one file -> its sequences (the detect package's parsing,
  masking and sequencing);
- `logllm.score.sessions`: key sessions joined across files (in-process, or session parts per file
  grouped by key on Ray);
- `logllm.score.scorer`: the scoring stage, `RunScorer` (the run loaded once; `detect`'s scores);
- `logllm.score.ray_engine`: the plan on Ray Data (CPU tasks per file, a group-by on the session key,
  an actor pool of scorers);
- `logllm.score.runner`: `score_archives` (either engine; parquet partitions and `summary.json`).
"""

from __future__ import annotations

from logllm.score.inputs import ExpandedInputs, expand_inputs, read_lines
from logllm.score.runner import ScoreOptions, ScoreSummary, score_archives
from logllm.score.scorer import DETECTION_COLUMNS, RunScorer
from logllm.score.sequences import FileReport, PreprocessPlan, file_sequences
from logllm.score.sessions import assemble, fragment_rows, joined_rows

__all__ = [
    "DETECTION_COLUMNS",
    "ExpandedInputs",
    "FileReport",
    "PreprocessPlan",
    "RunScorer",
    "ScoreOptions",
    "ScoreSummary",
    "assemble",
    "expand_inputs",
    "file_sequences",
    "fragment_rows",
    "joined_rows",
    "read_lines",
    "score_archives",
]
