"""Mixed precision for training's forward passes: the dtype ``TrainConfig.autocast`` resolves to here.

"auto" turns bfloat16 autocast on where the CPU computes bfloat16 natively. That is read from the CPU
feature flags the Linux kernel lists in ``/proc/cpuinfo`` (x86: ``avx512_bf16`` or ``amx_bf16``;
Arm: ``bf16``), with oneDNN available in torch (``torch.backends.mkldnn.is_available()``). Where
``/proc/cpuinfo`` cannot be read (macOS, Windows) "auto" stays float32; set ``autocast = "bfloat16"``
to use it there.
"""

from __future__ import annotations

from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""CPU flags of native bfloat16 arithmetic: x86 AVX512-BF16 and AMX-BF16, Arm FEAT_BF16."""


def cpu_flags(cpuinfo: str | Path = CPUINFO) -> frozenset[str]:
    """The CPU feature flags in a ``/proc/cpuinfo`` file (x86 ``flags``, Arm ``Features``); empty when unreadable."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return frozenset(flags)


def cpu_has_native_bfloat16(cpuinfo: str | Path = CPUINFO) -> bool:
    """Whether this CPU computes bfloat16 matmuls natively (AVX512-BF16, AMX or Arm BF16, through oneDNN)."""
    return bool(torch.backends.mkldnn.is_available() and cpu_flags(cpuinfo) & BFLOAT16_FLAGS)


def resolve_autocast(choice: str | None, device: torch.device) -> torch.dtype | None:
    """The dtype training's forward passes autocast to (None: none), from ``TrainConfig.autocast``.

    "auto" means a CPU with native bfloat16 only. On CUDA it stays float32: there the decoder's attention
    kernel is picked when the model is built, from its dtype (eager attention in half precision, see
    ``logllm.model.build``), and the fused kernel gave NaN gradients at padded positions in bfloat16;
    ``dtype = "bfloat16"`` is the way to train in half precision on a GPU."""
    if choice == "bfloat16" or (choice == "auto" and device.type == "cpu" and cpu_has_native_bfloat16()):
        return torch.bfloat16
    return None
