"""Data-parallel training: which process this is, and what the training processes exchange.

``logllm train`` runs as N processes when a launcher starts it so (docs/distributed.md):

    accelerate launch --multi_gpu --num_processes N -m logllm train ...   # torchrun underneath
    torchrun --nproc_per_node N -m logllm train ...

``start`` reads the launcher's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins the
process group through accelerate's ``Accelerator`` with an ``InitProcessGroupKwargs`` timeout: NCCL
when the model is on CUDA (one GPU per process, ``LOCAL_RANK``), gloo on the CPU. Without those
variables it returns the single-process context and touches nothing (plain ``logllm train``).

Every process holds the whole model and walks the same seeded order of samples; each optimiser step's
``grad_accum`` micro-batches are dealt out to the processes in turn (micro-batch ``k`` to process
``k % N``), and the gradients are summed across processes before the step (``all_reduce_gradients``),
so every process takes the same step as one process would on the whole group. The exchange is done
here rather than by wrapping the model in ``DistributedDataParallel`` (what ``accelerator.prepare``
does) because the stages freeze and unfreeze parts between them, a process may hold fewer
micro-batches than another at an epoch's end, and the sum must equal the one-process gradient.

A collective that fails (another process died: its connection closes) or waits longer than the
timeout (another process hangs) raises ``DistributedError``, a ``LogLLMError``: the CLI prints it as
one message and exits, so no process waits forever for a dead peer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from logllm.errors import ConfigError, LogLLMError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 1800.0
"""How long a process waits in a collective (gradient sum, gather) for the others before it gives up;
torch's default for gloo. The main process writes checkpoints while the others wait, so it must exceed
the time one checkpoint takes."""
_BUCKET = 1 << 24
"""Gradient elements summed in one all-reduce (64 MiB in float32)."""


class DistributedError(LogLLMError):
    """A training process lost contact with the others (one died, was killed or hangs past the timeout)."""


@dataclass(frozen=True)
class DistContext:
    """This process's place among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """"gloo" or "nccl" when distributed, else None."""
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder (logs, checkpoints, model/, threshold.json)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mine(self, count: int) -> list[int]:
        """This process's share of ``count`` items dealt out in turn: ``k`` with ``k % world_size == rank``."""
        return list(range(self.rank, count, self.world_size))


SINGLE = DistContext()


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as err:
        raise ConfigError(f"environment variable {name}={value!r}: expected an integer (set by the launcher: "
                          "torchrun or accelerate launch)") from err


def launched_world_size() -> int:
    """How many training processes the launcher started (``WORLD_SIZE``; 1 without a launcher).

    ``accelerate launch --cpu --num_processes N`` starts one process without MPI (its CPU launcher runs
    N processes only through ``mpirun``), and says so only by setting ``MASTER_ADDR`` without
    ``WORLD_SIZE``: that is refused here instead of training on one process while N were asked for.
    """
    world = _env_int("WORLD_SIZE")
    if world is not None:
        if world < 1:
            raise ConfigError(f"environment variable WORLD_SIZE={world}: must be at least 1")
        return world
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1") and os.environ.get("MASTER_ADDR"):
        raise ConfigError(
            "`accelerate launch --cpu --num_processes N` started a single process: accelerate starts several "
            "CPU processes only through MPI (--mpirun_hostfile). On CPUs launch with `accelerate launch "
            "--multi_gpu --num_processes N -m logllm train ...` (torchrun; logllm uses gloo when there is no "
            "GPU) or `torchrun --nproc_per_node N -m logllm train ...`; see docs/distributed.md")
    return 1


def start(*, cpu: bool, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the process group the launcher set up, or return the single-process context without one.

    ``cpu``: the model trains on the CPU (gloo); else each process takes GPU ``LOCAL_RANK`` (NCCL),
    which must exist. Processes other than the main one then log warnings and errors only.
    """
    if timeout_s <= 0:
        raise ConfigError(f"--dist-timeout {timeout_s}: must be a positive number of seconds")
    world = launched_world_size()
    if world == 1:
        return SINGLE
    for var, what in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        if os.environ.get(var, "").lower() in ("true", "1"):
            raise ConfigError(f"the launcher asks for {what} ({var}={os.environ[var]}); logllm trains data-parallel "
                              "with the whole model in every process and does not shard it. Launch with a "
                              "MULTI_GPU accelerate config (docs/distributed.md)")
    local_rank = _env_int("LOCAL_RANK") or 0
    if not cpu:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"process with LOCAL_RANK={local_rank} has no GPU: torch finds "
                              f"{torch.cuda.device_count()} CUDA device(s); launch at most that many processes "
                              "per machine, or train on the CPU (model device = \"cpu\")")
        torch.cuda.set_device(local_rank)  # "cuda" (and 4-bit loading) then means this process's GPU
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        accelerator = Accelerator(cpu=cpu, kwargs_handlers=[
            InitProcessGroupKwargs(timeout=timedelta(seconds=timeout_s))])
    except (RuntimeError, ValueError) as err:
        raise DistributedError(f"could not join the {world} training processes at {where} within {timeout_s:g} s "
                               f"({type(err).__name__}: {err}); check that every process was started with the "
                               "same WORLD_SIZE, MASTER_ADDR and MASTER_PORT") from err
    state = accelerator.state
    if accelerator.num_processes != world:
        raise DistributedError(f"the launcher set WORLD_SIZE={world} but accelerate joined "
                               f"{accelerator.num_processes} process(es) ({state.distributed_type})")
    ctx = DistContext(rank=accelerator.process_index, world_size=world, local_rank=accelerator.local_process_index,
                      backend=torch.distributed.get_backend(), timeout_s=timeout_s)
    if not ctx.is_main:
        logging.getLogger("logllm").setLevel(logging.WARNING)
    log.info("data-parallel training: %d processes (%s), timeout %g s", world, ctx.backend, timeout_s)
    return ctx


def stop(ctx: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if ctx.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def _collective(ctx: DistContext, what: str) -> Iterator[None]:
    """Turn a failed or timed-out collective into a DistributedError that says what to do."""
    try:
        yield
    except RuntimeError as err:  # torch.distributed.DistError and its backends' errors are RuntimeErrors
        raise DistributedError(
            f"training process {ctx.rank} of {ctx.world_size}: {what} failed ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no detail'}). Another training process "
            f"stopped (killed, out of memory, or an error: see its own message) or did not answer within "
            f"the {ctx.timeout_s:g} s timeout (--dist-timeout); this process stops too. Continue the run from its "
            "last checkpoint with the same number of processes and --resume") from err


def _device(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def barrier(ctx: DistContext, what: str) -> None:
    """Wait until every process gets here."""
    if ctx.distributed:
        with _collective(ctx, what):
            torch.distributed.barrier()


def sum_floats(values: Sequence[float], ctx: DistContext, what: str) -> list[float]:
    """Each value summed over the processes (float64)."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_device(ctx))
    with _collective(ctx, what):
        torch.distributed.all_reduce(t)
    return t.tolist()


def gather_objects(obj: Any, ctx: DistContext, what: str) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order, on every process."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    with _collective(ctx, what):
        torch.distributed.all_gather_object(out, obj)
    return out


def broadcast_parameters(params: Sequence[torch.nn.Parameter], ctx: DistContext) -> None:
    """Copy the main process's values of ``params`` into every process's (keeps the replicas identical)."""
    if not ctx.distributed:
        return
    with _collective(ctx, "sharing the trained parameters"), torch.no_grad():
        for p in params:
            torch.distributed.broadcast(p.data, src=0)


def _buckets(tensors: list[torch.Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), each group cut at about ``_BUCKET`` elements."""
    groups: dict[tuple[torch.device, torch.dtype], list[list[int]]] = {}
    for i, t in enumerate(tensors):
        runs = groups.setdefault((t.device, t.dtype), [[]])
        if runs[-1] and sum(tensors[j].numel() for j in runs[-1]) + t.numel() > _BUCKET:
            runs.append([])
        runs[-1].append(i)
    return [run for runs in groups.values() for run in runs]


def all_reduce_gradients(params: Sequence[torch.nn.Parameter], ctx: DistContext) -> None:
    """Sum every parameter's gradient over the processes, in place.

    A process that computed no gradient for a parameter (it held no micro-batch this step) adds zeros;
    a parameter no process has a gradient for keeps ``grad = None``, as with one process (the optimizer
    then skips it).
    """
    if not ctx.distributed or not params:
        return
    device = _device(ctx)
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    with _collective(ctx, "summing the gradients"):
        torch.distributed.all_reduce(has)
        live = [p for p, h in zip(params, has.tolist(), strict=True) if h > 0]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in live]
        for run in _buckets(grads):
            flat = torch.cat([grads[i].reshape(-1) for i in run])
            torch.distributed.all_reduce(flat)
            offset = 0
            for i in run:
                n = grads[i].numel()
                grads[i].copy_(flat[offset: offset + n].view_as(grads[i]))
                offset += n
    for p, g in zip(live, grads, strict=True):
        p.grad = g


def check_grad_accum(micro_batch: int, grad_accum: int, world_size: int) -> None:
    """Refuse a config whose step cannot be dealt out evenly: ``grad_accum`` must be a multiple of the
    number of processes (the global batch is ``micro_batch x grad_accum`` whatever that number)."""
    if grad_accum % world_size == 0:
        return
    total = micro_batch * grad_accum
    fits = [g for g in range(world_size, total + 1, world_size) if total % g == 0]
    hint = (f"e.g. micro_batch = {total // fits[0]}, grad_accum = {fits[0]} keeps the global batch {total}"
            if fits else f"the global batch {total} cannot be shared by {world_size} processes; choose "
                         f"micro_batch x grad_accum divisible by {world_size}")
    raise ConfigError(f"grad_accum = {grad_accum} with {world_size} training processes: the {grad_accum} micro-batches "
                      f"of a step are dealt out to the processes, so grad_accum must be a multiple of {world_size}; "
                      f"{hint} (set them in --config)")


def micro_batch_seed(seed: int, stage_index: int, epoch: int, group: int, micro_batch: int) -> int:
    """The torch seed of one micro-batch's forward pass (dropout): a function of where it is in the run,
    so a micro-batch draws the same masks whichever process runs it."""
    import numpy as np

    return int(np.random.SeedSequence([seed, stage_index, epoch, group, micro_batch]).generate_state(1)[0])


def launch_hint(processes: int) -> str:
    """The command prefix that starts ``processes`` training processes."""
    if processes <= 1:
        return "logllm train"
    return (f"accelerate launch --multi_gpu --num_processes {processes} -m logllm train (or torchrun "
            f"--nproc_per_node {processes} -m logllm train)")
