"""SSD scan: chunked PyTorch and Triton against the sequential naive reference (outputs and every
gradient), in float32, in bfloat16 and under bf16 autocast; and the op's backend dispatch."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.kernels.helpers import (
    BF16_U,
    DEVICE,
    HAS_TRITON,
    TOL,
    assert_matches,
    assert_matches_bf16,
    needs_triton,
    outputs_and_grads,
    recording_spy,
)
from tsmojo.kernels import dispatch
from tsmojo.kernels.ssd import SINGLE_CHUNK_MAX_LENGTH
from tsmojo.kernels.ssd.chunk import ssd_scan_chunked
from tsmojo.kernels.ssd.naive import ssd_scan_naive

NAMES = "x dt A B C".split()

# (batch, T, heads, head_dim, state, chunk): T not a multiple of the chunk, a single step,
# a chunk longer than T, several heads, T a whole number of chunks, a chunk of one step.
SSD_CASES = [
    (2, 11, 3, 5, 4, 4),
    (1, 1, 2, 3, 2, 4),
    (1, 5, 2, 4, 3, 8),
    (2, 16, 2, 4, 3, 16),
    (1, 9, 1, 2, 2, 3),
    (1, 7, 2, 3, 4, 1),
]

# bf16 runs: every path computes in float32 from the bf16 numbers it is given (the naive and chunked
# paths upcast, the Triton kernels cast every load), so the output and each gradient differ from the
# float32 reference by one final rounding to bf16, at most U = 2^-8 of the value (a whole U for the
# Triton output under the interpreter, which rounds its float32 -> bf16 stores toward zero; GPUs round
# to nearest), plus float32 reordering noise (~1e-6). 2U covers both; measured over 8 seeds: <= 0.5U
# (naive, chunked), <= 0.85U (Triton, interpreted).
SSD_BF16_R = 2 * BF16_U


def ssd_triton(*args):
    from tsmojo.kernels.ssd.triton import ssd_scan_triton

    return ssd_scan_triton(*args)


def ssd_naive_chunk_arg(x, dt, A, B, C, chunk_size):
    """The naive scan with the chunked paths' signature (it has no chunks)."""
    return ssd_scan_naive(x, dt, A, B, C)


IMPLEMENTATIONS = {
    "naive": ssd_naive_chunk_arg,
    "chunked": ssd_scan_chunked,
    "triton": pytest.param(ssd_triton, marks=needs_triton),
}


def ssd_inputs(batch, length, heads, head_dim, state, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, head_dim, generator=g)
    dt = torch.rand(batch, length, heads, generator=g)
    dt[:, ::4] = 0.0  # skipped tokens, as the model does for padding
    A = -(0.2 + torch.rand(heads, generator=g) * 2)
    B = torch.randn(batch, length, state, generator=g)
    C = torch.randn(batch, length, state, generator=g)
    return [x, dt, A, B, C]


# --------------------------------------------------------------------------- float32
@pytest.mark.parametrize("case", SSD_CASES, ids=str)
def test_ssd_chunked_matches_naive(case):
    *shape, chunk = case
    assert_matches(ssd_scan_chunked, ssd_naive_chunk_arg, ssd_inputs(*shape), (chunk,), NAMES)


@needs_triton
@pytest.mark.parametrize("case", SSD_CASES, ids=str)
def test_ssd_triton_matches_naive(case):
    *shape, chunk = case
    assert_matches(ssd_triton, ssd_naive_chunk_arg, ssd_inputs(*shape), (chunk,), NAMES)


@needs_triton
def test_ssd_triton_empty_sequence():
    inputs = [t.to(DEVICE).requires_grad_() for t in ssd_inputs(2, 0, 2, 3, 4)]
    y = ssd_triton(*inputs, 4)
    assert y.shape == (2, 0, 2, 3)
    y.sum().backward()
    assert all(t.grad is not None and not t.grad.any() for t in inputs)


@needs_triton
def test_ssd_triton_long_decay_stays_finite():
    """Strong decay over many chunks: no overflow in exp(cs_i - cs_j) or the chunk decays.

    dA sums terms of size ~dt * |y| that cancel; float32 chunked evaluation (torch or Triton) is
    off by ~2e-4 there against a float64 scan, hence the looser tolerance."""
    x, dt, A, B, C = ssd_inputs(1, 40, 2, 3, 2, seed=3)
    dt = dt * 20.0
    tol = dict(rtol=1e-3, atol=1e-3)
    assert_matches(ssd_triton, ssd_naive_chunk_arg, [x, dt, A, B, C], (8,), NAMES, tol)


# --------------------------------------------------------------------------- bfloat16
@pytest.mark.parametrize("fn", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
@pytest.mark.parametrize("case", SSD_CASES, ids=str)
def test_ssd_bf16_matches_float32_naive(fn, case):
    """bf16 inputs: a bf16 output and bf16 gradients, within one bf16 rounding (SSD_BF16_R) of the
    float32 scan of the same numbers."""
    *shape, chunk = case
    assert_matches_bf16(fn, ssd_naive_chunk_arg, ssd_inputs(*shape, seed=1), (chunk,), NAMES, SSD_BF16_R)


@pytest.mark.parametrize("fn", IMPLEMENTATIONS.values(), ids=IMPLEMENTATIONS.keys())
def test_ssd_under_bf16_autocast_stays_float32(fn):
    """float32 inputs under bf16 autocast (how the model runs): the scan turns autocast off (its
    decays are exponentials of cumulative sums, which bf16 would lose), so the result is the float32
    one, at float32 tolerance, in float32."""
    assert_matches(fn, ssd_naive_chunk_arg, ssd_inputs(2, 11, 3, 5, 4), (4,), NAMES, autocast=True)


# --------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize("length", [5, SINGLE_CHUNK_MAX_LENGTH, SINGLE_CHUNK_MAX_LENGTH + 1])
def test_ssd_torch_backend_scans_short_sequences_as_one_chunk(monkeypatch, length):
    """Up to SINGLE_CHUNK_MAX_LENGTH steps the PyTorch backend runs one chunk of the whole length
    (with the naive scan's numbers); beyond, the chunk size it is given.

    A's gradient sums float32 terms that cancel, and a longer chunk sums more of them in one
    product: against the sequential reference it drifts by up to 1.4e-4 relative at 64 steps in one
    chunk (2.6e-5 in chunks of 16), so its tolerance is 1e-3; everything else keeps TOL."""
    monkeypatch.setenv("TSMOJO_KERNELS", "torch")
    package = importlib.import_module("tsmojo.kernels.ssd")
    chunk_sizes = []

    def spy(x, dt, A, B, C, chunk_size):
        chunk_sizes.append(chunk_size)
        return ssd_scan_chunked(x, dt, A, B, C, chunk_size)

    monkeypatch.setattr(package, "ssd_scan_chunked", spy)
    inputs = ssd_inputs(1, length, 2, 3, 4)
    reference, reference_grads, grad_out = outputs_and_grads(ssd_naive_chunk_arg, inputs, (4,))
    out, grads, _ = outputs_and_grads(package.ssd_scan, inputs, (4,), grad_out)
    torch.testing.assert_close(out, reference, **TOL)
    for name, grad, expected in zip(NAMES, grads, reference_grads, strict=True):
        tolerance = dict(rtol=1e-3, atol=1e-5) if name == "A" else TOL
        torch.testing.assert_close(grad, expected, **tolerance, msg=lambda m, name=name: f"grad of {name}: {m}")
    assert chunk_sizes == [length if length <= SINGLE_CHUNK_MAX_LENGTH else 4]


@pytest.mark.parametrize("setting", ["naive", "torch", "triton", "auto"])
def test_ssd_dispatch_calls_the_chosen_backend(monkeypatch, setting):
    if setting == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    calls = []
    monkeypatch.setenv("TSMOJO_KERNELS", setting)
    # ssd_scan looks the naive and chunked kernels up in its package's namespace (the op's
    # __init__), and the Triton one in the triton submodule at call time: patch them there.
    package = importlib.import_module("tsmojo.kernels.ssd")
    monkeypatch.setattr(package, "ssd_scan_naive", recording_spy(calls, "naive"))
    monkeypatch.setattr(package, "ssd_scan_chunked", recording_spy(calls, "torch"))  # any chunk size
    if HAS_TRITON:
        triton_module = importlib.import_module("tsmojo.kernels.ssd.triton")
        monkeypatch.setattr(triton_module, "ssd_scan_triton", recording_spy(calls, "triton"))
    x, dt, A, B, C = (t.to(DEVICE) for t in ssd_inputs(1, 3, 1, 2, 2))
    package.ssd_scan(x, dt, A, B, C, 4)
    assert calls == [dispatch.resolve_backend(DEVICE)]


@pytest.mark.parametrize("setting", ["naive", "torch", "triton"])
def test_ssd_dispatch_matches_naive(monkeypatch, setting):
    """The public op on every backend, unpatched: the naive scan's numbers."""
    if setting == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    from tsmojo.kernels import ssd_scan

    monkeypatch.setenv("TSMOJO_KERNELS", setting)
    assert_matches(ssd_scan, ssd_naive_chunk_arg, ssd_inputs(1, 9, 1, 2, 2), (3,), NAMES)
