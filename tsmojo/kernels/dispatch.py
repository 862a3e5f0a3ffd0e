"""Backend selection for the kernels.

``TSMOJO_KERNELS`` = ``auto`` (default: Triton on CUDA tensors, chunked PyTorch elsewhere),
``triton``, ``torch`` or ``naive`` forces one backend for the whole model.
"""

import importlib.util
import os
from typing import Literal

import torch

Backend = Literal["triton", "torch", "naive"]
BACKEND_CHOICES = ("auto", "triton", "torch", "naive")


def triton_available() -> bool:
    """True when the ``triton`` package can be imported."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(device: torch.device) -> Backend:
    """The backend that runs on ``device`` under the current ``TSMOJO_KERNELS`` setting."""
    choice = os.environ.get("TSMOJO_KERNELS", "auto").strip().lower() or "auto"
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"TSMOJO_KERNELS must be one of {BACKEND_CHOICES}, got {choice!r}")
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    return choice  # type: ignore[return-value]
