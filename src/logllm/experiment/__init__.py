"""The paper's experiments, one command each: `logllm experiment TABLE` (docs/experiments.md).

``plan`` (options, tables, cells) -> ``cells`` (one cell through train/evaluate/bench/mutate) ->
``store`` (one JSON file per finished cell) -> ``runner`` (the missing cells, in order) ->
``summary`` (markdown, CSV and figures per table).
"""

from __future__ import annotations

from logllm.experiment.plan import TABLES, Cell, ExperimentOptions, parse_data_specs
from logllm.experiment.runner import ExperimentResult, run_experiment
from logllm.experiment.summary import summarize_experiment

__all__ = ["TABLES", "Cell", "ExperimentOptions", "ExperimentResult", "parse_data_specs", "run_experiment",
           "summarize_experiment"]
