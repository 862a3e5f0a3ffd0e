"""Where and in what precision tsmojo runs: device and dtype choice, and autocast.

Weights are always stored in float32. ``bfloat16`` runs the encoder's matrix products and
attention under ``torch.autocast``; scaling, the SSM decays and state, softmax statistics, the
patch embedding, the quantile head and the loss stay in float32 (see ``docs/precision.md``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import Literal

import torch

DTYPE_NAMES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; anything else as ``torch.device`` reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` or ``"bfloat16"``: the name ``resolve_dtype`` reads back."""
    return next(name for name, value in DTYPE_NAMES.items() if value == dtype)


def native_bf16(device: torch.device) -> bool:
    """True where bf16 matrix products run natively: CUDA GPUs that report bf16 support, and
    CPUs with AVX512-BF16 or AMX tiles (elsewhere bf16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on a device with native bf16, float32 elsewhere. ``"float32"``,
    ``"bfloat16"`` or a ``torch.dtype`` are taken as given."""
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    elif dtype == "auto":
        chosen = torch.bfloat16 if native_bf16(device) else torch.float32
    elif dtype in DTYPE_NAMES:
        chosen = DTYPE_NAMES[dtype]
    else:
        raise ValueError(f"dtype must be 'auto', 'float32', 'bfloat16' or a torch.dtype, got {dtype!r}")
    if chosen not in (torch.float32, torch.bfloat16):
        raise ValueError(f"tsmojo runs in float32 or bfloat16, got {chosen}")
    return chosen


def autocast(device: torch.device, dtype: torch.dtype):
    """The context a forward pass runs in: nothing for float32, autocast for bfloat16."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def default_precision(device: torch.device) -> Literal["bf16-mixed", "32-true"]:
    """Lightning's precision name for training on ``device``: ``bf16-mixed`` with native bf16."""
    return "bf16-mixed" if native_bf16(device) else "32-true"


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_MiB = 1 << 20


def tune_cpu_allocator(trim_threshold_mib: int = 256, top_pad_mib: int = 64, mmap_threshold_mib: int = 32) -> bool:
    """Makes glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.

    PyTorch's CPU tensors come straight from malloc. A forecast or training step allocates and
    frees tensors of several MB per operation; with glibc's defaults the heap is trimmed and
    large blocks are unmapped as soon as they are free, so the next tensor page-faults its memory
    in again, zeroed by the kernel (in a hand test, a bf16 forecast of 2,048 series took about
    100,000 page faults, and about 6,000 with these settings). ``benchmarks/precision.py
    inference`` measured 8-31% more series per second in float32 on 2 threads over two run pairs,
    and no change beyond noise in bf16 (README, bfloat16 table). Blocks up to
    ``mmap_threshold_mib`` come from the heap, and up to ``trim_threshold_mib`` of free heap is
    kept, so the process's resident memory stays near its peak.

    Process-wide and lasting: the ``tsmojo`` command lines call it; Python users opt in by calling
    it once. Returns False, changing nothing, where the C library is not glibc (macOS, Windows,
    musl)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = {
        _M_MMAP_THRESHOLD: mmap_threshold_mib * _MiB,
        _M_TRIM_THRESHOLD: trim_threshold_mib * _MiB,
        _M_TOP_PAD: top_pad_mib * _MiB,
    }
    return all(mallopt(parameter, value) == 1 for parameter, value in settings.items())
