"""Selective state-space scan (Mamba-2 / SSD form): ``naive.py`` is the sequential reference,
``chunk.py`` the chunked PyTorch path (CPU), ``triton.py`` the fused GPU kernels."""

import torch

from ..dispatch import resolve_backend
from .chunk import ssd_scan_chunked
from .naive import ssd_scan_naive


def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """Selective SSM scan ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t``.

    Args:
        x: (batch, T, heads, head_dim) inputs, float32 or bfloat16.
        dt: (batch, T, heads) step sizes (0 skips a step).
        A: (heads,) negative decay rates.
        B, C: (batch, T, state) input and output projections.
        chunk_size: steps per chunk of the chunked and Triton paths.

    Returns:
        (batch, T, heads, head_dim) in the dtype of ``x``. Decays and the state are accumulated in
        float32 whatever the input dtype.
    """
    backend = resolve_backend(x.device)
    if backend == "naive":
        return ssd_scan_naive(x, dt, A, B, C)
    if backend == "triton":
        from .triton import ssd_scan_triton

        return ssd_scan_triton(x, dt, A, B, C, chunk_size)
    return ssd_scan_chunked(x, dt, A, B, C, chunk_size)


__all__ = ["ssd_scan", "ssd_scan_chunked", "ssd_scan_naive"]
