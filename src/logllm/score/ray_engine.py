"""`logllm score --engine ray`: the same two stages on Ray Data (the optional extra ``logllm[scale]``).

The plan for windows, time windows, file sessions and ``--per-file-sessions``::

    files (one block each) -> flat_map: read, parse, mask, sequence     CPU tasks, one per file
                           -> map_batches: RunScorer                   an actor pool of ``workers``
                                                                        actors, each loads the run once
                                                                        (1 GPU each when the cluster has GPUs)
                           -> rows back to the driver, in order         written as parquet by the runner

and for key sessions joined across files (`logllm.score.sessions`)::

    files -> flat_map: read, parse, mask, session parts per file      CPU tasks, one per file
          -> materialize (in the object store; the file reports go to the driver, the parts of a
             file that failed are filtered out)
          -> groupby(key).map_groups: join, order and cut each session  a shuffle: one key per group
          -> map_batches: RunScorer -> rows back to the driver

``preserve_order`` keeps the rows of the first plan in file order, so the output does not depend on
the scheduling. Without ``address`` a local cluster is started (with at least ``workers + 1`` CPUs, so
that the CPU tasks still run beside the actors) and shut down at the end; with it, the driver joins
that cluster and only disconnects.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from logllm.errors import ConfigError
from logllm.score.scorer import RunScorer
from logllm.score.sequences import PreprocessPlan, file_sequences
from logllm.score.sessions import assemble, fragment_rows

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """The `ray` module, or a `ConfigError` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra of ray
    except ImportError as err:
        raise ConfigError(f"--engine ray needs Ray Data ({err}); install it with "
                          "`pip install 'logllm[scale]'` (ray[data]), or use --engine local") from err
    return ray


def _sequences(row: dict[str, Any], plan: PreprocessPlan) -> Iterator[dict[str, Any]]:
    yield from file_sequences(int(row["file_index"]), str(row["path"]), plan)


def _fragments(row: dict[str, Any], plan: PreprocessPlan) -> Iterator[dict[str, Any]]:
    yield from fragment_rows(int(row["file_index"]), str(row["path"]), plan)


def _assemble(group: Any, max_session_lines: int) -> Any:
    import pyarrow as pa

    return pa.Table.from_pylist(assemble(group.to_pylist(), max_session_lines))


class _Scorer:
    """A Ray Data actor: the run is loaded once in ``__init__``; each batch is a pyarrow table."""

    def __init__(self, run_dir: str, scorer_kwargs: dict[str, Any]):
        self.scorer = RunScorer(run_dir, **scorer_kwargs)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        return pa.Table.from_pylist(self.scorer.score_rows(batch.to_pylist()))


def ray_rows(files: list[str], plan: PreprocessPlan, run_dir: str, scorer_kwargs: dict[str, Any], *,
             workers: int = 2, address: str | None = None, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Detection and file rows (`RunScorer.score_rows`) for ``files``, in file order, computed on Ray."""
    ray = import_ray()
    if ray.is_initialized():
        started = False  # a caller's own session (a notebook, a test): used, left running
    else:
        try:
            if address:
                ray.init(address=address, log_to_driver=True, include_dashboard=False)
            else:
                ray.init(num_cpus=max(os.cpu_count() or 1, workers + 1), include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError) as err:
            where = f"--address {address}" if address else "a local Ray cluster"
            raise ConfigError(f"{where}: cannot start or join Ray ({err}); check the address "
                              "(`ray status` on the head node prints it) or leave --address out") from err
        started = True
    try:
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        log.info("Ray: %d files, %d scoring actors (%s each)", len(files), workers, "1 GPU" if gpus else "1 CPU")
        ds = ray.data.from_items([{"file_index": i, "path": p} for i, p in enumerate(files)],
                                 override_num_blocks=max(1, len(files)))
        if plan.joins_sessions:
            parts = ds.flat_map(_fragments, fn_kwargs={"plan": plan}).materialize()
            reports = list(parts.filter(lambda r: r["kind"] == "file").iter_rows())
            failed = {int(r["file_index"]) for r in reports if json.loads(r["report"])["error"]}
            parts = parts.filter(lambda r: r["kind"] == "fragment" and int(r["file_index"]) not in failed)
            log.info("Ray: %d files read (%d failed); joining sessions by key", len(reports), len(failed))
            for r in reports:
                yield {"kind": "file", "file_index": int(r["file_index"]), "source": r["source"], "report": r["report"]}
            if parts.count() == 0:
                return
            ds = parts.groupby("key").map_groups(_assemble, fn_kwargs={"max_session_lines": plan.max_session_lines},
                                                 batch_format="pyarrow")
        else:
            ds = ds.flat_map(_sequences, fn_kwargs={"plan": plan})
        ds = ds.map_batches(_Scorer, fn_constructor_kwargs={"run_dir": run_dir, "scorer_kwargs": scorer_kwargs},
                            batch_size=batch_size, batch_format="pyarrow", compute=ActorPoolStrategy(size=workers),
                            num_cpus=1, num_gpus=1 if gpus else 0)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            yield from batch.to_pylist()
    finally:
        if started:
            ray.shutdown()
