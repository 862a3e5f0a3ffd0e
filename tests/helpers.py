"""Shared test helpers (tiny models keep the suite fast on 2 CPU cores)."""

import torch

from tsmojo import TSMojoConfig, TSMojoModel

# Two layers (so layer interactions are tested) and a memory smaller than the chunk count.
TINY = dict(num_layers=2, memory_topk=1, memory_size=3, context_length=256)


def tiny_model(seed: int = 0, **overrides) -> TSMojoModel:
    torch.manual_seed(seed)
    return TSMojoModel(TSMojoConfig.tiny(**{**TINY, **overrides})).eval()


def random_walks(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, generator=generator).cumsum(-1) + 10


def load_eval(name: str):
    """A real dataset of the shared eval folder, read-only (never trained on); skips if absent."""
    import pandas as pd
    import pytest

    from tsmojo.data.real import shared_datasets_dir

    path = shared_datasets_dir() / "eval" / name / "data.parquet"
    if not path.is_file():
        pytest.skip(f"real dataset {path} not found (set TSMOJO_SHARED_DATASETS to the shared datasets folder)")
    return pd.read_parquet(path)
