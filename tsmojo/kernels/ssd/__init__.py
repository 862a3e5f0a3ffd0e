"""Selective state-space scan (Mamba-2 / SSD form): ``naive.py`` is the sequential reference,
``chunk.py`` the chunked PyTorch path (CPU), ``triton.py`` the fused GPU kernels."""

import torch

from ..dispatch import resolve_backend
from .chunk import ssd_scan_chunked
from .naive import ssd_scan_naive

# Longest sequence the PyTorch backend scans as a single chunk (quadratic in T, no inter-chunk
# states). A chunk's state is heads x head_dim x state numbers, more than its tokens hold at
# tsmojo-mini's sizes, so for short sequences skipping the states pays. One Zen 4 thread, bf16,
# 4,096 tokens a call, chunk 16 otherwise: 3-7x faster at 20-52 tokens (forward), still faster
# forward + backward at 68, slower from about 100 on.
SINGLE_CHUNK_MAX_LENGTH = 64


def ssd_scan(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, chunk_size: int = 64
) -> torch.Tensor:
    """Selective SSM scan ``h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T``, ``y_t = h_t C_t``.

    Args:
        x: (batch, T, heads, head_dim) inputs, float32 or bfloat16.
        dt: (batch, T, heads) step sizes (0 skips a step).
        A: (heads,) negative decay rates.
        B, C: (batch, T, state) input and output projections.
        chunk_size: steps per chunk of the chunked and Triton paths (the PyTorch path scans
            sequences of up to SINGLE_CHUNK_MAX_LENGTH steps as one chunk). It changes no result.

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
    if x.shape[1] <= SINGLE_CHUNK_MAX_LENGTH:
        chunk_size = max(chunk_size, x.shape[1])
    return ssd_scan_chunked(x, dt, A, B, C, chunk_size)


__all__ = ["SINGLE_CHUNK_MAX_LENGTH", "ssd_scan", "ssd_scan_chunked", "ssd_scan_naive"]
