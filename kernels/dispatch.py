"""Backend selection for the kernels.

``TSMOJO_KERNELS`` = ``auto`` (default: Triton on CUDA tensors, chunked PyTorch elsewhere),
``triton``, ``torch`` or ``naive`` forces one backend for the whole model.
"""

import importlib.util
import os
from typing import Literal

import torch
import torch.nn.functional as F

from .bmojo_attention.chunk import bmojo_attention_chunked
from .bmojo_attention.naive import bmojo_attention_naive
from .ssd.chunk import ssd_scan_chunked
from .ssd.naive import ssd_scan_naive

Backend = Literal["triton", "torch", "naive"]
_CHOICES = ("auto", "triton", "torch", "naive")


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def resolve_backend(device: torch.device) -> Backend:
    """The backend that runs on ``device`` under the current ``TSMOJO_KERNELS`` setting."""
    choice = os.environ.get("TSMOJO_KERNELS", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"TSMOJO_KERNELS must be one of {_CHOICES}, got {choice!r}")
    if choice == "auto":
        return "triton" if device.type == "cuda" and _triton_available() else "torch"
    return choice  # type: ignore[return-value]


def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """Selective SSM scan ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t``.

    x: (batch, T, heads, head_dim); dt: (batch, T, heads); A: (heads,); B, C: (batch, T, state).
    """
    backend = resolve_backend(x.device)
    if backend == "naive":
        return ssd_scan_naive(x, dt, A, B, C)
    if backend == "triton":
        from .ssd.triton_chunk import ssd_scan_triton

        return ssd_scan_triton(x, dt, A, B, C, chunk_size)
    return ssd_scan_chunked(x, dt, A, B, C, chunk_size)


def bmojo_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_fade: torch.Tensor,
    v_fade: torch.Tensor,
    key_valid: torch.Tensor,
    memory_index: torch.Tensor,
    window: int,
    chunk_size: int,
    scale: float | None = None,
    query_start: int = 0,
) -> torch.Tensor:
    """Window + fading-band + eidetic-memory attention in one softmax (see ``bmojo_attention/naive.py``).

    ``q`` holds the queries at positions ``query_start .. T - 1`` only (all of them by default)."""
    backend = resolve_backend(q.device)
    if backend == "torch":
        args = (q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale)
        return bmojo_attention_chunked(*args, query_start=query_start)
    # The naive and fused kernels run every query: zero queries stand in for the skipped ones.
    all_queries = F.pad(q, (0, 0, query_start, 0)) if query_start else q  # no copy in the common case
    args = (all_queries, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale)
    if backend == "naive":
        return bmojo_attention_naive(*args)[:, :, query_start:]
    from .bmojo_attention.triton_fused import bmojo_attention_triton

    return bmojo_attention_triton(*args)[:, :, query_start:]
