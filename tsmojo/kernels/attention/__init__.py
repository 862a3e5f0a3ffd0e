"""B'MOJO attention: sliding window, fading band and eidetic memory read in one softmax.
``naive.py`` is the dense float32 reference; ``fused.py`` (inference: dense up to a few hundred
tokens, chunk by chunk beyond), ``dense.py`` (training on short sequences) and ``chunk.py``
(training on longer ones) are the PyTorch paths (CPU);
``triton.py`` the fused GPU kernels (FlashAttention-style forward and backward)."""

import torch
import torch.nn.functional as F

from ..dispatch import resolve_backend
from .chunk import bmojo_attention_chunked
from .dense import bmojo_attention_dense
from .fused import bmojo_attention_fused, bmojo_attention_fused_chunked
from .naive import bmojo_attention_naive

# Longest sequence (in tokens) the PyTorch backend evaluates densely. `benchmarks/kernel_speed.py
# --ops attention` on one Zen 4 thread, bf16, 4,096 tokens a call, window = chunk = 16: the
# dense form is 3-8x faster at 20-36 tokens (a context of 512 points is 36 tokens with the
# output patches), even at 68-100, and 1.6x slower at 132.
DENSE_MAX_LENGTH = 64
# Longest sequence the PyTorch backend evaluates with the fused kernel when no gradient is needed.
# Same benchmark, forward only: the fused form is 1.7-1.9x faster than the dense one at 35 tokens
# and than the chunked one at 131 (a 2,048-point context), even at 259 in bf16 and 1.1x slower
# there in float32. Its bf16 backward is slow, so training keeps the dense and chunked forms.
# Longer sequences without a gradient take the fused kernel chunk by chunk: bf16, forward only,
# 16 rows, it is 1.1x slower than the fused form over all keys at 132 tokens, 1.1x faster at 196
# and 1.6x faster at 260, and 1.7x faster than the chunked form at 2,052 tokens (2 rows).
FUSED_MAX_LENGTH = 192


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
    """Window + fading-band + eidetic-memory attention in one softmax (semantics in ``naive.py``).

    Args:
        q: (batch, heads, T - query_start, dim) queries at positions ``query_start .. T - 1``.
        k, v: (batch, heads, T, dim) token keys and values (window and memory reads).
        k_fade, v_fade: (batch, heads, T, dim) keys and values of the SSM outputs (fading band).
        key_valid: (batch, T) bool; False keys are never read.
        memory_index: (batch, ceil(T / chunk_size), M) int64 token positions, -1 for an empty slot.
        window: W, the window length; the fading band covers distances W .. 2W - 1.
        chunk_size: query chunk that shares one memory.
        scale: score scale, default ``dim ** -0.5``.
        query_start: first query position.

    Returns:
        (batch, heads, T - query_start, dim) in the dtype of ``q``. Inputs may be float32 or
        bfloat16: score products run in the input dtype, softmax statistics in float32.
    """
    backend = resolve_backend(q.device)
    if backend == "torch":
        args = (q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale)
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, k_fade, v_fade))
        if not needs_grad:
            if k.shape[2] <= FUSED_MAX_LENGTH:
                return bmojo_attention_fused(*args, query_start=query_start)
            return bmojo_attention_fused_chunked(*args, query_start=query_start)
        if k.shape[2] <= DENSE_MAX_LENGTH:
            return bmojo_attention_dense(*args, query_start=query_start)
        return bmojo_attention_chunked(*args, query_start=query_start)
    # The naive and fused kernels run every query: zero queries stand in for the skipped ones.
    all_queries = F.pad(q, (0, 0, query_start, 0)) if query_start else q  # no copy in the common case
    args = (all_queries, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale)
    if backend == "naive":
        return bmojo_attention_naive(*args)[:, :, query_start:]
    from .triton import bmojo_attention_triton

    return bmojo_attention_triton(*args)[:, :, query_start:]


__all__ = [
    "DENSE_MAX_LENGTH",
    "FUSED_MAX_LENGTH",
    "bmojo_attention",
    "bmojo_attention_chunked",
    "bmojo_attention_dense",
    "bmojo_attention_fused",
    "bmojo_attention_fused_chunked",
    "bmojo_attention_naive",
]
