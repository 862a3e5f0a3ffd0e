"""Backend selection: ``TSMOJO_KERNELS`` and the device decide which implementation runs."""

from __future__ import annotations

import pytest
import torch

from tsmojo.kernels import dispatch


@pytest.mark.parametrize(
    "setting, cpu, cuda",
    [("auto", "torch", "triton"), ("", "torch", "triton"), ("naive", "naive", "naive"),
     ("torch", "torch", "torch"), ("TRITON", "triton", "triton")],
)  # fmt: skip
def test_resolve_backend(monkeypatch, setting, cpu, cuda):
    monkeypatch.setenv("TSMOJO_KERNELS", setting)
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)  # "auto" on CUDA needs triton
    assert dispatch.resolve_backend(torch.device("cpu")) == cpu
    assert dispatch.resolve_backend(torch.device("cuda")) == cuda


def test_resolve_backend_auto_without_triton(monkeypatch):
    monkeypatch.setenv("TSMOJO_KERNELS", "auto")
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    assert dispatch.resolve_backend(torch.device("cuda")) == "torch"


def test_resolve_backend_default(monkeypatch):
    monkeypatch.delenv("TSMOJO_KERNELS", raising=False)
    assert dispatch.resolve_backend(torch.device("cpu")) == "torch"


def test_resolve_backend_rejects_unknown(monkeypatch):
    monkeypatch.setenv("TSMOJO_KERNELS", "cuda")
    with pytest.raises(ValueError, match="TSMOJO_KERNELS"):
        dispatch.resolve_backend(torch.device("cpu"))
