"""Dense PyTorch form of B'MOJO attention for short sequences, O(T^2) time and memory.

Every query scores every token key and every fading key in two (T x T) products, and masks
select the window, the fading band and the eidetic memory. For the few dozen tokens of a
context of a few hundred points this does less work than the chunked form, which pads the keys
by whole chunks in front and builds its score blocks one key chunk at a time; past about a
hundred tokens the quadratic cost takes over and ``chunk.py`` is faster (the dispatcher in
``__init__.py`` picks by length, at the crossover measured by ``benchmarks/kernel_speed.py``).
Same semantics as ``naive.py``; unlike the reference, the products run in the inputs' dtype.
"""

import torch

from .naive import readable_masks


def dense_operands(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_fade: torch.Tensor,
    v_fade: torch.Tensor,
    key_valid: torch.Tensor,
    memory_index: torch.Tensor,
    window: int,
    chunk_size: int,
    query_start: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What both dense forms (this one and ``fused.py``) read: the queries, the token keys followed
    by the fading keys, their values (all in the promoted dtype of ``q`` and ``k``), and which of
    those 2T keys each query reads, (b, 1, queries, 2T)."""
    num_queries, length = q.shape[2], k.shape[2]
    if num_queries != length - query_start:
        raise ValueError(f"q holds {num_queries} queries, expected T - query_start = {length - query_start}")
    compute_dtype = torch.promote_types(q.dtype, k.dtype)
    token_mask, fade_mask = readable_masks(key_valid, memory_index, window, chunk_size, query_start)
    readable = torch.cat([token_mask, fade_mask], dim=-1)[:, None]
    keys = torch.cat([k, k_fade], dim=2).to(compute_dtype)
    values = torch.cat([v, v_fade], dim=2).to(compute_dtype)
    return q.to(compute_dtype), keys, values, readable


def bmojo_attention_dense(
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
    """Dense evaluation; see ``naive.bmojo_attention_naive`` for the semantics.

    ``q`` holds the queries at positions ``query_start .. T - 1`` (T = the keys' length). Score
    and value products run in the inputs' dtype, softmax statistics in float32
    (:func:`readable_softmax_values`)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out_dtype = q.dtype
    q, keys, values, readable = dense_operands(
        q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, query_start
    )
    scores = (q * scale) @ keys.transpose(-1, -2)
    return readable_softmax_values(scores, readable, values).to(out_dtype)


def readable_softmax_values(scores: torch.Tensor, readable: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Softmax of ``scores`` (..., q, K) over the keys ``readable`` marks, times ``values``
    (..., K, d); 0 for a query with no readable key.

    Masking uses the lowest value of the scores' own dtype (float32's overflows bf16), and the
    softmax takes bf16 scores as they are: its CPU and CUDA kernels keep the maximum and the sum of
    exponentials in float32 and round only the probabilities, which the value product reads in
    bf16 anyway. Casting the scores to float32 first gives the same probabilities and costs two
    copies of the largest tensor of the step and a float32 backward (forward and backward of the
    chunked attention at 513 tokens took about 1.6x as long, docs/precision.md). A query with no
    readable key is zeroed on the output, d numbers, instead of on its K probabilities."""
    probs = torch.softmax(scores.masked_fill(~readable, torch.finfo(scores.dtype).min), dim=-1)
    return (probs.to(values.dtype) @ values) * readable.any(-1, keepdim=True)
