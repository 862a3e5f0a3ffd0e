"""Helpers shared by the Triton kernels. Only imported on the ``triton`` backend, so the package
itself never needs triton installed."""

from __future__ import annotations

import os

import triton


def interpreting() -> bool:
    """True under ``TRITON_INTERPRET=1`` (kernels run on the CPU through triton's interpreter)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip() == "1"


def autotune(configs: list[triton.Config], key: list[str], **kwargs):
    """``triton.autotune`` that keeps only the first config under the interpreter.

    The interpreter has no driver to time candidates on, and a single config is never benchmarked,
    so the first config of every list is the one the CPU tests exercise.
    """
    if interpreting():
        configs = configs[:1]
    return triton.autotune(configs=configs, key=key, **kwargs)


def block(size: int, minimum: int = 16) -> int:
    """Power-of-two tile covering ``size``; at least ``minimum`` so ``tl.dot`` accepts it on GPUs."""
    return max(minimum, triton.next_power_of_2(max(int(size), 1)))
