"""Real series for pretraining, read from ``shared/datasets/pretrain``.

Only the pretrain folder is ever read here: ``eval/`` holds the benchmark and must never be
used for training. ``assert_not_eval`` enforces that for every path this module opens.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


def shared_datasets_dir() -> Path:
    """``$TSMOJO_SHARED_DATASETS`` or ``<repo>/../shared/datasets``."""
    default = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
    return Path(os.environ.get("TSMOJO_SHARED_DATASETS", default)).resolve()


def assert_not_eval(path: Path) -> None:
    """Refuse any path inside the benchmark folder."""
    eval_dir = (shared_datasets_dir() / "eval").resolve()
    resolved = Path(path).resolve()
    if resolved == eval_dir or eval_dir in resolved.parents:
        raise ValueError(f"{resolved} is inside the evaluation set {eval_dir}; it must never be used for training")


def pretrain_files(root: Path | None = None) -> list[Path]:
    """The parquet files of the pretrain folder, sorted for reproducibility."""
    root = (root or shared_datasets_dir()) / "pretrain"
    files = sorted(root.glob("*/data.parquet"))
    for path in files:
        assert_not_eval(path)
    return files


def load_pretrain_series(root: Path | None = None, min_length: int = 24) -> list[np.ndarray]:
    """Every pretrain series with at least ``min_length`` points, as float64 arrays in time order."""
    series: list[np.ndarray] = []
    for path in pretrain_files(root):
        frame = pd.read_parquet(path, columns=["unique_id", "ds", "y"]).sort_values(["unique_id", "ds"])
        for _, group in frame.groupby("unique_id", sort=True):
            values = group["y"].to_numpy(dtype=np.float64)
            if np.isfinite(values).sum() >= min_length:
                series.append(values)
    return series


def load_pretrain_panels(root: Path | None = None, min_steps: int = 256, max_variables: int = 16) -> list[np.ndarray]:
    """Aligned multivariate panels of the pretrain folder, as (variables, steps) float64 arrays.

    Series of one dataset form a panel when they share a timestamp grid: the variables of one
    station or basin (ids ``site|variable``), or a dataset's series as a whole. Panels of more
    than ``max_variables`` series are split in consecutive blocks; steps where no variable is
    observed are dropped at the ends only, so the grid keeps its spacing.
    """
    panels: list[np.ndarray] = []
    for path in pretrain_files(root):
        frame = pd.read_parquet(path, columns=["unique_id", "ds", "y"])
        ids = frame["unique_id"].astype(str)
        site = ids.str.split("|", n=1).str[0].where(ids.str.contains("|", regex=False), "")
        for _, members in frame.groupby(site.to_numpy(), sort=True):
            if members["unique_id"].nunique() < 2:
                continue
            wide = members.pivot_table(index="ds", columns="unique_id", values="y", aggfunc="first", dropna=False)
            wide = wide.sort_index()
            values = wide.to_numpy(dtype=np.float64).T  # (variables, steps)
            observed = np.isfinite(values).any(axis=0)
            if observed.sum() < min_steps:
                continue
            first, last = np.flatnonzero(observed)[[0, -1]]
            values = values[:, first : last + 1]
            values = values[np.isfinite(values).sum(axis=1) >= min_steps]
            for start in range(0, len(values), max_variables):
                block = values[start : start + max_variables]
                if len(block) >= 2:
                    panels.append(block)
    return panels
