"""Building blocks of the tsmojo encoder: the B'MOJO time-mixing layer, group attention,
the feed-forward block, and the eidetic-memory selection they rely on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tsmojo.config import TSMojoConfig
from tsmojo.kernels import bmojo_attention, ssd_scan

# Row roles: what a row of a batch is to its group.
TARGET, PAST_COVARIATE, FUTURE_COVARIATE = 0, 1, 2


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-written backward: it reuses the normalised input saved by the forward
    and needs about half the passes over memory of autograd through the expression (2x faster
    forward + backward on CPU at tsmojo-mini's sizes; the same numbers)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        inverse_rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        normalised = x * inverse_rms
        ctx.save_for_backward(normalised, inverse_rms, weight)
        return normalised * weight

    @staticmethod
    def backward(ctx, grad):
        normalised, inverse_rms, weight = ctx.saved_tensors
        grad_normalised = grad * weight
        # d/dx of x / rms(x): the gradient minus its component along the normalised input.
        along = (grad_normalised * normalised).mean(-1, keepdim=True)
        grad_x = torch.addcmul(grad_normalised, normalised, along, value=-1.0) * inverse_rms
        grad_weight = (grad * normalised).sum(tuple(range(grad.dim() - 1)))
        return grad_x.to(normalised.dtype), grad_weight.to(weight.dtype), None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
            return _RMSNormFunction.apply(x, self.weight, self.eps)
        # Without a gradient, PyTorch's fused kernel: 2x faster than the expression on CPU.
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


class ResidualMLP(nn.Module):
    """Two-layer MLP with a linear skip, used for patch embedding and the quantile head."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_in, d_hidden)
        self.out = nn.Linear(d_hidden, d_out)
        self.skip = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.silu(self.hidden(x))) + self.skip(x)


def rotary_frequencies(half: int, max_period: float | None, device: torch.device) -> torch.Tensor:
    """Angular frequencies (half,) of the rotary embedding.

    ``None``: the usual base-10000 ladder, whose slow rotations reach phases at long distances
    that short training contexts never showed. A ``max_period`` spreads the periods
    geometrically from 2*pi to ``max_period`` tokens instead, so every query-key distance shows
    phases that training saw."""
    steps = torch.arange(half, device=device, dtype=torch.float32)
    if max_period is None:
        return 10000.0 ** (-steps / half)
    return (2 * math.pi / max_period) ** (steps / max(half - 1, 1))


def rotary_tables(
    positions: torch.Tensor, dim: int, max_period: float | None, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (T, 1, dim) cosines and signed sines that :func:`rotary` applies at integer ``positions``
    (T,), in ``dtype``. Computed once per layer and shared by its queries and both key sets."""
    half = dim // 2
    angles = positions.float()[:, None] * rotary_frequencies(half, max_period, positions.device)[None, :]
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], dim=-1)[:, None, :].to(dtype), torch.cat([-sin, sin], dim=-1)[:, None, :].to(dtype)


def rotary(x: torch.Tensor, tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary position embedding of ``x`` (..., T, heads, dim) with the :func:`rotary_tables` of its
    positions. Only offsets between query and key matter, so left padding never changes a result."""
    cos, sin = tables
    # (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) as full-width products, the second fused
    # into the sum: fewer passes over memory than rotating the halves separately. Rolling by
    # half a head swaps the halves in one pass (concatenating slices takes two, and its
    # backward zero-fills a full tensor per slice).
    return torch.addcmul(x * cos, torch.roll(x, x.shape[-1] // 2, dims=-1), sin)


@torch.no_grad()
def select_memory(
    innovation: torch.Tensor, candidate: torch.Tensor, chunk_size: int, topk: int, memory_size: int
) -> torch.Tensor:
    """Eidetic memory slots for every chunk of queries.

    The ``topk`` most surprising candidate tokens of each chunk enter the memory; chunk ``c``
    sees the ``memory_size`` most surprising entries contributed by chunks ``< c``.
    Returns (batch, num_chunks, memory_size) token positions, -1 for an empty slot.
    """
    batch, length = innovation.shape
    num_chunks = -(-length // chunk_size)
    memory = torch.full((batch, num_chunks, memory_size), -1, dtype=torch.long, device=innovation.device)
    if memory_size == 0 or topk == 0 or num_chunks < 2:
        return memory
    score = innovation.float().masked_fill(~candidate, float("-inf"))
    score = F.pad(score, (0, num_chunks * chunk_size - length), value=float("-inf"))
    per_chunk = min(topk, chunk_size, memory_size)
    values, index = score.view(batch, num_chunks, chunk_size).topk(per_chunk, dim=-1)
    index = index + torch.arange(num_chunks, device=innovation.device)[None, :, None] * chunk_size
    values = F.pad(values, (0, memory_size - per_chunk), value=float("-inf"))
    index = F.pad(index, (0, memory_size - per_chunk), value=-1)
    # Prefix top-M by a doubling scan: the best M of a union of disjoint ranges is the best M
    # of their best Ms, so log2(chunks) vectorised merges replace a loop over the chunks.
    shift = 1
    while shift < num_chunks:
        earlier_values = F.pad(values[:, :-shift], (0, 0, shift, 0), value=float("-inf"))
        earlier_index = F.pad(index[:, :-shift], (0, 0, shift, 0), value=-1)
        values, order = torch.cat([values, earlier_values], dim=-1).topk(memory_size, dim=-1)
        index = torch.gather(torch.cat([index, earlier_index], dim=-1), -1, order)
        shift *= 2
    # Chunk c reads what chunks < c contributed.
    memory[:, 1:] = index[:, :-1].masked_fill(torch.isinf(values[:, :-1]), -1)
    return memory


class BMojoTimeMixing(nn.Module):
    """Hybrid-memory mixing along one row's patch tokens.

    A selective SSM (fading memory) runs over the tokens; tokens it predicted badly are kept
    verbatim (eidetic memory); each query then reads its sliding window, the SSM outputs in the
    band just before the window, and the memory, all in one softmax.
    """

    def __init__(self, config: TSMojoConfig) -> None:
        super().__init__()
        d, heads, state = config.d_model, config.num_heads, config.ssm_state
        self.config = config
        self.heads, self.head_dim, self.state = heads, d // heads, state
        self.ssm_in = nn.Linear(d, d + heads + 2 * state)
        # Mamba-2 initialisation: dt in [1e-3, 1e-1] and A in [1, 16] give a spread of time scales.
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.linspace(1.0, 16.0, heads)))
        self.D = nn.Parameter(torch.ones(heads))
        self.ssm_norm = RMSNorm(d)
        self.readout = nn.Linear(d, d)  # g(f_{t-1}): the SSM's guess of the next token
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.fade_kv = nn.Linear(d, 2 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(
        self, u: torch.Tensor, sequence_valid: torch.Tensor, memory_candidate: torch.Tensor, output_from: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """u: (B, T, d) normalised tokens. Returns the mixed tokens at positions ``output_from ..
        T - 1`` and the mean innovation (the readout's prediction loss, an auxiliary training signal).
        Keys, values, the SSM and the memory always cover all T tokens."""
        batch, length, d = u.shape
        cfg = self.config
        xs, dt, B, C = self.ssm_in(u).split([d, self.heads, self.state, self.state], dim=-1)
        # Invalid tokens (padding, fully-missing patches) get dt = 0: the state skips them.
        dt = F.softplus(dt + self.dt_bias) * sequence_valid[..., None]
        xs = xs.view(batch, length, self.heads, self.head_dim)
        A = -torch.exp(self.A_log.float())
        y = ssd_scan(xs, dt, A, B, C, cfg.chunk_size) + self.D[:, None] * xs
        # Zero at invalid tokens so that padding never reaches the innovation of the next token.
        fading = self.ssm_norm(y.reshape(batch, length, d)) * sequence_valid[..., None]

        guess = self.readout(F.pad(fading[:, :-1], (0, 0, 1, 0)))
        innovation = (u.detach() - guess).pow(2).mean(-1)  # (B, T)
        weight = memory_candidate.float()
        innovation_loss = (innovation * weight).sum() / weight.sum().clamp(min=1.0)
        memory_index = select_memory(innovation, memory_candidate, cfg.chunk_size, cfg.memory_topk, cfg.memory_size)

        # Counted back from the last token, so a series' tokens get the same rotary angles whatever
        # left padding its batch adds: rotary depends only on offsets in exact arithmetic, but bf16
        # rounds cos and sin differently at different angles, which made a bf16 forecast depend on
        # the longest series in its batch (by up to 0.6% of the series' scale).
        positions = torch.arange(length, device=u.device) - (length - 1)
        heads, head_dim = self.heads, self.head_dim
        query_weight, key_value_weight = self.qkv.weight.split([d, 2 * d])
        q = F.linear(u[:, output_from:], query_weight).view(batch, length - output_from, heads, head_dim)
        k, v = F.linear(u, key_value_weight).view(batch, length, 2 * heads, head_dim).split(heads, dim=2)
        k_fade, v_fade = self.fade_kv(fading).view(batch, length, 2 * heads, head_dim).split(heads, dim=2)
        cos, sin = rotary_tables(positions, head_dim, cfg.rotary_max_period, q.dtype)
        q = rotary(q, (cos[output_from:], sin[output_from:])).transpose(1, 2)
        k, v = rotary(k, (cos, sin)).transpose(1, 2), v.transpose(1, 2)
        k_fade, v_fade = rotary(k_fade, (cos, sin)).transpose(1, 2), v_fade.transpose(1, 2)
        mixed = bmojo_attention(
            q, k, v, k_fade, v_fade, sequence_valid, memory_index, cfg.window, cfg.chunk_size, query_start=output_from
        )
        return self.out(mixed.transpose(1, 2).reshape(batch, length - output_from, d)), innovation_loss


@dataclass
class GroupLayout:
    """Rows of a batch arranged by group, for attention across rows.

    ``buckets`` holds, for each padded group size ``s > 1`` (a power of two), an index tensor
    (num_groups, s) of row numbers with -1 for padding. Singleton rows need no attention partner,
    so they are not listed. Cost is O(sum of group sizes squared), never O(batch^2).
    """

    buckets: list[torch.Tensor]

    @classmethod
    def from_group_ids(cls, group_ids: torch.Tensor) -> GroupLayout:
        ids = group_ids.detach().cpu()
        _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        buckets: dict[int, list[torch.Tensor]] = {}
        for start, count in zip(starts.tolist(), counts.tolist()):
            if count < 2:
                continue
            size = 1 << (count - 1).bit_length()
            rows = F.pad(order[start : start + count], (0, size - count), value=-1)
            buckets.setdefault(size, []).append(rows)
        device = group_ids.device
        return cls([torch.stack(rows).to(device) for _, rows in sorted(buckets.items())])


class GroupAttention(nn.Module):
    """Attention across the rows of a group at each patch position (no positional encoding
    across rows). A row reads the rows of its group observed at that position, and itself."""

    def __init__(self, config: TSMojoConfig) -> None:
        super().__init__()
        d = config.d_model
        self.heads, self.head_dim = config.num_heads, d // config.num_heads
        self.qk = nn.Linear(d, 2 * d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, observed: torch.Tensor, layout: GroupLayout) -> torch.Tensor:
        if not layout.buckets:
            # Every row is alone in its group and reads only its own value: out(v(x)) in one product.
            return F.linear(x, self.out.weight @ self.v.weight)
        batch, length, d = x.shape
        values = self.v(x).clone()
        for rows in layout.buckets:
            groups, size = rows.shape
            present = rows >= 0
            members = rows.clamp(min=0)
            xg = x[members]  # (G, s, T, d)
            q, k = self.qk(xg).view(groups, size, length, 2, self.heads, self.head_dim).unbind(3)
            vg = values[members].view(groups, size, length, self.heads, self.head_dim)
            scores = torch.einsum("githd,gjthd->gthij", q, k) / math.sqrt(self.head_dim)
            readable = observed[members] & present[..., None]  # (G, s, T)
            allowed = readable.permute(0, 2, 1)[:, :, None, None, :] | torch.eye(
                size, dtype=torch.bool, device=x.device
            )
            probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
            mixed = torch.einsum("gthij,gjthd->githd", probs, vg).reshape(groups, size, length, d)
            values[rows[present]] = mixed[present]
        return self.out(values)


class FeedForward(nn.Module):
    def __init__(self, config: TSMojoConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, 2 * config.d_ff, bias=False)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * value)


class BMojoBlock(nn.Module):
    """Pre-norm residual block: B'MOJO time mixing, group attention, feed-forward."""

    def __init__(self, config: TSMojoConfig) -> None:
        super().__init__()
        self.time_norm, self.group_norm, self.ff_norm = (RMSNorm(config.d_model) for _ in range(3))
        self.time_mixing = BMojoTimeMixing(config)
        self.group_attention = GroupAttention(config)
        self.feed_forward = FeedForward(config)

    def forward(
        self,
        x: torch.Tensor,
        sequence_valid: torch.Tensor,
        memory_candidate: torch.Tensor,
        observed: torch.Tensor,
        layout: GroupLayout,
        output_from: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the tokens at positions ``output_from ..`` (all of them by default) and the
        innovation loss. Later positions never depend on ``output_from``."""
        mixed, innovation_loss = self.time_mixing(self.time_norm(x), sequence_valid, memory_candidate, output_from)
        x = x[:, output_from:] + mixed
        x = x + self.group_attention(self.group_norm(x), observed[:, output_from:], layout)
        x = x + self.feed_forward(self.ff_norm(x))
        return x, innovation_loss
