"""A whole model on the Triton backend against the naive one, and every Triton kernel compiled
ahead of time for an H100 (sm_90), for float32 and bfloat16 inputs."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

from tests.kernels.helpers import DEVICE, needs_triton
from tsmojo.config import TSMojoConfig
from tsmojo.model import TSMojoModel


@needs_triton
def test_model_triton_matches_naive(monkeypatch):
    config = TSMojoConfig(
        d_model=16, num_layers=2, num_heads=2, d_ff=32, ssm_state=4, window=2, chunk_size=4,
        memory_topk=1, memory_size=3, patch_size=4, max_output_patches=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = TSMojoModel(config).to(DEVICE)
    g = torch.Generator().manual_seed(1)
    context = torch.randn(3, 70, generator=g).cumsum(-1)
    context[1, :30] = float("nan")  # left padding: invalid tokens
    context[2, 40:48] = float("nan")  # a fully missing patch in the middle
    future = torch.randn(3, 8, generator=g)
    group_ids = torch.tensor([0, 0, 1])
    roles = torch.tensor([0, 1, 0])

    # The ops import their Triton entry point from the triton submodules at call time: wrap it there.
    calls = []
    for module_name, name in (
        ("tsmojo.kernels.ssd.triton", "ssd_scan_triton"),
        ("tsmojo.kernels.attention.triton", "bmojo_attention_triton"),
    ):
        module = importlib.import_module(module_name)
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


# Pointers to the inputs, the upstream gradient and the outputs written in the inputs' dtype take
# `data` (fp32 or bf16); states, decays, log-sum-exps and gradient buffers are always fp32.
f32 = "*fp32"
kernels = (S._chunk_outer_kernel, S._state_pass_kernel, S._chunk_scan_fwd_kernel, S._chunk_scan_bwd_kernel)
meta = dict(CHUNK=16, BLOCK_Q=16, BLOCK_P=32, BLOCK_N=32)
for data in ("*fp32", "*bf16"):
    ssd = {n: f32 for k in kernels for n in k.arg_names if n.endswith("_ptr")}
    ssd.update({n: data for n in "a_ptr v_ptr x_ptr dt_ptr A_ptr B_ptr C_ptr dy_ptr y_ptr".split()})
    compile_kernel(S._chunk_outer_kernel, ssd, {**meta, "TO_END": True})
    compile_kernel(S._chunk_outer_kernel, ssd, {**meta, "TO_END": False})
    compile_kernel(S._state_pass_kernel, ssd, {"BLOCK_S": 1024, "REVERSE": True})
    compile_kernel(S._chunk_scan_fwd_kernel, ssd, meta)
    compile_kernel(S._chunk_scan_bwd_kernel, ssd, meta)
    att = {n: f32 for n in "LSE DELTA DQ DK DV DKF DVF".split()}
    att.update({n: data for n in "Q K V KF VF O DO".split()})
    att.update(VALID="*i8", MEM="*i64", sm_scale="fp32")
    compile_kernel(F._fwd_kernel, att, dict(BLOCK_D=32, BLOCK_MEM=16, HAS_MEM=True))
    compile_kernel(F._bwd_kv_kernel, att, dict(BLOCK_D=32))
    compile_kernel(F._bwd_q_kernel, att, dict(BLOCK_D=32, BLOCK_MEM=16, HAS_MEM=True))
"""


@needs_triton
def test_triton_kernels_compile_for_sm90():
    """The interpreter accepts code the GPU compiler rejects (tile shapes, constexpr use, dtypes):
    compile every kernel ahead of time for an H100 (needs no GPU, only triton's bundled ptxas), with
    float32 and with bfloat16 inputs."""
    import triton

    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    if not os.path.exists(ptxas):
        pytest.skip("triton's NVIDIA backend (ptxas) is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("compiled") == 16
