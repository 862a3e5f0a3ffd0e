"""Chunked PyTorch form of B'MOJO attention, O(T * (chunk + 2W + M)) time and memory.

Each block of ``chunk_size`` queries gathers one contiguous key span that covers both its
window and its fading band, plus its memory slots. Same semantics as ``naive.py``.
"""

import torch
import torch.nn.functional as F

from .naive import NEG


def _spans(tensor: torch.Tensor, lead: int, chunk_size: int, num_chunks: int) -> torch.Tensor:
    """(b, h, T, d) -> (b, h, num_chunks, chunk_size + lead, d): for each chunk, the ``lead``
    positions before it and the chunk itself."""
    padded_length = num_chunks * chunk_size
    tensor = F.pad(tensor, (0, 0, lead, padded_length - tensor.shape[2]))
    return tensor.unfold(2, chunk_size + lead, chunk_size).transpose(-1, -2)


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
) -> torch.Tensor:
    """Chunked evaluation; see ``naive.bmojo_attention_naive`` for the semantics."""
    batch, heads, length, dim = q.shape
    if length == 0:
        return q.new_zeros(q.shape)
    scale = dim**-0.5 if scale is None else scale
    num_chunks = -(-length // chunk_size)
    padded_length = num_chunks * chunk_size
    lead = 2 * window - 1
    span = chunk_size + lead

    q_chunks = F.pad(q.float(), (0, 0, 0, padded_length - length)).view(batch, heads, num_chunks, chunk_size, dim)
    k_span, v_span = _spans(k.float(), lead, chunk_size, num_chunks), _spans(v.float(), lead, chunk_size, num_chunks)
    kf_span = _spans(k_fade.float(), lead, chunk_size, num_chunks)
    vf_span = _spans(v_fade.float(), lead, chunk_size, num_chunks)
    valid_padded = F.pad(key_valid, (lead, padded_length - length), value=False)
    valid_span = valid_padded.unfold(1, span, chunk_size)  # (b, c, span)

    # Key slot s of chunk c sits at position c*chunk - lead + s; query r at c*chunk + r.
    delta = torch.arange(chunk_size, device=q.device)[:, None] + lead - torch.arange(span, device=q.device)[None, :]
    in_window = (delta >= 0) & (delta < window)
    in_band = (delta >= window) & (delta < 2 * window)
    valid_span = valid_span[:, None, :, None, :]  # (b, 1, c, 1, span)

    scores_window = torch.einsum("bhcqd,bhcsd->bhcqs", q_chunks, k_span) * scale
    scores_band = torch.einsum("bhcqd,bhcsd->bhcqs", q_chunks, kf_span) * scale
    scores_local = torch.where(in_window, scores_window, scores_band)
    scores_local = scores_local.masked_fill(~((in_window | in_band) & valid_span), NEG)

    # Memory: gather keys per chunk; a slot is readable if filled, valid, and older than the window.
    num_slots = memory_index.shape[-1]
    slot = memory_index.clamp(min=0)  # (b, c, M)
    gather = slot.view(batch, 1, num_chunks * num_slots, 1).expand(batch, heads, -1, dim)
    k_mem = torch.gather(k.float(), 2, gather).view(batch, heads, num_chunks, num_slots, dim)
    v_mem = torch.gather(v.float(), 2, gather).view(batch, heads, num_chunks, num_slots, dim)
    query_position = (torch.arange(num_chunks, device=q.device)[:, None] * chunk_size
                      + torch.arange(chunk_size, device=q.device)[None, :])  # (c, q)
    mem_ok = (memory_index >= 0) & torch.gather(key_valid, 1, slot.view(batch, -1)).view_as(slot)
    mem_ok = mem_ok[:, :, None, :] & (slot[:, :, None, :] <= query_position[None, :, :, None] - window)
    scores_mem = torch.einsum("bhcqd,bhcmd->bhcqm", q_chunks, k_mem) * scale
    scores_mem = scores_mem.masked_fill(~mem_ok[:, None], NEG)

    local_ok = (in_window | in_band) & valid_span
    has_key = (local_ok.any(-1) | mem_ok.any(-1)[:, None])[..., None]
    probs = torch.softmax(torch.cat([scores_local, scores_mem], dim=-1), dim=-1) * has_key
    probs_local, probs_mem = probs[..., :span], probs[..., span:]
    out = (
        torch.einsum("bhcqs,bhcsd->bhcqd", probs_local * in_window, v_span)
        + torch.einsum("bhcqs,bhcsd->bhcqd", probs_local * in_band, vf_span)
        + torch.einsum("bhcqm,bhcmd->bhcqd", probs_mem, v_mem)
    )
    return out.reshape(batch, heads, padded_length, dim)[:, :, :length].to(q.dtype)
