"""Fused B'MOJO attention in Triton (FlashAttention style), forward and backward.

Same semantics as :func:`tsmojo.kernels.attention.naive.bmojo_attention_naive`: query ``i``
reads, in one softmax, the window keys ``k[j]`` for ``i - W < j <= i``, the fading-band keys
``k_fade[j]`` for ``i - 2W < j <= i - W`` and the memory keys ``k[m]`` for the slots
``m = memory_index[b, i // chunk_size, :]`` with ``0 <= m <= i - W``; only keys with
``key_valid`` are read, and a query with nothing to read returns zeros.

Kernels:

* ``_fwd_kernel`` (grid: query blocks x batch*heads): online softmax over three key sources,
  each scanned once: the window span, the band span, then the memory slots of every chunk the
  query block touches (a query block may straddle chunks; each query keeps only its own chunk's
  slots). Writes the output and the log-sum-exp per query.
* ``_bwd_kv_kernel`` (grid: key blocks x batch*heads): dk, dv from the window and dk_fade, dv_fade
  from the band, recomputing probabilities from the saved log-sum-exp. Plain stores.
* ``_bwd_q_kernel`` (grid: query blocks x batch*heads): dq from all three sources; the memory keys'
  dk, dv are added with atomics into the buffers written by ``_bwd_kv_kernel`` (it runs first).

Saved for the backward: q, k, v, k_fade, v_fade, key_valid, memory_index, the output and the
log-sum-exp (float32, batch x heads x T). Inputs may be float32 or bfloat16 (each may differ): every
load is cast to float32 and all arithmetic is float32 (scores, softmax statistics, accumulators,
gradient buffers); the output is written in the dtype of ``q`` and every gradient is returned in its
input's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._triton_utils import autotune, block

_IEEE = tl.constexpr("ieee")  # exact float32 products: the same numbers as the torch path


def _configs(*shapes: tuple[int, int, int]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=2) for m, n, w in shapes]


# (BLOCK_M, BLOCK_N, warps). The first config of each list is the only one used under
# TRITON_INTERPRET (so by the CPU tests): small blocks make the tests cross block and chunk
# boundaries. The others are those that compile for sm_90 at head_dim 32 without register spills.
_FWD_CONFIGS = _configs((32, 16, 4), (64, 32, 4), (64, 64, 4), (128, 32, 8), (32, 32, 4))
_BWD_KV_CONFIGS = _configs((32, 16, 4), (32, 16, 8), (16, 16, 4))
_BWD_Q_CONFIGS = _configs((32, 16, 4), (32, 32, 4), (64, 16, 4), (64, 16, 8), (64, 32, 8), (128, 16, 8))
_KEY = ["W", "CS", "D", "M"]


@triton.jit
def _online_step(s, vals, m_i, l_i, acc):
    """Fold a tile of scores ``s`` (-inf where unreadable) and its values into the running softmax."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp(s - m_safe[:, None])
    alpha = tl.exp(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p, vals, input_precision=_IEEE)
    return m_new, l_i, acc


@triton.jit
def _load_rows(ptr, base, rows, s_t, offs_d, row_mask, dmask):
    return tl.load(
        ptr + base + rows[:, None] * s_t + offs_d[None, :], mask=row_mask[:, None] & dmask[None, :], other=0.0
    ).to(tl.float32)


@triton.jit
def _memory_slots(MEM, VALID, b, c, s_mb, s_mc, s_vb, offs_s, M):
    """Slot positions of chunk c (clamped to 0 when empty) and whether each slot is readable at all."""
    idx = tl.load(MEM + b * s_mb + c * s_mc + offs_s, mask=offs_s < M, other=-1)
    ok = idx >= 0
    pos = tl.where(ok, idx, 0)
    ok = ok & (tl.load(VALID + b * s_vb + pos, mask=ok, other=0) != 0)
    return pos, ok


@autotune(configs=_FWD_CONFIGS, key=_KEY)
@triton.jit
def _fwd_kernel(
    Q, K, V, KF, VF, VALID, MEM, O, LSE,
    sm_scale, T, H, NC, M, W, CS, D,
    s_b, s_h, s_t, s_vb, s_mb, s_mc,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_MEM: tl.constexpr,
    HAS_MEM: tl.constexpr,
):  # fmt: skip  # parameters in groups: pointers, sizes, strides per tensor, constexprs
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    base = b * s_b + h * s_h
    start = pid_m * BLOCK_M
    offs_m = start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    qmask = offs_m < T
    q = _load_rows(Q, base, offs_m, s_t, offs_d, qmask, dmask) * sm_scale

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    end = tl.minimum(start + BLOCK_M, T)

    # Window: keys (i - W, i].
    lo = tl.maximum(start - W + 1, 0)
    for ks in range(lo, end, BLOCK_N):
        offs_n = ks + tl.arange(0, BLOCK_N)
        nmask = offs_n < end
        readable = nmask & (tl.load(VALID + b * s_vb + offs_n, mask=nmask, other=0) != 0)
        k = _load_rows(K, base, offs_n, s_t, offs_d, nmask, dmask)
        v = _load_rows(V, base, offs_n, s_t, offs_d, nmask, dmask)
        delta = offs_m[:, None] - offs_n[None, :]
        ok = (delta >= 0) & (delta < W) & readable[None, :]
        s = tl.where(ok, tl.dot(q, tl.trans(k), input_precision=_IEEE), float("-inf"))
        m_i, l_i, acc = _online_step(s, v, m_i, l_i, acc)

    # Fading band: k_fade, v_fade at (i - 2W, i - W].
    lo = tl.maximum(start - 2 * W + 1, 0)
    hi = tl.minimum(start + BLOCK_M - W, T)
    for ks in range(lo, hi, BLOCK_N):
        offs_n = ks + tl.arange(0, BLOCK_N)
        nmask = offs_n < hi
        readable = nmask & (tl.load(VALID + b * s_vb + offs_n, mask=nmask, other=0) != 0)
        k = _load_rows(KF, base, offs_n, s_t, offs_d, nmask, dmask)
        v = _load_rows(VF, base, offs_n, s_t, offs_d, nmask, dmask)
        delta = offs_m[:, None] - offs_n[None, :]
        ok = (delta >= W) & (delta < 2 * W) & readable[None, :]
        s = tl.where(ok, tl.dot(q, tl.trans(k), input_precision=_IEEE), float("-inf"))
        m_i, l_i, acc = _online_step(s, v, m_i, l_i, acc)

    # Eidetic memory: the slots of each chunk this block touches; a query keeps its own chunk's.
    if HAS_MEM:
        offs_s = tl.arange(0, BLOCK_MEM)
        q_chunk = offs_m // CS
        for c in range(start // CS, (end - 1) // CS + 1):
            pos, slot_ok = _memory_slots(MEM, VALID, b, c, s_mb, s_mc, s_vb, offs_s, M)
            k = _load_rows(K, base, pos, s_t, offs_d, slot_ok, dmask)
            v = _load_rows(V, base, pos, s_t, offs_d, slot_ok, dmask)
            ok = slot_ok[None, :] & (q_chunk[:, None] == c) & (pos[None, :] <= offs_m[:, None] - W)
            s = tl.where(ok, tl.dot(q, tl.trans(k), input_precision=_IEEE), float("-inf"))
            m_i, l_i, acc = _online_step(s, v, m_i, l_i, acc)

    has_key = l_i > 0.0
    out = acc / tl.where(has_key, l_i, 1.0)[:, None]
    lse = tl.where(has_key, m_i + tl.log(tl.where(has_key, l_i, 1.0)), 0.0)
    o_offs = base + offs_m[:, None] * s_t + offs_d[None, :]
    tl.store(O + o_offs, out.to(O.dtype.element_ty), mask=qmask[:, None] & dmask[None, :])
    tl.store(LSE + pid_bh.to(tl.int64) * T + offs_m, lse, mask=qmask)


@triton.jit
def _probs(q, k, lse, ok):
    """Recomputed attention probabilities of a tile (0 where not readable); q is pre-scaled."""
    s = tl.dot(q, tl.trans(k), input_precision=_IEEE)
    return tl.where(ok, tl.exp(tl.where(ok, s, 0.0) - lse[:, None]), 0.0)


@autotune(configs=_BWD_KV_CONFIGS, key=_KEY)
@triton.jit
def _bwd_kv_kernel(
    Q, K, V, KF, VF, VALID, DO, LSE, DELTA, DK, DV, DKF, DVF,
    sm_scale, T, H, W, CS, D, M,
    s_b, s_h, s_t, s_vb,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip  # parameters in groups: pointers, sizes, strides per tensor, constexprs
    """One block of BLOCK_N keys: gradients through the window (k, v) and the band (k_fade, v_fade)."""
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    base = b * s_b + h * s_h
    row = pid_bh.to(tl.int64) * T
    start = pid_n * BLOCK_N
    offs_n = start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    nmask = offs_n < T
    readable = nmask & (tl.load(VALID + b * s_vb + offs_n, mask=nmask, other=0) != 0)

    for band in tl.static_range(2):
        if band == 0:
            k = _load_rows(K, base, offs_n, s_t, offs_d, nmask, dmask)
            v = _load_rows(V, base, offs_n, s_t, offs_d, nmask, dmask)
        else:
            k = _load_rows(KF, base, offs_n, s_t, offs_d, nmask, dmask)
            v = _load_rows(VF, base, offs_n, s_t, offs_d, nmask, dmask)
        dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
        # Key j is read by queries j + band*W ... j + band*W + W - 1.
        lo = start + band * W
        hi = tl.minimum(start + BLOCK_N + (band + 1) * W - 1, T)
        for qs in range(lo, hi, BLOCK_M):
            offs_m = qs + tl.arange(0, BLOCK_M)
            mmask = offs_m < hi
            q = _load_rows(Q, base, offs_m, s_t, offs_d, mmask, dmask) * sm_scale
            do = _load_rows(DO, base, offs_m, s_t, offs_d, mmask, dmask)
            lse = tl.load(LSE + row + offs_m, mask=mmask, other=0.0)
            delta_o = tl.load(DELTA + row + offs_m, mask=mmask, other=0.0)
            dist = offs_m[:, None] - offs_n[None, :]
            ok = (dist >= band * W) & (dist < (band + 1) * W) & readable[None, :] & mmask[:, None]
            p = _probs(q, k, lse, ok)
            dv += tl.dot(tl.trans(p), do, input_precision=_IEEE)
            ds = p * (tl.dot(do, tl.trans(v), input_precision=_IEEE) - delta_o[:, None])
            dk += tl.dot(tl.trans(ds), q, input_precision=_IEEE)  # q carries sm_scale already
        offs = base + offs_n[:, None] * s_t + offs_d[None, :]
        mask = nmask[:, None] & dmask[None, :]
        if band == 0:
            tl.store(DK + offs, dk, mask=mask)
            tl.store(DV + offs, dv, mask=mask)
        else:
            tl.store(DKF + offs, dk, mask=mask)
            tl.store(DVF + offs, dv, mask=mask)


@autotune(configs=_BWD_Q_CONFIGS, key=_KEY, restore_value=["DK", "DV"])
@triton.jit
def _bwd_q_kernel(
    Q, K, V, KF, VF, VALID, MEM, DO, LSE, DELTA, DQ, DK, DV,
    sm_scale, T, H, NC, M, W, CS, D,
    s_b, s_h, s_t, s_vb, s_mb, s_mc,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_MEM: tl.constexpr,
    HAS_MEM: tl.constexpr,
):  # fmt: skip  # parameters in groups: pointers, sizes, strides per tensor, constexprs
    """One block of queries: dq from all three sources; memory keys' dk, dv by atomic adds."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    base = b * s_b + h * s_h
    row = pid_bh.to(tl.int64) * T
    start = pid_m * BLOCK_M
    offs_m = start + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    qmask = offs_m < T
    q = _load_rows(Q, base, offs_m, s_t, offs_d, qmask, dmask) * sm_scale
    do = _load_rows(DO, base, offs_m, s_t, offs_d, qmask, dmask)
    lse = tl.load(LSE + row + offs_m, mask=qmask, other=0.0)
    delta_o = tl.load(DELTA + row + offs_m, mask=qmask, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    end = tl.minimum(start + BLOCK_M, T)

    for band in tl.static_range(2):
        lo = tl.maximum(start - (band + 1) * W + 1, 0)
        hi = tl.minimum(start + BLOCK_M - band * W, T)
        for ks in range(lo, hi, BLOCK_N):
            offs_n = ks + tl.arange(0, BLOCK_N)
            nmask = offs_n < hi
            readable = nmask & (tl.load(VALID + b * s_vb + offs_n, mask=nmask, other=0) != 0)
            if band == 0:
                k = _load_rows(K, base, offs_n, s_t, offs_d, nmask, dmask)
                v = _load_rows(V, base, offs_n, s_t, offs_d, nmask, dmask)
            else:
                k = _load_rows(KF, base, offs_n, s_t, offs_d, nmask, dmask)
                v = _load_rows(VF, base, offs_n, s_t, offs_d, nmask, dmask)
            dist = offs_m[:, None] - offs_n[None, :]
            ok = (dist >= band * W) & (dist < (band + 1) * W) & readable[None, :] & qmask[:, None]
            p = _probs(q, k, lse, ok)
            ds = p * (tl.dot(do, tl.trans(v), input_precision=_IEEE) - delta_o[:, None])
            dq += tl.dot(ds, k, input_precision=_IEEE)

    if HAS_MEM:
        offs_s = tl.arange(0, BLOCK_MEM)
        q_chunk = offs_m // CS
        for c in range(start // CS, (end - 1) // CS + 1):
            pos, slot_ok = _memory_slots(MEM, VALID, b, c, s_mb, s_mc, s_vb, offs_s, M)
            k = _load_rows(K, base, pos, s_t, offs_d, slot_ok, dmask)
            v = _load_rows(V, base, pos, s_t, offs_d, slot_ok, dmask)
            ok = slot_ok[None, :] & (q_chunk[:, None] == c) & (pos[None, :] <= offs_m[:, None] - W) & qmask[:, None]
            p = _probs(q, k, lse, ok)
            ds = p * (tl.dot(do, tl.trans(v), input_precision=_IEEE) - delta_o[:, None])
            dq += tl.dot(ds, k, input_precision=_IEEE)
            offs = base + pos[:, None] * s_t + offs_d[None, :]
            mask = slot_ok[:, None] & dmask[None, :]
            tl.atomic_add(DV + offs, tl.dot(tl.trans(p), do, input_precision=_IEEE), mask=mask)
            tl.atomic_add(DK + offs, tl.dot(tl.trans(ds), q, input_precision=_IEEE), mask=mask)

    tl.store(DQ + base + offs_m[:, None] * s_t + offs_d[None, :], dq * sm_scale, mask=qmask[:, None] & dmask[None, :])


def _prepare(memory_index: torch.Tensor, key_valid: torch.Tensor, length: int, chunk_size: int):
    num_chunks = triton.cdiv(length, chunk_size)
    if memory_index.shape[1] < num_chunks:
        raise ValueError(f"memory_index covers {memory_index.shape[1]} chunks, the queries need {num_chunks}")
    return memory_index.to(torch.int64).contiguous(), key_valid.to(torch.int8).contiguous()


class _BMojoAttention(torch.autograd.Function):
    # custom_fwd / custom_bwd: the backward runs under the forward's CUDA autocast state. Inputs are
    # not cast (the kernels read float32 or bfloat16 and compute in float32); on CPU (the interpreter)
    # CUDA autocast is off and the decorators do nothing.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale):
        batch, heads, length, dim = q.shape
        q_, k_, v_, kf_, vf_ = (t.contiguous() for t in (q, k, v, k_fade, v_fade))
        memory, valid = _prepare(memory_index, key_valid, length, chunk_size)
        slots = memory.shape[-1]
        out = torch.empty_like(q_)
        lse = torch.empty(batch, heads, length, device=q.device, dtype=torch.float32)
        grid = lambda meta: (triton.cdiv(length, meta["BLOCK_M"]), batch * heads)
        _fwd_kernel[grid](
            q_, k_, v_, kf_, vf_, valid, memory, out, lse,
            scale, length, heads, memory.shape[1], slots, window, chunk_size, dim,
            *q_.stride()[:3], valid.stride(0), memory.stride(0), memory.stride(1),
            BLOCK_D=block(dim), BLOCK_MEM=block(slots), HAS_MEM=slots > 0,
        )  # fmt: skip  # arguments grouped as the kernel's parameters
        ctx.save_for_backward(q_, k_, v_, kf_, vf_, valid, memory, out, lse)
        ctx.window, ctx.chunk_size, ctx.scale = window, chunk_size, scale
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, d_out):
        q, k, v, kf, vf, valid, memory, out, lse = ctx.saved_tensors
        window, chunk_size, scale = ctx.window, ctx.chunk_size, ctx.scale
        batch, heads, length, dim = q.shape
        slots = memory.shape[-1]
        d_out = d_out.contiguous()
        delta = (d_out.float() * out.float()).sum(-1)  # (b, h, T): rowsum(dO * O)
        f32 = dict(device=q.device, dtype=torch.float32)
        dq, dk, dv, dkf, dvf = (torch.empty(q.shape, **f32) for _ in range(5))
        strides = q.stride()[:3]
        _bwd_kv_kernel[lambda meta: (triton.cdiv(length, meta["BLOCK_N"]), batch * heads)](
            q, k, v, kf, vf, valid, d_out, lse, delta, dk, dv, dkf, dvf,
            scale, length, heads, window, chunk_size, dim, slots,
            *strides, valid.stride(0),
            BLOCK_D=block(dim),
        )  # fmt: skip  # arguments grouped as the kernel's parameters
        # Runs after _bwd_kv_kernel on the same stream: adds the memory reads into dk, dv.
        _bwd_q_kernel[lambda meta: (triton.cdiv(length, meta["BLOCK_M"]), batch * heads)](
            q, k, v, kf, vf, valid, memory, d_out, lse, delta, dq, dk, dv,
            scale, length, heads, memory.shape[1], slots, window, chunk_size, dim,
            *strides, valid.stride(0), memory.stride(0), memory.stride(1),
            BLOCK_D=block(dim), BLOCK_MEM=block(slots), HAS_MEM=slots > 0,
        )  # fmt: skip  # arguments grouped as the kernel's parameters
        grads = (dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dkf.to(kf.dtype), dvf.to(vf.dtype))
        return (*grads, None, None, None, None, None)


def bmojo_attention_triton(
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
    """Fused B'MOJO attention; see :func:`bmojo_attention_naive` for the semantics. Differentiable in
    q, k, v, k_fade and v_fade."""
    if window < 1 or chunk_size < 1:
        raise ValueError(f"window and chunk_size must be >= 1, got {window} and {chunk_size}")
    length, dim = q.shape[2], q.shape[3]
    scale = dim**-0.5 if scale is None else float(scale)
    if length == 0:
        return q.new_zeros(q.shape) + 0.0 * sum(t.sum() for t in (q, k, v, k_fade, v_fade))
    return _BMojoAttention.apply(q, k, v, k_fade, v_fade, key_valid, memory_index, window, chunk_size, scale)
