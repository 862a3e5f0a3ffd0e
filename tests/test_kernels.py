"""Kernels: chunked PyTorch and Triton against the naive references (outputs and every gradient),
backend dispatch, and a whole model under the Triton backend.

Without CUDA the Triton kernels run under ``TRITON_INTERPRET=1`` (set in ``conftest.py``), so
shapes stay small.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # in case this module is run without conftest.py

import tsmojo.kernels.attention as attention_module
import tsmojo.kernels.ssd as ssd_module
from tsmojo.kernels import dispatch
from tsmojo.kernels.attention.chunk import bmojo_attention_chunked
from tsmojo.kernels.attention.naive import bmojo_attention_naive
from tsmojo.kernels.ssd.chunk import ssd_scan_chunked
from tsmojo.kernels.ssd.naive import ssd_scan_naive

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'tsmojo[triton]')")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOL = dict(rtol=1e-4, atol=1e-5)


def _ssd_triton(*args):
    from tsmojo.kernels.ssd.triton import ssd_scan_triton

    return ssd_scan_triton(*args)


def _attention_triton(*args):
    from tsmojo.kernels.attention.triton import bmojo_attention_triton

    return bmojo_attention_triton(*args)


def _outputs_and_grads(fn, inputs, extra_args, grad_out=None, seed=0):
    leaves = [t.detach().clone().to(DEVICE).requires_grad_() for t in inputs]
    out = fn(*leaves, *extra_args)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    grads = torch.autograd.grad(out, leaves, grad_out, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)]
    return out.detach(), grads, grad_out


def _assert_matches(fn, reference, inputs, extra_args, names, tol=TOL):
    ref_out, ref_grads, grad_out = _outputs_and_grads(reference, inputs, extra_args)
    out, grads, _ = _outputs_and_grads(fn, inputs, extra_args, grad_out)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    torch.testing.assert_close(out, ref_out, **tol, msg="output")
    for name, grad, ref in zip(names, grads, ref_grads, strict=True):
        assert torch.isfinite(grad).all(), f"grad of {name} is not finite"
        torch.testing.assert_close(grad, ref, **tol, msg=lambda m, name=name: f"grad of {name}: {m}")


# --------------------------------------------------------------------------- SSD scan
# (batch, T, heads, head_dim, state, chunk): T not a multiple of the chunk, a single step,
# a chunk longer than T, several heads, T a whole number of chunks.
SSD_CASES = [
    (2, 11, 3, 5, 4, 4),
    (1, 1, 2, 3, 2, 4),
    (1, 5, 2, 4, 3, 8),
    (2, 16, 2, 4, 3, 16),
    (1, 9, 1, 2, 2, 3),
    (1, 7, 2, 3, 4, 1),
]


def _ssd_inputs(batch, length, heads, head_dim, state, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, head_dim, generator=g)
    dt = torch.rand(batch, length, heads, generator=g)
    dt[:, ::4] = 0.0  # skipped tokens, as the model does for padding
    A = -(0.2 + torch.rand(heads, generator=g) * 2)
    B = torch.randn(batch, length, state, generator=g)
    C = torch.randn(batch, length, state, generator=g)
    return [x, dt, A, B, C]


@pytest.mark.parametrize("case", SSD_CASES, ids=str)
def test_ssd_chunked_matches_naive(case):
    *shape, chunk = case
    _assert_matches(ssd_scan_chunked, ssd_scan_naive_chunk_arg, _ssd_inputs(*shape), (chunk,), "x dt A B C".split())


def ssd_scan_naive_chunk_arg(x, dt, A, B, C, chunk_size):
    return ssd_scan_naive(x, dt, A, B, C)


@needs_triton
@pytest.mark.parametrize("case", SSD_CASES, ids=str)
def test_ssd_triton_matches_naive(case):
    *shape, chunk = case
    _assert_matches(_ssd_triton, ssd_scan_naive_chunk_arg, _ssd_inputs(*shape), (chunk,), "x dt A B C".split())


@needs_triton
def test_ssd_triton_empty_sequence():
    inputs = [t.to(DEVICE).requires_grad_() for t in _ssd_inputs(2, 0, 2, 3, 4)]
    y = _ssd_triton(*inputs, 4)
    assert y.shape == (2, 0, 2, 3)
    y.sum().backward()
    assert all(t.grad is not None and not t.grad.any() for t in inputs)


@needs_triton
def test_ssd_triton_long_decay_stays_finite():
    """Strong decay over many chunks: no overflow in exp(cs_i - cs_j) or the chunk decays.

    dA sums terms of size ~dt * |y| that cancel; float32 chunked evaluation (torch or Triton) is
    off by ~2e-4 there against a float64 scan, hence the looser tolerance."""
    x, dt, A, B, C = _ssd_inputs(1, 40, 2, 3, 2, seed=3)
    dt = dt * 20.0
    tol = dict(rtol=1e-3, atol=1e-3)
    _assert_matches(_ssd_triton, ssd_scan_naive_chunk_arg, [x, dt, A, B, C], (8,), "x dt A B C".split(), tol)


# --------------------------------------------------------------------------- B'MOJO attention
# (batch, heads, T, dim, window, chunk, memory slots)
ATTENTION_CASES = {
    "odd_lengths": (2, 2, 37, 5, 3, 4, 3),
    "single_step": (1, 1, 1, 4, 2, 4, 2),
    "window_longer_than_T": (1, 2, 20, 8, 30, 8, 2),
    "chunk_longer_than_query_block": (2, 1, 45, 4, 4, 40, 4),
    "no_memory_slots": (1, 2, 19, 4, 2, 5, 0),
    "empty_memory": (1, 2, 23, 4, 2, 5, -3),  # negative: M slots, all -1
    "window_equals_chunk": (1, 2, 33, 4, 4, 4, 2),  # tsmojo-mini's shape: window = chunk
    "window_spans_chunks": (2, 1, 50, 4, 7, 3, 3),  # window and band each cross several chunks
}


def _memory_index(batch, length, chunk_size, slots, generator):
    """Distinct earlier positions per chunk (as ``select_memory`` produces), some slots left empty."""
    num_chunks = -(-length // chunk_size)
    index = torch.full((batch, num_chunks, abs(slots)), -1, dtype=torch.long)
    if slots <= 0:
        return index
    for b in range(batch):
        for c in range(1, num_chunks):
            chosen = torch.randperm(c * chunk_size, generator=generator)[:slots]
            index[b, c, : len(chosen)] = chosen
            if slots > 1 and c % 2:
                index[b, c, -1] = -1
    return index


def _attention_inputs(batch, heads, length, dim, window, chunk_size, slots, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(batch, heads, length, dim, generator=g) for _ in range(5)]
    key_valid = torch.rand(batch, length, generator=g) > 0.3
    key_valid[0, :3] = False  # query 0 of batch 0 has no readable key
    memory_index = _memory_index(batch, length, chunk_size, slots, g)
    return tensors, (key_valid.to(DEVICE), memory_index.to(DEVICE), window, chunk_size)


ATTENTION_NAMES = "q k v k_fade v_fade".split()


@pytest.mark.parametrize("case", ATTENTION_CASES.values(), ids=ATTENTION_CASES.keys())
def test_attention_chunked_matches_naive(case):
    tensors, extra = _attention_inputs(*case)
    _assert_matches(bmojo_attention_chunked, bmojo_attention_naive, tensors, extra, ATTENTION_NAMES)


@needs_triton
@pytest.mark.parametrize("case", ATTENTION_CASES.values(), ids=ATTENTION_CASES.keys())
def test_attention_triton_matches_naive(case):
    tensors, extra = _attention_inputs(*case)
    _assert_matches(_attention_triton, bmojo_attention_naive, tensors, extra, ATTENTION_NAMES)


@needs_triton
def test_attention_triton_custom_scale_and_zero_rows():
    tensors, (key_valid, memory_index, window, chunk) = _attention_inputs(2, 2, 37, 5, 3, 4, 3, seed=1)
    extra = (key_valid, memory_index, window, chunk, 0.7)
    _assert_matches(_attention_triton, bmojo_attention_naive, tensors, extra, ATTENTION_NAMES)
    out = _attention_triton(*[t.to(DEVICE) for t in tensors], *extra)
    assert torch.equal(out[0, :, 0], torch.zeros_like(out[0, :, 0]))  # no readable key: zeros


def test_attention_cases_exercise_memory():
    """Guard on the test data: memory slots really change the result in the memory cases."""
    tensors, (key_valid, memory_index, window, chunk) = _attention_inputs(*ATTENTION_CASES["odd_lengths"])
    with_memory = bmojo_attention_naive(*tensors, key_valid, memory_index, window, chunk)
    without = bmojo_attention_naive(*tensors, key_valid, torch.full_like(memory_index, -1), window, chunk)
    assert (with_memory - without).abs().max() > 1e-3


@needs_triton
def test_attention_triton_empty_sequence():
    tensors, extra = _attention_inputs(1, 2, 0, 4, 2, 4, 2)
    leaves = [t.to(DEVICE).requires_grad_() for t in tensors]
    out = _attention_triton(*leaves, *extra)
    assert out.shape == (1, 2, 0, 4)


# Queries from position `start` on only (a model's last layer): T mid-chunk, on a chunk
# boundary, the last query alone, no query at all, and every query.
QUERY_TAIL_CASES = {
    "mid_chunk": ("odd_lengths", 13),
    "chunk_boundary": ("window_equals_chunk", 16),
    "last_query": ("window_spans_chunks", 49),
    "no_query": ("window_equals_chunk", 33),
    "all_queries": ("odd_lengths", 0),
    "first_chunk": ("single_step", 0),
}


def _full_then_tail(start):
    """The reference for a query tail: every query through the naive kernel (the skipped ones
    zero), then the tail's rows."""

    def run(q, k, v, k_fade, v_fade, *extra):
        zeros_in_front = torch.cat([q.new_zeros(*q.shape[:2], start, q.shape[3]), q[:, :, start:]], dim=2)
        return bmojo_attention_naive(zeros_in_front, k, v, k_fade, v_fade, *extra)[:, :, start:]

    return run


@pytest.mark.parametrize("case, start", QUERY_TAIL_CASES.values(), ids=QUERY_TAIL_CASES.keys())
def test_attention_query_tail_matches_full(case, start):
    tensors, extra = _attention_inputs(*ATTENTION_CASES[case])
    assert 0 <= start <= tensors[0].shape[2]

    def tail(q, k, v, k_fade, v_fade, *rest):
        return bmojo_attention_chunked(q[:, :, start:], k, v, k_fade, v_fade, *rest, query_start=start)

    _assert_matches(tail, _full_then_tail(start), tensors, extra, ATTENTION_NAMES)


@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
def test_dispatch_query_tail(monkeypatch, backend):
    if backend == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TSMOJO_KERNELS", backend)
    tensors, extra = _attention_inputs(*ATTENTION_CASES["odd_lengths"])
    q, k, v, k_fade, v_fade = (t.to(DEVICE) for t in tensors)
    full = attention_module.bmojo_attention(q, k, v, k_fade, v_fade, *extra)
    tail = attention_module.bmojo_attention(q[:, :, 13:], k, v, k_fade, v_fade, *extra, query_start=13)
    torch.testing.assert_close(tail, full[:, :, 13:], **TOL)


def test_attention_query_tail_rejects_wrong_length():
    tensors, extra = _attention_inputs(*ATTENTION_CASES["odd_lengths"])
    q, k, v, k_fade, v_fade = tensors
    with pytest.raises(ValueError, match="query_start"):
        bmojo_attention_chunked(q[:, :, 5:], k, v, k_fade, v_fade, *extra, query_start=4)


# --------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize(
    "setting, cpu, cuda",
    [("auto", "torch", "triton"), ("", "torch", "triton"), ("naive", "naive", "naive"),
     ("torch", "torch", "torch"), ("TRITON", "triton", "triton")],
)
def test_resolve_backend(monkeypatch, setting, cpu, cuda):
    monkeypatch.setenv("TSMOJO_KERNELS", setting)
    assert dispatch.resolve_backend(torch.device("cpu")) == cpu
    assert dispatch.resolve_backend(torch.device("cuda")) == cuda


def test_resolve_backend_default(monkeypatch):
    monkeypatch.delenv("TSMOJO_KERNELS", raising=False)
    assert dispatch.resolve_backend(torch.device("cpu")) == "torch"


def test_resolve_backend_rejects_unknown(monkeypatch):
    monkeypatch.setenv("TSMOJO_KERNELS", "cuda")
    with pytest.raises(ValueError, match="TSMOJO_KERNELS"):
        dispatch.resolve_backend(torch.device("cpu"))


@pytest.mark.parametrize("setting", ["naive", "torch", "triton", "auto"])
def test_dispatch_calls_the_chosen_backend(monkeypatch, setting):
    if setting == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    calls = []

    def spy(name):
        def record(*args, **kwargs):
            calls.append(name)
            return torch.zeros(1, 1, 1, 1)

        return record

    monkeypatch.setenv("TSMOJO_KERNELS", setting)
    monkeypatch.setattr(ssd_module, "ssd_scan_naive", spy("naive"))
    monkeypatch.setattr(ssd_module, "ssd_scan_chunked", spy("torch"))
    monkeypatch.setattr(attention_module, "bmojo_attention_naive", spy("naive"))
    monkeypatch.setattr(attention_module, "bmojo_attention_chunked", spy("torch"))
    if HAS_TRITON:
        from tsmojo.kernels.attention import triton
        from tsmojo.kernels.ssd import triton

        monkeypatch.setattr(triton, "ssd_scan_triton", spy("triton"))
        monkeypatch.setattr(triton, "bmojo_attention_triton", spy("triton"))
    x, dt, A, B, C = _ssd_inputs(1, 3, 1, 2, 2)
    ssd_module.ssd_scan(x, dt, A, B, C, 4)
    tensors, extra = _attention_inputs(1, 1, 3, 4, 2, 4, 1)
    attention_module.bmojo_attention(*[t.to(DEVICE) for t in tensors], *extra)
    expected = dispatch.resolve_backend(torch.device("cpu"))
    assert calls[0] == expected
    assert calls[1] == dispatch.resolve_backend(DEVICE)


# --------------------------------------------------------------------------- whole model
@needs_triton
def test_model_triton_matches_naive(monkeypatch):
    from tsmojo.config import TSMojoConfig
    from tsmojo.model import TSMojoModel

    config = TSMojoConfig(
        d_model=16, num_layers=2, num_heads=2, d_ff=32, ssm_state=4, window=2, chunk_size=4,
        memory_topk=1, memory_size=3, patch_size=4, max_output_patches=2,
    )
    torch.manual_seed(0)
    model = TSMojoModel(config).to(DEVICE)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(3, 70, generator=g).cumsum(-1)
    context[1, :30] = float("nan")  # left padding: invalid tokens
    context[2, 40:48] = float("nan")  # a fully missing patch in the middle
    future = torch.randn(3, 8, generator=g)
    group_ids = torch.tensor([0, 0, 1])
    roles = torch.tensor([0, 1, 0])

    from tsmojo.kernels.attention import triton
    from tsmojo.kernels.ssd import triton

    calls = []
    for module, name in ((triton, "ssd_scan_triton"), (triton, "bmojo_attention_triton")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *args, f=original, n=name: calls.append(n) or f(*args))

    def run(backend):
        monkeypatch.setenv("TSMOJO_KERNELS", backend)
        model.zero_grad(set_to_none=True)
        output = model(context.to(DEVICE), group_ids, roles, future_target=future.to(DEVICE))
        output.loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        return output.loss.detach(), output.quantiles.detach(), grads

    loss_ref, quantiles_ref, grads_ref = run("naive")
    assert not calls
    loss, quantiles, grads = run("triton")
    assert calls.count("ssd_scan_triton") == calls.count("bmojo_attention_triton") == config.num_layers
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(quantiles, quantiles_ref, rtol=1e-4, atol=1e-4)
    assert grads.keys() == grads_ref.keys() and len(grads) == len(list(model.parameters()))
    for name in grads_ref:
        torch.testing.assert_close(
            grads[name], grads_ref[name], rtol=1e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )


# --------------------------------------------------------------------------- GPU compilation
_COMPILE_SCRIPT = r"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tsmojo.kernels.attention import triton as F
from tsmojo.kernels.ssd import triton as S

TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(kernel, pointers, constexprs, warps=4):
    config = None
    if isinstance(kernel, triton.runtime.Autotuner):
        config, kernel = kernel.configs[0], kernel.fn
        constexprs = {**constexprs, **config.kwargs}
        warps = config.num_warps
    names = kernel.arg_names
    signature = {n: "constexpr" if n in constexprs else pointers.get(n, "i32") for n in names}
    constants = {(names.index(n),): v for n, v in constexprs.items()}
    triton.compile(ASTSource(kernel, signature, constants), target=TARGET, options={"num_warps": warps})
    print("compiled", kernel.__name__)


f32 = "*fp32"
kernels = (S._chunk_outer_kernel, S._state_pass_kernel, S._chunk_scan_fwd_kernel, S._chunk_scan_bwd_kernel)
ssd = {n: f32 for k in kernels for n in k.arg_names if n.endswith("_ptr")}
meta = dict(CHUNK=16, BLOCK_Q=16, BLOCK_P=32, BLOCK_N=32)
compile_kernel(S._chunk_outer_kernel, ssd, {**meta, "TO_END": True})
compile_kernel(S._chunk_outer_kernel, ssd, {**meta, "TO_END": False})
compile_kernel(S._state_pass_kernel, ssd, {"BLOCK_S": 1024, "REVERSE": True})
compile_kernel(S._chunk_scan_fwd_kernel, ssd, meta)
compile_kernel(S._chunk_scan_bwd_kernel, ssd, meta)
att = {n: f32 for n in "Q K V KF VF O LSE DO DELTA DQ DK DV DKF DVF".split()}
att.update(VALID="*i8", MEM="*i64", sm_scale="fp32")
compile_kernel(F._fwd_kernel, att, dict(BLOCK_D=32, BLOCK_MEM=16, HAS_MEM=True))
compile_kernel(F._bwd_kv_kernel, att, dict(BLOCK_D=32))
compile_kernel(F._bwd_q_kernel, att, dict(BLOCK_D=32, BLOCK_MEM=16, HAS_MEM=True))
"""


@needs_triton
def test_triton_kernels_compile_for_sm90():
    """The interpreter accepts code the GPU compiler rejects (tile shapes, constexpr use, dtypes):
    compile every kernel ahead of time for an H100 (needs no GPU, only triton's bundled ptxas)."""
    import subprocess
    import sys

    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("triton's NVIDIA backend (ptxas) is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 8
