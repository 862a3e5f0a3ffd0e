"""Helpers shared by the kernel tests: run an implementation for its output and every input's
gradient, and compare it with a reference, in float32 or bfloat16.

Without CUDA the Triton kernels run under ``TRITON_INTERPRET=1`` (set in ``tests/conftest.py``), so
shapes stay small.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # in case a module is run without conftest.py

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install 'tsmojo[triton]')")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOL = dict(rtol=1e-4, atol=1e-5)

# bf16 keeps 8 significant bits (7 stored + the implicit one): rounding a value to bf16 moves it by
# at most U = 2^-8 ~ 0.4% of itself. Tolerances for bf16 runs are counted in units of U.
BF16_U = 2.0**-8


def outputs_and_grads(fn, inputs, extra_args, grad_out=None, seed=0, autocast=False):
    """``fn(*inputs, *extra_args)`` on fresh leaves on DEVICE: the output and the gradient of every input
    (zeros for an unused one) for ``grad_out`` (random, from ``seed``, when None: returned as well).
    ``grad_out`` is cast to the output's dtype. With ``autocast`` the forward (only, as in training)
    runs under ``torch.autocast(DEVICE.type, bfloat16)``."""
    leaves = [t.detach().clone().to(DEVICE).requires_grad_() for t in inputs]
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=autocast):
        out = fn(*leaves, *extra_args)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    grads = torch.autograd.grad(out, leaves, grad_out.to(out.dtype), allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads, strict=True)]
    return out.detach(), grads, grad_out


def assert_matches(fn, reference, inputs, extra_args, names, tol=TOL, autocast=False):
    """``fn`` and ``reference`` agree on the output (shape, dtype, values) and every input's gradient.
    With ``autocast`` only ``fn``'s forward runs under ``torch.autocast(DEVICE.type, bfloat16)``."""
    ref_out, ref_grads, grad_out = outputs_and_grads(reference, inputs, extra_args)
    out, grads, _ = outputs_and_grads(fn, inputs, extra_args, grad_out, autocast=autocast)
    assert out.shape == ref_out.shape and out.dtype == ref_out.dtype
    torch.testing.assert_close(out, ref_out, **tol, msg="output")
    for name, grad, ref in zip(names, grads, ref_grads, strict=True):
        assert torch.isfinite(grad).all(), f"grad of {name} is not finite"
        torch.testing.assert_close(grad, ref, **tol, msg=lambda m, name=name: f"grad of {name}: {m}")


def assert_close_bf16(actual, expected, r, what):
    """``|actual - expected| <= r |expected| + r max|expected|``, ``actual`` upcast to float32.

    The absolute term scales with the tensor's largest entry: an entry near zero is a difference of
    larger terms, and bf16 rounds those terms, not their difference."""
    assert torch.isfinite(actual).all(), f"{what} is not finite"
    expected = expected.float()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(actual.float(), expected, rtol=r, atol=r * scale + 1e-12, msg=lambda m: f"{what}: {m}")


def assert_matches_bf16(fn, reference, inputs, extra_args, names, r, autocast=False):
    """``fn`` run in bfloat16 against the float32 ``reference`` on the same numbers.

    Without ``autocast``: the inputs are rounded to bf16; ``fn`` gets the bf16 tensors, ``reference``
    the same values upcast to float32, and the upstream gradient is a bf16-representable tensor
    shared by both. ``fn``'s output and every gradient must be bf16, within ``r`` (see
    :func:`assert_close_bf16`) of the reference's.

    With ``autocast``: ``fn`` gets the float32 inputs under ``torch.autocast(DEVICE.type, bfloat16)``
    (whatever it rounds to bf16 is its own doing); output and gradients must stay float32."""
    if autocast:
        low, ref_inputs = inputs, inputs
    else:
        low = [t.to(torch.bfloat16) for t in inputs]
        ref_inputs = [t.float() for t in low]
    ref_out, ref_grads, grad_out = outputs_and_grads(reference, ref_inputs, extra_args)
    grad_out = grad_out.to(torch.bfloat16).float()  # representable in bf16: both sides see the same numbers
    ref_out, ref_grads, _ = outputs_and_grads(reference, ref_inputs, extra_args, grad_out)
    out, grads, _ = outputs_and_grads(fn, low, extra_args, grad_out, autocast=autocast)
    dtype = torch.float32 if autocast else torch.bfloat16
    assert out.shape == ref_out.shape and out.dtype == dtype, (out.shape, out.dtype)
    assert_close_bf16(out, ref_out, r, "output")
    for name, leaf, grad, ref in zip(names, low, grads, ref_grads, strict=True):
        assert grad.dtype == leaf.dtype == dtype, f"grad of {name} is {grad.dtype}"
        assert_close_bf16(grad, ref, r, f"grad of {name}")


def recording_spy(calls: list, name: str):
    """A stand-in kernel that appends ``name`` to ``calls`` and returns a dummy tensor."""

    def record(*args, **kwargs):
        calls.append(name)
        return torch.zeros(1, 1, 1, 1)

    return record
