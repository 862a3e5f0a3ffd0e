"""A tiny model trained in bf16 autocast (how ``--precision bf16-mixed`` runs it) on every kernel
backend: a finite loss close to the float32 one, and gradients that reach every parameter."""

from __future__ import annotations

import pytest
import torch

from tests.kernels.helpers import BF16_U, DEVICE, HAS_TRITON
from tsmojo.config import TSMojoConfig
from tsmojo.model import TSMojoModel

# The loss is a mean of pinball terms of float32 quantiles (embedding, head and loss run in float32);
# bf16 only rounds the products inside the blocks, by a few U = 2^-8 of each feature, and the mean
# averages those independent errors: the loss moves by well under one bf16 rounding (measured
# <= 0.07 U). One rounding, U, is the bound.
LOSS_RTOL = BF16_U
# The whole gradient's direction: bf16 perturbs each entry by a few U, not the direction; a dropped
# or mis-scaled gradient path would turn it far more than cos = 0.99 (8 degrees; measured >= 0.998).
GRAD_MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TSMojoModel(TSMojoConfig.tiny(num_layers=2, memory_topk=1, memory_size=3)).to(DEVICE)
    # The seasonal-hint embedding starts at zero, which stops the gradient to its hidden layer;
    # a trained model's is not zero.
    torch.nn.init.normal_(model.hint_embed.out.weight, std=0.1)
    g = torch.Generator().manual_seed(10)
    context = torch.randn(3, 70, generator=g).cumsum(-1) + 10
    context[1, :30] = float("nan")  # left padding: invalid tokens
    # Row 2 repeats a cycle, so the seasonal hint is active (a period is detected).
    context[2] = 10 + 3 * torch.sin(2 * torch.pi * torch.arange(70.0) / 8) + 0.05 * torch.randn(70, generator=g)
    context[2, 40:48] = float("nan")  # a fully missing patch in the middle
    future = torch.randn(3, 8, generator=g).cumsum(-1) + context[:, -1:]
    # Row 1 is a known-future covariate of row 0: the last layer's group attention then has two
    # observed members per future token, so its query/key projection gets a gradient too.
    future_covariates = torch.full((3, 8), float("nan"))
    future_covariates[1] = torch.randn(8, generator=g).cumsum(-1) + 10
    batch = dict(
        context=context.to(DEVICE), group_ids=torch.tensor([0, 0, 1]), roles=torch.tensor([0, 2, 0]),
        future_covariates=future_covariates.to(DEVICE), future_target=future.to(DEVICE),
    )  # fmt: skip
    return model, batch


def loss_and_grads(model, batch, bf16):
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
        output = model(**batch)
    output.loss.backward()  # outside autocast, as in training
    return output, {name: p.grad for name, p in model.named_parameters()}


@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
def test_model_bf16_autocast_forward_backward(monkeypatch, setup, backend):
    if backend == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    model, batch = setup
    monkeypatch.setenv("TSMOJO_KERNELS", "naive")
    reference, grads_ref = loss_and_grads(model, batch, bf16=False)
    monkeypatch.setenv("TSMOJO_KERNELS", backend)
    output, grads = loss_and_grads(model, batch, bf16=True)

    assert output.loss.dtype == output.quantiles.dtype == torch.float32
    assert torch.isfinite(output.loss) and torch.isfinite(output.quantiles).all()
    torch.testing.assert_close(output.loss, reference.loss, rtol=LOSS_RTOL, atol=0.0)
    for name, grad in grads.items():
        assert grad is not None, f"{name} gets no gradient"
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0 and grads_ref[name].abs().sum() > 0, f"{name} gets a zero gradient"
    flat = torch.cat([grads[name].flatten() for name in grads_ref])
    flat_ref = torch.cat([grad.flatten() for grad in grads_ref.values()])
    assert torch.nn.functional.cosine_similarity(flat, flat_ref, dim=0) > GRAD_MIN_COSINE
