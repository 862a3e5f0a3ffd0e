"""tsmojo's compute kernels: the SSD scan and B'MOJO attention.

Each op has three implementations with identical semantics:
``naive`` (sequential / quadratic reference), ``torch`` (chunked PyTorch, the CPU path)
and ``triton`` (fused GPU kernels with hand-written backward). ``dispatch`` picks one.
Installed as ``tsmojo.kernels``.
"""

from .dispatch import Backend, bmojo_attention, resolve_backend, ssd_scan

__all__ = ["Backend", "bmojo_attention", "resolve_backend", "ssd_scan"]
