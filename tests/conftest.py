"""Shared test setup.

Without a GPU the Triton kernels run through triton's interpreter. ``triton.jit`` reads
``TRITON_INTERPRET`` when a kernel module is imported, so it is set here, before any test module
imports one. On a CUDA machine the compiled kernels are tested instead.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
