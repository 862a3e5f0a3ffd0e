"""Chunked PyTorch form of the SSD scan: quadratic inside a chunk, a linear recurrence across chunks.

This is the CPU path used for training and inference. It computes exactly the recurrence of
``naive.ssd_scan_naive`` and is differentiable through plain autograd.
"""

import torch
import torch.nn.functional as F


def _pad_time(tensor: torch.Tensor, padding: int) -> torch.Tensor:
    if padding == 0:
        return tensor
    pad = [0, 0] * (tensor.dim() - 2) + [0, padding]
    return F.pad(tensor, pad)


def ssd_scan_chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Chunked SSD scan. Same inputs and output as :func:`ssd_scan_naive`.

    Runs in float32 whatever the input dtype, with autocast off: the decays are exponentials of
    cumulative sums, and bf16's 8-bit mantissa loses them within a chunk. Its products are
    (chunk x chunk) and (chunk x state), a small share of a model's matrix work.
    """
    with torch.autocast(x.device.type, enabled=False):
        return _scan(x, dt, A, B, C, chunk_size)


def _scan(x, dt, A, B, C, chunk_size):
    batch, length, heads, head_dim = x.shape
    if length == 0:
        return x.new_zeros(x.shape)
    padding = (-length) % chunk_size
    # Padded steps have dt = 0: they neither decay nor feed the state, so they change nothing.
    x_, dt_, B_, C_ = (_pad_time(t.float(), padding) for t in (x, dt, B, C))
    num_chunks = x_.shape[1] // chunk_size
    # Head-major layout (b, c, h, q, .): every product below is a batched matrix product over
    # (b, c, h) with no permute-and-copy inside it; on CPU those copies cost as much as the
    # products at tsmojo-mini's sizes.
    dt_ = dt_.view(batch, num_chunks, chunk_size, heads).transpose(2, 3)  # (b, c, h, q)
    x_ = x_.view(batch, num_chunks, chunk_size, heads, head_dim).transpose(2, 3)  # (b, c, h, q, p)
    B_ = B_.view(batch, num_chunks, 1, chunk_size, -1)  # (b, c, 1, q, n): shared by the heads
    C_ = C_.view(batch, num_chunks, 1, chunk_size, -1)

    log_decay = torch.cumsum(dt_ * A.float()[:, None], dim=-1)  # (b, c, h, q), non-increasing in q
    # segment[i, j] = sum of log decays in (j, i]; -inf above the diagonal before exp.
    segment = log_decay[..., :, None] - log_decay[..., None, :]  # (b, c, h, i, j)
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=x.device).tril()
    weights = torch.exp(segment.masked_fill_(~causal, float("-inf"))) * (C_ @ B_.transpose(-1, -2))
    dt_x = dt_[..., None] * x_  # (b, c, h, q, p)
    y = weights @ dt_x

    if num_chunks > 1:
        # State contributed by each chunk, decayed to the chunk's end: (b, c, h, p, n).
        decay_to_end = torch.exp(log_decay[..., -1:] - log_decay)  # (b, c, h, q)
        chunk_states = (decay_to_end[..., None] * dt_x).transpose(-1, -2) @ B_
        chunk_decay = torch.exp(log_decay[..., -1])[..., None, None]  # (b, c, h, 1, 1)
        # Unbound once, not indexed per chunk: the backward of each index would write a whole
        # zero tensor of every chunk's state, quadratic in the number of chunks (a third of a
        # training step on 8,192-point contexts); unbind's backward stacks the gradients once.
        contributions, decays = chunk_states.unbind(1), chunk_decay.unbind(1)
        states = [torch.zeros_like(contributions[0])]
        for contribution, decay in zip(contributions[:-1], decays[:-1]):
            # One fused op per chunk: this loop runs T / chunk times per layer.
            states.append(torch.addcmul(contribution, decay, states[-1]))
        incoming = torch.stack(states, dim=1)  # state entering each chunk: (b, c, h, p, n)
        y = y + (C_ @ incoming.transpose(-1, -2)) * torch.exp(log_decay)[..., None]

    y = y.transpose(2, 3).reshape(batch, num_chunks * chunk_size, heads, head_dim)
    return y[:, :length].to(x.dtype)
