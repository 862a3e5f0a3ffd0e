"""Layers with hand-written paths: RMSNorm's backward and no-gradient forward, rotary embedding."""

import pytest
import torch

from tsmojo.layers import RMSNorm, rotary, rotary_tables


def reference_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("shape", [(3, 5, 7), (1, 1, 1), (2, 9)])
def test_rms_norm_gradient_passes_gradcheck(shape) -> None:
    norm = RMSNorm(shape[-1]).double()
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, shape[-1], dtype=torch.float64))
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(norm, (x,))


def test_rms_norm_matches_the_expression_with_and_without_gradient() -> None:
    generator = torch.Generator().manual_seed(0)
    norm = RMSNorm(24)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(24, generator=generator))
    x = torch.randn(4, 11, 24, generator=generator)
    upstream = torch.randn(4, 11, 24, generator=generator)
    leaf = x.clone().requires_grad_()
    out = norm(leaf)
    grad_x, grad_weight = torch.autograd.grad(out, (leaf, norm.weight), upstream)
    reference_leaf = x.clone().requires_grad_()
    reference_weight = norm.weight.detach().clone().requires_grad_()
    expected = reference_rms_norm(reference_leaf, reference_weight, norm.eps)
    expected_x, expected_weight = torch.autograd.grad(expected, (reference_leaf, reference_weight), upstream)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(grad_x, expected_x)
    torch.testing.assert_close(grad_weight, expected_weight)
    with torch.no_grad():  # the fused kernel that inference runs
        torch.testing.assert_close(norm(x), expected.detach())


def test_rms_norm_of_bf16_input_keeps_its_dtypes() -> None:
    """ssm_norm reads the bf16 scan output: gradients come back in each input's dtype, close to
    the float32 computation on the same numbers."""
    norm = RMSNorm(16)
    x = torch.randn(3, 7, 16).to(torch.bfloat16).requires_grad_()
    out = norm(x)
    (grad_x,) = torch.autograd.grad(out.sum(), (x,))
    assert grad_x.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32
    x32 = x.detach().float().requires_grad_()
    (expected,) = torch.autograd.grad(reference_rms_norm(x32, norm.weight.detach(), norm.eps).sum(), (x32,))
    torch.testing.assert_close(grad_x.float(), expected, atol=0.05, rtol=0.05)


def test_rotary_rotates_pairs_of_halves_and_keeps_norms() -> None:
    x = torch.randn(2, 6, 3, 8)
    positions = torch.arange(6) - 5
    cos, sin = rotary_tables(positions, 8, None, torch.float32)
    out = rotary(x, (cos, sin))
    angles = positions.float()[:, None] * 10000.0 ** (-torch.arange(4).float() / 4)
    c, s = angles.cos()[:, None, :], angles.sin()[:, None, :]
    first, second = x[..., :4], x[..., 4:]
    expected = torch.cat([first * c - second * s, second * c + first * s], dim=-1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
