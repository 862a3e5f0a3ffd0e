"""tsmojo's compute kernels: the SSD scan and B'MOJO attention.

Each op lives in ``tsmojo/kernels/<op>/`` with three implementations of identical semantics:
``naive.py`` (sequential / quadratic reference), ``chunk.py`` (chunked PyTorch, the CPU path)
and ``triton.py`` (fused GPU kernels with hand-written backward). The op's ``__init__.py``
exports the entry point, which picks an implementation through ``dispatch.resolve_backend``.
"""

from .attention import bmojo_attention
from .dispatch import Backend, resolve_backend
from .ssd import ssd_scan

__all__ = ["Backend", "bmojo_attention", "resolve_backend", "ssd_scan"]
