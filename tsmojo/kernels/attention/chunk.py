"""Chunked PyTorch form of B'MOJO attention, O(T * (2 window + 2 chunk + M)) time and memory.

Queries are split into chunks of ``chunk_size``. A chunk's window keys lie in the few chunks
just before it and its fading band in the few before those, so every score block is one
(chunk x chunk) matrix product between the query chunk and a key chunk at a fixed offset.
Tensors are laid out chunk-major, ``(chunks, batch, heads, chunk, dim)``, so that the key chunks
at an offset are a contiguous slice; each query chunk's keys (window, band and memory, a few
chunks' worth) are gathered into one block, read by one product. Same semantics as ``naive.py``.
"""

import torch
import torch.nn.functional as F

from .dense import readable_softmax_values


def _chunk_major(tensor: torch.Tensor, front: int, num_chunks: int, chunk_size: int) -> torch.Tensor:
    """(b, h, T, d) -> (num_chunks, b, h, chunk_size, d): ``front`` zero steps in front, zero padding
    behind. With ``front = lead * chunk_size``, slice ``[lead - j : lead - j + n]`` is "the chunk j before"."""
    batch, heads, length, dim = tensor.shape
    padded = F.pad(tensor, (0, 0, front, num_chunks * chunk_size - front - length))
    return padded.view(batch, heads, num_chunks, chunk_size, dim).permute(2, 0, 1, 3, 4).contiguous()


def _offsets(low: int, high: int, chunk_size: int) -> list[int]:
    """Chunk offsets j >= 0 holding some key at a query-key distance in [low, high]."""
    # Distances covered by offset j run from j*chunk - (chunk - 1) to j*chunk + (chunk - 1).
    first = max(0, -(-(low - chunk_size + 1) // chunk_size))
    last = (high + chunk_size - 1) // chunk_size
    return list(range(first, last + 1))


def chunked_operands(
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
    """What both chunked forms (this one and ``fused.bmojo_attention_fused_chunked``) read, chunk
    by chunk, in the promoted dtype of ``q`` and ``k``: the query chunks (c, b, h, chunk, d), the
    keys each chunk may read (c, b, h, K, d) and their values, and which of them each query reads,
    (c, b, 1, chunk, K). The K keys are the token-key chunks that hold the window, the fading-key
    chunks that hold the band, and the chunk's memory slots; c counts the chunks from the first
    query's, whose first ``query_start % chunk_size`` queries are padding."""
    batch, heads, num_queries, dim = q.shape
    length = k.shape[2]
    if num_queries != length - query_start:
        raise ValueError(f"q holds {num_queries} queries, expected T - query_start = {length - query_start}")
    num_chunks = -(-length // chunk_size)
    first_chunk = query_start // chunk_size
    skipped = query_start - first_chunk * chunk_size  # queries of the first chunk before query_start
    query_chunks = num_chunks - first_chunk
    window_offsets = _offsets(0, window - 1, chunk_size)
    band_offsets = _offsets(window, 2 * window - 1, chunk_size)
    lead = max(window_offsets + band_offsets)

    # Products run in the inputs' dtype (bf16 products are several times faster on CPUs with
    # native bf16).
    compute_dtype = torch.promote_types(q.dtype, k.dtype)
    q, k, v, k_fade, v_fade = (t.to(compute_dtype) for t in (q, k, v, k_fade, v_fade))
    queries = _chunk_major(q, skipped, query_chunks, chunk_size)  # (c, b, h, q, d)
    front, key_chunks = lead * chunk_size, lead + num_chunks
    keys, values = _chunk_major(k, front, key_chunks, chunk_size), _chunk_major(v, front, key_chunks, chunk_size)
    fade_keys = _chunk_major(k_fade, front, key_chunks, chunk_size)
    fade_values = _chunk_major(v_fade, front, key_chunks, chunk_size)
    valid = F.pad(key_valid, (lead * chunk_size, (num_chunks * chunk_size) - length), value=False)
    valid = valid.view(batch, lead + num_chunks, chunk_size).transpose(0, 1)  # (lead + c, b, s)

    # Query r of chunk c and key s of chunk c - j are (j * chunk + r - s) positions apart.
    row = torch.arange(chunk_size, device=q.device)
    distance = row[:, None] - row[None, :]

    def at(tensor: torch.Tensor, offset: int) -> torch.Tensor:
        return tensor[lead - offset + first_chunk : lead - offset + num_chunks]

    key_blocks, masks, value_blocks = [], [], []
    for offsets, chunked_keys, chunked_values, low in (
        (window_offsets, keys, values, 0),
        (band_offsets, fade_keys, fade_values, window),
    ):
        for offset in offsets:
            gap = distance + offset * chunk_size
            in_range = (gap >= low) & (gap < low + window)  # (q, s)
            key_blocks.append(at(chunked_keys, offset))
            masks.append(in_range & at(valid, offset)[:, :, None, :])  # (c, b, q, s)
            value_blocks.append(at(chunked_values, offset))

    # Eidetic memory: a slot is readable if filled, valid, and older than the query's window.
    memory_index = memory_index[:, first_chunk:num_chunks]
    num_slots = memory_index.shape[-1]
    slot = memory_index.clamp(min=0)  # (b, c, M)
    gather = slot.reshape(batch, 1, query_chunks * num_slots, 1).expand(batch, heads, -1, dim)

    def memory_chunks(tensor: torch.Tensor) -> torch.Tensor:
        gathered = torch.gather(tensor, 2, gather).view(batch, heads, query_chunks, num_slots, dim)
        return gathered.permute(2, 0, 1, 3, 4)

    chunk_start = torch.arange(first_chunk, num_chunks, device=q.device)[:, None] * chunk_size
    query_position = chunk_start + row[None, :]  # (c, q)
    memory_ok = (memory_index >= 0) & torch.gather(key_valid, 1, slot.reshape(batch, -1)).view_as(slot)
    memory_ok = memory_ok.transpose(0, 1)[:, :, None, :] & (
        slot.transpose(0, 1)[:, :, None, :] <= query_position[:, None, :, None] - window
    )  # (c, b, q, M)
    key_blocks.append(memory_chunks(k))
    masks.append(memory_ok)
    value_blocks.append(memory_chunks(v))

    readable = torch.cat(masks, dim=-1)[:, :, None]  # (c, b, 1, q, K)
    return queries, torch.cat(key_blocks, dim=-2), torch.cat(value_blocks, dim=-2), readable


def unchunk(out: torch.Tensor, query_start: int, num_queries: int) -> torch.Tensor:
    """(c, b, h, chunk, d) outputs of :func:`chunked_operands`' query chunks -> (b, h, num_queries, d),
    without the padding queries in front of ``query_start`` and behind the last key."""
    chunks, batch, heads, chunk_size, dim = out.shape
    out = out.permute(1, 2, 0, 3, 4).reshape(batch, heads, chunks * chunk_size, dim)
    skipped = query_start % chunk_size
    return out[:, :, skipped : skipped + num_queries]


def bmojo_attention_chunked(
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
    """Chunked evaluation; see ``naive.bmojo_attention_naive`` for the semantics.

    ``q`` may hold only the queries at positions ``query_start .. T - 1`` (T = the keys' length):
    chunks before the first query's are skipped, which is how a model's last layer computes just
    the positions its head reads. Softmax statistics stay in float32 (``dense.readable_softmax_values``)."""
    num_queries, out_dtype = q.shape[2], q.dtype
    if num_queries == 0:
        if num_queries != k.shape[2] - query_start:
            raise ValueError(f"q holds no query, expected T - query_start = {k.shape[2] - query_start}")
        return q * 0.0  # an empty result that is still part of the autograd graph
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    queries, keys, values, readable = chunked_operands(
        q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, query_start
    )
    scores = (queries * scale) @ keys.transpose(-1, -2)  # (c, b, h, q, K)
    out = readable_softmax_values(scores, readable, values)
    return unchunk(out, query_start, num_queries).to(out_dtype)
