"""Shared test helpers (tiny models keep the suite fast on 2 CPU cores)."""

import torch

from tsmojo import TSMojoConfig, TSMojoModel

TINY = dict(
    d_model=16, num_layers=2, num_heads=2, d_ff=32, ssm_state=4, patch_size=4,
    window=2, chunk_size=4, memory_topk=1, memory_size=3, max_output_patches=2, context_length=256,
)


def tiny_model(seed: int = 0, **overrides) -> TSMojoModel:
    torch.manual_seed(seed)
    return TSMojoModel(TSMojoConfig(**{**TINY, **overrides})).eval()


def random_walks(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, generator=generator).cumsum(-1) + 10
