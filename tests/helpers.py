"""Shared test helpers (tiny models keep the suite fast on 2 CPU cores)."""

import numpy as np
import pandas as pd
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
    import pytest

    from tsmojo.data.real import shared_datasets_dir

    path = shared_datasets_dir() / "eval" / name / "data.parquet"
    if not path.is_file():
        pytest.skip(f"real dataset {path} not found (set TSMOJO_SHARED_DATASETS to the shared datasets folder)")
    return pd.read_parquet(path)


def long_frame(lengths: dict, start="2021-01-01", freq="D") -> pd.DataFrame:
    """Series ``{id: length}`` in long format (unique_id, ds, y): y counts up from 10 * series index."""
    parts = []
    for k, (series_id, n) in enumerate(lengths.items()):
        parts.append(
            pd.DataFrame(
                {
                    "unique_id": series_id,
                    "ds": pd.date_range(start, periods=n, freq=freq),
                    "y": np.arange(n, dtype=float) + 10 * k,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)
