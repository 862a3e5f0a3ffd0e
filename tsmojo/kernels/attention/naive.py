"""Quadratic reference for B'MOJO attention: window, fading band and eidetic memory in one softmax.

Query ``i`` reads, in a single softmax:
  * window tokens ``k[j], v[j]`` for ``i - W < j <= i``;
  * fading tokens ``k_fade[j], v_fade[j]`` (projections of the SSM output) for ``i - 2W < j <= i - W``;
  * memory tokens ``k[m], v[m]`` for every ``m`` in ``memory_index[b, i // chunk_size]`` with
    ``m <= i - W`` (older than the window, so no token is counted twice).
Keys at positions where ``key_valid`` is False are never read. A query with no readable key
returns zeros.

Shapes: q, k, v, k_fade, v_fade (batch, heads, T, dim); key_valid (batch, T) bool;
memory_index (batch, num_chunks, M) int64 with -1 for an empty slot.
"""

import torch

# A finite floor rather than -inf keeps softmax and its gradient free of NaN when a query
# has no readable key; such rows are zeroed explicitly.
NEG = torch.finfo(torch.float32).min


def memory_mask(memory_index: torch.Tensor, length: int, window: int, chunk_size: int) -> torch.Tensor:
    """Dense (batch, T, T) mask: query i may read memory token j."""
    batch = memory_index.shape[0]
    positions = torch.arange(length, device=memory_index.device)
    chunk_of_query = positions // chunk_size
    slots = memory_index[:, chunk_of_query]  # (batch, T, M)
    dense = torch.zeros(batch, length, length + 1, dtype=torch.bool, device=memory_index.device)
    # Empty slots (-1) are scattered into a spare last column and dropped.
    dense.scatter_(2, torch.where(slots < 0, length, slots), True)
    dense = dense[:, :, :length]
    older_than_window = positions[None, :] <= positions[:, None] - window
    return dense & older_than_window


def readable_masks(
    key_valid: torch.Tensor, memory_index: torch.Tensor, window: int, chunk_size: int, query_start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which keys each query ``query_start .. T - 1`` reads: (batch, queries, T) masks over the token
    keys (window and memory) and over the fading keys (band)."""
    length = key_valid.shape[1]
    positions = torch.arange(length, device=key_valid.device)
    delta = positions[query_start:, None] - positions[None, :]
    in_window = (delta >= 0) & (delta < window)
    in_band = (delta >= window) & (delta < 2 * window)
    memory = memory_mask(memory_index, length, window, chunk_size)[:, query_start:]
    valid = key_valid[:, None, :]
    return (in_window | memory) & valid, in_band & valid


def bmojo_attention_naive(
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
) -> torch.Tensor:
    """Dense O(T^2) evaluation in float32 whatever the input dtype (autocast off); for tests only."""
    with torch.autocast(q.device.type, enabled=False):
        return _naive(q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale)


def _naive(q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    token_mask, fade_mask = (mask[:, None] for mask in readable_masks(key_valid, memory_index, window, chunk_size))

    scores_token = torch.einsum("bhid,bhjd->bhij", q.float(), k.float()) * scale
    scores_fade = torch.einsum("bhid,bhjd->bhij", q.float(), k_fade.float()) * scale
    scores = torch.cat(
        [scores_token.masked_fill(~token_mask, NEG), scores_fade.masked_fill(~fade_mask, NEG)],
        dim=-1,
    )
    has_key = (token_mask.any(-1) | fade_mask.any(-1))[..., None]
    probs = torch.softmax(scores, dim=-1) * has_key
    values = torch.cat([v.float(), v_fade.float()], dim=2)
    return torch.einsum("bhij,bhjd->bhid", probs, values).to(q.dtype)
