"""Triton kernels for the chunked SSD scan, forward and backward.

Same inputs, output and semantics as :func:`tsmojo.kernels.ssd.chunk.ssd_scan_chunked`; see
``docs/kernels.md`` for the derivation. Per chunk ``c`` of ``Q`` steps, with ``a_t = dt_t A``,
``cs`` its in-chunk cumulative sum, ``u_t = dt_t x_t`` and ``S_c`` the state entering the chunk::

    y_i     = sum_{j <= i} exp(cs_i - cs_j) (C_i . B_j) u_j  +  exp(cs_i) S_c C_i
    S_{c+1} = exp(cs_last) S_c  +  sum_j exp(cs_last - cs_j) u_j B_j^T

Kernels (grid ``(batch * chunks, heads)`` unless noted):

* ``_chunk_outer_kernel``: one (head_dim, state) outer-product sum per chunk; the chunk's own state
  contribution (forward) or ``sum_i exp(cs_i) dy_i C_i^T`` (backward), plus the chunk log-decay.
* ``_state_pass_kernel``: the sequential recurrence across chunks, forward or reversed; grid
  ``(batch * heads, state blocks)``, each program owns a slice of the flattened state.
* ``_chunk_scan_fwd_kernel``: the output ``y`` of each chunk.
* ``_chunk_scan_bwd_kernel``: every gradient of one chunk, given the incoming state and the
  gradient of the outgoing state.

Nothing but the inputs is saved for the backward: the chunk states are recomputed (two cheap kernels).
Inputs may be float32 or bfloat16 (each may differ): every load is cast to float32, all arithmetic,
the states and the decays are float32, ``y`` is written in the dtype of ``x`` and every gradient is
returned in its input's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import block

_IEEE = tl.constexpr("ieee")  # exact float32 products: the same numbers as the torch path


@triton.jit
def _chunk_outer_kernel(
    a_ptr, dt_ptr, v_ptr, A_ptr, out_ptr, decay_ptr,
    T, H, P, N, NC,
    s_ab, s_at, s_ah, s_ap,
    s_db, s_dt, s_dh,
    s_vb, s_vt, s_vn,
    CHUNK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    TO_END: tl.constexpr,
):  # fmt: skip  # parameters in groups: pointers, sizes, strides per tensor, constexprs
    """out[b, c, h] = sum_l w_l a_l v_l^T, with w_l = dt_l exp(cs_last - cs_l) if TO_END else exp(cs_l)."""
    pid = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = (pid // NC).to(tl.int64)
    c = (pid % NC).to(tl.int64)
    offs_q = tl.arange(0, BLOCK_Q)
    t = c * CHUNK + offs_q
    tmask = (offs_q < CHUNK) & (t < T)
    dt = tl.load(dt_ptr + b * s_db + t * s_dt + h * s_dh, mask=tmask, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)
    a = dt * A
    cs = tl.cumsum(a, axis=0)
    cs_last = tl.sum(a, axis=0)
    if TO_END:
        w = dt * tl.exp(cs_last - cs)
        tl.store(decay_ptr + (b * NC + c) * H + h, cs_last)
    else:
        w = tl.exp(cs)
    w = tl.where(tmask, w, 0.0)
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    av = tl.load(
        a_ptr + b * s_ab + t[:, None] * s_at + h * s_ah + offs_p[None, :] * s_ap,
        mask=tmask[:, None] & (offs_p[None, :] < P),
        other=0.0,
    ).to(tl.float32)
    vv = tl.load(
        v_ptr + b * s_vb + t[:, None] * s_vt + offs_n[None, :] * s_vn,
        mask=tmask[:, None] & (offs_n[None, :] < N),
        other=0.0,
    ).to(tl.float32)
    out = tl.dot(tl.trans(av * w[:, None]), vv, input_precision=_IEEE)  # (P, N)
    base = ((b * NC + c) * H + h) * P * N
    tl.store(
        out_ptr + base + offs_p[:, None] * N + offs_n[None, :],
        out,
        mask=(offs_p[:, None] < P) & (offs_n[None, :] < N),
    )


@triton.jit
def _state_pass_kernel(
    in_ptr, decay_ptr, out_ptr, NC, H, S,
    BLOCK_S: tl.constexpr, REVERSE: tl.constexpr,
):  # fmt: skip  # parameters in groups: pointers, sizes, strides per tensor, constexprs
    """out[c] = carry; carry = exp(decay[c]) carry + in[c], over c ascending (or descending if REVERSE).

    Forward: in = chunk contributions, out = state entering each chunk. Reverse: in = the gradient the
    chunk's own outputs send to its incoming state, out = gradient of the state leaving each chunk."""
    pid_bh = tl.program_id(0)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    offs = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    mask = offs < S
    carry = tl.zeros([BLOCK_S], dtype=tl.float32)
    for i in range(NC):
        if REVERSE:
            c = NC - 1 - i
        else:
            c = i
        row = (b * NC + c) * H + h
        tl.store(out_ptr + row * S + offs, carry, mask=mask)
        decay = tl.exp(tl.load(decay_ptr + row))
        carry = decay * carry + tl.load(in_ptr + row * S + offs, mask=mask, other=0.0)


@triton.jit
def _chunk_scan_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, states_ptr, y_ptr,
    T, H, P, N, NC,
    s_xb, s_xt, s_xh, s_xp,
    s_db, s_dt, s_dh,
    s_bb, s_bt, s_bn,
    CHUNK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip  # parameters in groups: pointers, sizes, strides per tensor, constexprs
    pid = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = (pid // NC).to(tl.int64)
    c = (pid % NC).to(tl.int64)
    offs_q = tl.arange(0, BLOCK_Q)
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    t = c * CHUNK + offs_q
    tmask = (offs_q < CHUNK) & (t < T)
    pmask = offs_p < P
    nmask = offs_n < N

    dt = tl.load(dt_ptr + b * s_db + t * s_dt + h * s_dh, mask=tmask, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)
    cs = tl.cumsum(dt * A, axis=0)
    x = tl.load(
        x_ptr + b * s_xb + t[:, None] * s_xt + h * s_xh + offs_p[None, :] * s_xp,
        mask=tmask[:, None] & pmask[None, :],
        other=0.0,
    ).to(tl.float32)
    bc_offs = b * s_bb + t[:, None] * s_bt + offs_n[None, :] * s_bn
    bc_mask = tmask[:, None] & nmask[None, :]
    Bm = tl.load(B_ptr + bc_offs, mask=bc_mask, other=0.0).to(tl.float32)
    Cm = tl.load(C_ptr + bc_offs, mask=bc_mask, other=0.0).to(tl.float32)
    S = tl.load(
        states_ptr + ((b * NC + c) * H + h) * P * N + offs_p[:, None] * N + offs_n[None, :],
        mask=pmask[:, None] & nmask[None, :],
        other=0.0,
    )

    causal = offs_q[:, None] >= offs_q[None, :]
    decay = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))
    scores = tl.dot(Cm, tl.trans(Bm), input_precision=_IEEE) * decay * dt[None, :]
    y = tl.dot(scores, x, input_precision=_IEEE)
    y += tl.exp(cs)[:, None] * tl.dot(Cm, tl.trans(S), input_precision=_IEEE)
    tl.store(
        y_ptr + b * s_xb + t[:, None] * s_xt + h * s_xh + offs_p[None, :] * s_xp,
        y.to(y_ptr.dtype.element_ty),
        mask=tmask[:, None] & pmask[None, :],
    )


@triton.jit
def _chunk_scan_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, dy_ptr, states_ptr, dstates_ptr,
    dx_ptr, ddt_ptr, dA_ptr, dB_ptr, dC_ptr,
    T, H, P, N, NC,
    s_xb, s_xt, s_xh, s_xp,
    s_db, s_dt, s_dh,
    s_bb, s_bt, s_bn,
    CHUNK: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip  # parameters in groups: pointers, sizes, strides per tensor, constexprs
    """All gradients of one (batch, chunk, head). x, dy, dx share strides; dt, ddt share strides;
    B, C share strides; dB and dC are per-head partials laid out (batch, T, heads, N), summed by the caller;
    dA is a per-(batch, chunk, head) partial."""
    pid = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    b = (pid // NC).to(tl.int64)
    c = (pid % NC).to(tl.int64)
    offs_q = tl.arange(0, BLOCK_Q)
    offs_p = tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    t = c * CHUNK + offs_q
    tmask = (offs_q < CHUNK) & (t < T)
    pmask = offs_p < P
    nmask = offs_n < N

    dt_offs = b * s_db + t * s_dt + h * s_dh
    dt = tl.load(dt_ptr + dt_offs, mask=tmask, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)
    a = dt * A
    cs = tl.cumsum(a, axis=0)
    cs_last = tl.sum(a, axis=0)
    xp_offs = b * s_xb + t[:, None] * s_xt + h * s_xh + offs_p[None, :] * s_xp
    xp_mask = tmask[:, None] & pmask[None, :]
    x = tl.load(x_ptr + xp_offs, mask=xp_mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + xp_offs, mask=xp_mask, other=0.0).to(tl.float32)
    bc_offs = b * s_bb + t[:, None] * s_bt + offs_n[None, :] * s_bn
    bc_mask = tmask[:, None] & nmask[None, :]
    Bm = tl.load(B_ptr + bc_offs, mask=bc_mask, other=0.0).to(tl.float32)
    Cm = tl.load(C_ptr + bc_offs, mask=bc_mask, other=0.0).to(tl.float32)
    st_offs = ((b * NC + c) * H + h) * P * N + offs_p[:, None] * N + offs_n[None, :]
    st_mask = pmask[:, None] & nmask[None, :]
    S = tl.load(states_ptr + st_offs, mask=st_mask, other=0.0)  # state entering the chunk
    dS = tl.load(dstates_ptr + st_offs, mask=st_mask, other=0.0)  # gradient of the state leaving it

    u = dt[:, None] * x
    causal = offs_q[:, None] >= offs_q[None, :]
    decay = tl.exp(tl.where(causal, cs[:, None] - cs[None, :], float("-inf")))  # (i, j)
    G = tl.dot(Cm, tl.trans(Bm), input_precision=_IEEE)
    LD = decay * tl.dot(dy, tl.trans(u), input_precision=_IEEE)  # decay_ij (dy_i . u_j)
    M = LD * G
    dcs = tl.sum(M, axis=1) - tl.sum(M, axis=0)
    dC = tl.dot(LD, Bm, input_precision=_IEEE)
    dB = tl.dot(tl.trans(LD), Cm, input_precision=_IEEE)
    du = tl.dot(tl.trans(decay * G), dy, input_precision=_IEEE)

    # Incoming-state term exp(cs_i) S C_i.
    e = tl.exp(cs)
    dyS = tl.dot(dy, S, input_precision=_IEEE)  # (Q, N)
    dC += e[:, None] * dyS
    dcs += e * tl.sum(dyS * Cm, axis=1)

    # Outgoing-state term exp(cs_last - cs_j) u_j B_j^T (and exp(cs_last) S).
    r = tl.where(tmask, tl.exp(cs_last - cs), 0.0)
    BdS = tl.dot(Bm, tl.trans(dS), input_precision=_IEEE)  # (Q, P)
    du += r[:, None] * BdS
    dB += r[:, None] * tl.dot(u, dS, input_precision=_IEEE)
    pj = r * tl.sum(u * BdS, axis=1)
    dcs -= pj
    dcs_last = tl.sum(pj, axis=0) + tl.exp(cs_last) * tl.sum(tl.sum(S * dS, axis=1), axis=0)

    # cs_i = sum_{k <= i} a_k and cs_last = sum_k a_k.
    da = tl.sum(dcs, axis=0) - tl.cumsum(dcs, axis=0) + dcs + dcs_last
    da = tl.where(tmask, da, 0.0)
    ddt = tl.sum(x * du, axis=1) + da * A
    tl.store(dx_ptr + xp_offs, dt[:, None] * du, mask=xp_mask)
    tl.store(ddt_ptr + dt_offs, ddt, mask=tmask)
    tl.store(dA_ptr + (b * NC + c) * H + h, tl.sum(da * dt, axis=0))
    part_offs = ((b * T + t[:, None]) * H + h) * N + offs_n[None, :]
    tl.store(dB_ptr + part_offs, dB, mask=bc_mask)
    tl.store(dC_ptr + part_offs, dC, mask=bc_mask)


def _meta(x: torch.Tensor, B: torch.Tensor, chunk_size: int) -> dict:
    block_q, block_p, block_n = block(chunk_size), block(x.shape[-1]), block(B.shape[-1])
    # One program holds whole (chunk x head_dim / state) tiles. Compiled for sm_90, this is free of
    # register spills at chunk 16 with head_dim and state up to 64; the backward spills a little at
    # chunk 32 and a lot at chunk 64 (it works, slower).
    warps = 8 if block_q * max(block_p, block_n) >= 1024 else 4
    return dict(CHUNK=chunk_size, BLOCK_Q=block_q, BLOCK_P=block_p, BLOCK_N=block_n, num_warps=warps)


def _states(x, dt, A, B, chunk_size):
    """States entering every chunk, (batch, chunks, heads, head_dim, state) float32, and the chunk log-decays."""
    batch, length, heads, head_dim = x.shape
    state = B.shape[-1]
    num_chunks = triton.cdiv(length, chunk_size)
    meta = _meta(x, B, chunk_size)
    contrib = torch.empty(batch, num_chunks, heads, head_dim, state, device=x.device, dtype=torch.float32)
    log_decay = torch.empty(batch, num_chunks, heads, device=x.device, dtype=torch.float32)
    _chunk_outer_kernel[(batch * num_chunks, heads)](
        x, dt, B, A, contrib, log_decay,
        length, heads, head_dim, state, num_chunks,
        *x.stride(), *dt.stride(), *B.stride(),
        TO_END=True, **meta,
    )  # fmt: skip  # arguments grouped as the kernel's parameters
    states = torch.empty_like(contrib)
    _state_pass(contrib, log_decay, states, reverse=False)
    return states, log_decay


def _state_pass(inputs: torch.Tensor, log_decay: torch.Tensor, out: torch.Tensor, reverse: bool) -> None:
    batch, num_chunks, heads, head_dim, state = inputs.shape
    size = head_dim * state
    block_s = min(1024, triton.next_power_of_2(size))
    _state_pass_kernel[(batch * heads, triton.cdiv(size, block_s))](
        inputs, log_decay, out, num_chunks, heads, size, BLOCK_S=block_s, REVERSE=reverse,
    )  # fmt: skip  # arguments grouped as the kernel's parameters


class _SSDScan(torch.autograd.Function):
    # custom_fwd / custom_bwd: the backward runs under the forward's CUDA autocast state. Inputs are
    # not cast (the kernels read float32 or bfloat16 and compute in float32); on CPU (the interpreter)
    # CUDA autocast is off and the decorators do nothing.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, dt, A, B, C, chunk_size):
        x_, dt_, A_, B_, C_ = (t.contiguous() for t in (x, dt, A, B, C))
        batch, length, heads, head_dim = x_.shape
        states, _ = _states(x_, dt_, A_, B_, chunk_size)
        y = torch.empty_like(x_)  # written in x's dtype by the kernel, which accumulates in float32
        num_chunks = states.shape[1]
        _chunk_scan_fwd_kernel[(batch * num_chunks, heads)](
            x_, dt_, A_, B_, C_, states, y,
            length, heads, head_dim, B_.shape[-1], num_chunks,
            *x_.stride(), *dt_.stride(), *B_.stride(),
            **_meta(x_, B_, chunk_size),
        )  # fmt: skip  # arguments grouped as the kernel's parameters
        ctx.save_for_backward(x_, dt_, A_, B_, C_)
        ctx.chunk_size = chunk_size
        return y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        x, dt, A, B, C = ctx.saved_tensors
        chunk_size = ctx.chunk_size
        batch, length, heads, head_dim = x.shape
        state = B.shape[-1]
        dy = dy.contiguous()
        meta = _meta(x, B, chunk_size)
        states, log_decay = _states(x, dt, A, B, chunk_size)
        num_chunks = states.shape[1]
        grid = (batch * num_chunks, heads)

        local = torch.empty_like(states)  # sum_i exp(cs_i) dy_i C_i^T: what chunk c's outputs send to S_c
        _chunk_outer_kernel[grid](
            dy, dt, C, A, local, log_decay,
            length, heads, head_dim, state, num_chunks,
            *dy.stride(), *dt.stride(), *C.stride(),
            TO_END=False, **meta,
        )  # fmt: skip  # arguments grouped as the kernel's parameters
        dstates = torch.empty_like(states)
        _state_pass(local, log_decay, dstates, reverse=True)
        del local

        f32 = dict(device=x.device, dtype=torch.float32)
        dx = torch.empty(x.shape, **f32)
        ddt = torch.empty(dt.shape, **f32)
        dA = torch.empty(batch, num_chunks, heads, **f32)
        dB = torch.empty(batch, length, heads, state, **f32)
        dC = torch.empty(batch, length, heads, state, **f32)
        _chunk_scan_bwd_kernel[grid](
            x, dt, A, B, C, dy, states, dstates,
            dx, ddt, dA, dB, dC,
            length, heads, head_dim, state, num_chunks,
            *x.stride(), *dt.stride(), *B.stride(),
            **meta,
        )  # fmt: skip  # arguments grouped as the kernel's parameters
        return (
            dx.to(x.dtype),
            ddt.to(dt.dtype),
            dA.sum((0, 1)).to(A.dtype),
            dB.sum(2).to(B.dtype),
            dC.sum(2).to(C.dtype),
            None,
        )


def ssd_scan_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int = 64,
) -> torch.Tensor:
    """Chunked SSD scan in Triton. Same inputs and output as :func:`ssd_scan_naive`; differentiable
    in x, dt, A, B and C."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if x.shape[1] == 0:
        # Keep the graph connected so backward yields zero gradients.
        return x.new_zeros(x.shape) + 0.0 * (x.sum() + dt.sum() + A.sum() + B.sum() + C.sum())
    return _SSDScan.apply(x, dt, A, B, C, chunk_size)
