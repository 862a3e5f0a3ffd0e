"""B'MOJO attention through PyTorch's fused ``scaled_dot_product_attention``, O(T^2) like
``dense.py``.

The window, fading band and eidetic memory become one boolean mask over the token keys followed
by the fading keys, and a single fused kernel (on CPU, PyTorch's FlashAttention-style kernel:
bf16 products, float32 softmax statistics and accumulation) reads them. It never materialises the
(T x 2T) scores in float32, so without a gradient it is about twice as fast as ``dense.py`` on a
Zen 4 core and beats the chunked form up to a few hundred tokens. Its bf16 backward on CPU is
slow (about 4x the dense form's), so the dispatcher uses it for inference only; it still has a
correct gradient. Same semantics as ``naive.py``.
"""

import torch
import torch.nn.functional as F

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
