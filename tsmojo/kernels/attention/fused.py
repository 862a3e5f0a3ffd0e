"""B'MOJO attention through PyTorch's fused ``scaled_dot_product_attention``: over every key
(``bmojo_attention_fused``, O(T^2) like ``dense.py``) or chunk by chunk
(``bmojo_attention_fused_chunked``, linear in T like ``chunk.py``).

The window, fading band and eidetic memory become one boolean mask over the token keys followed
by the fading keys, and a single fused kernel (on CPU, PyTorch's FlashAttention-style kernel:
bf16 products, float32 softmax statistics and accumulation) reads them. It never materialises the
(T x 2T) scores in float32, so without a gradient it is about twice as fast as ``dense.py`` on a
Zen 4 core and beats the chunked form up to a few hundred tokens. Its bf16 backward on CPU is
slow (about 4x the dense form's), so the dispatcher uses it for inference only; it still has a
correct gradient. The chunked variant hands the kernel each query chunk with the few chunks of
keys it may read (``chunk.chunked_operands``), so long contexts pay neither the quadratic cost
nor the chunked form's float32 scores. Same semantics as ``naive.py``.
"""

import torch
import torch.nn.functional as F

from .chunk import chunked_operands, unchunk
from .dense import dense_operands


def bmojo_attention_fused(
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
    """Fused dense evaluation; see ``naive.bmojo_attention_naive`` for the semantics.

    ``q`` holds the queries at positions ``query_start .. T - 1`` (T = the keys' length)."""
    out_dtype = q.dtype
    q, keys, values, readable = dense_operands(
        q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, query_start
    )
    has_key = readable.any(-1, keepdim=True)
    # A query with no readable key would take a softmax over nothing (NaN): it reads every key
    # instead and is zeroed afterwards, as the reference defines it.
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=readable | ~has_key, scale=scale)
    return (out * has_key).to(out_dtype)


def bmojo_attention_fused_chunked(
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
    """Fused evaluation one query chunk at a time; see ``naive.bmojo_attention_naive`` for the
    semantics. ``q`` holds the queries at positions ``query_start .. T - 1`` (T = the keys' length)."""
    num_queries, out_dtype = q.shape[2], q.dtype
    if num_queries == 0:  # nothing to chunk: the dense form checks the shapes and returns (b, h, 0, d)
        args = (q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale)
        return bmojo_attention_fused(*args, query_start=query_start)
    queries, keys, values, readable = chunked_operands(
        q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, query_start
    )
    chunks, batch, heads, size, dim = queries.shape
    has_key = readable.any(-1, keepdim=True)
    # The kernel takes one batch dimension: chunks and rows are folded into it.
    out = F.scaled_dot_product_attention(
        queries.view(chunks * batch, heads, size, dim),
        keys.view(chunks * batch, heads, -1, dim),
        values.view(chunks * batch, heads, -1, dim),
        attn_mask=(readable | ~has_key).view(chunks * batch, 1, size, -1),
        scale=scale,
    )
    out = out.view(chunks, batch, heads, size, dim) * has_key
    return unchunk(out, query_start, num_queries).to(out_dtype)
