"""Pretraining batches: univariate, multivariate and covariate tasks with augmentations.

A batch is the dict consumed by :mod:`tsmojo.lightning_module` (context, future, roles,
group_ids). Everything is drawn from one seeded numpy generator, so a (seed, batch index)
pair always gives the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tsmojo.data.synthetic import GENERATORS, add_outliers, heteroscedastic_noise, kernel_composition
from tsmojo.model import FUTURE_COVARIATE, PAST_COVARIATE, TARGET


@dataclass
class TaskMix:
    """Shares of each source among the univariate rows and the size of the group tasks."""

    generator_weights: dict[str, float] = field(
        default_factory=lambda: {
            "seasonal_trend": 0.25,
            "kernel_composition": 0.15,
            "ets": 0.17,
            "arima": 0.13,
            "random_walk_shifts": 0.1,
            "intermittent": 0.1,
        }
    )
    real_share: float = 0.15
    mixup_share: float = 0.15
    group_row_share: float = 0.3
    short_context_share: float = 0.25
    missing_share: float = 0.15


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - np.nanmean(x, axis=1, keepdims=True)) / (np.nanstd(x, axis=1, keepdims=True) + 1e-8)


class TaskSampler:
    """Draws pretraining batches of ``context_length + horizon`` points per row."""

    def __init__(self, real_series: list[np.ndarray] | None = None, mix: TaskMix | None = None) -> None:
        self.real_series = real_series or []
        self.mix = mix or TaskMix()

    # -- univariate ----------------------------------------------------------------------
    def _synthetic(self, rng: np.random.Generator, n: int, length: int) -> np.ndarray:
        names = list(self.mix.generator_weights)
        weights = np.array([self.mix.generator_weights[k] for k in names])
        counts = rng.multinomial(n, weights / weights.sum())
        parts = [GENERATORS[name](rng, count, length) for name, count in zip(names, counts) if count]
        out = np.concatenate(parts, axis=0) if parts else np.zeros((0, length))
        return out[rng.permutation(n)]

    def _real(self, rng: np.random.Generator, n: int, length: int) -> np.ndarray:
        out = np.full((n, length), np.nan)
        for i, index in enumerate(rng.integers(len(self.real_series), size=n)):
            values = self.real_series[index]
            if len(values) > length:
                start = rng.integers(0, len(values) - length + 1)
                values = values[start : start + length]
            out[i, length - len(values) :] = values
        return out

    def univariate(self, rng: np.random.Generator, n: int, length: int) -> np.ndarray:
        num_real = rng.binomial(n, self.mix.real_share) if self.real_series else 0
        series = np.concatenate([self._synthetic(rng, n - num_real, length), self._real(rng, num_real, length)])
        # TSMixup: convex combinations of standardised series.
        mixed = rng.random(n) < self.mix.mixup_share
        if mixed.any():
            k = int(mixed.sum())
            partners = _standardise(self._synthetic(rng, k, length))
            weights = rng.dirichlet([1.0, 1.0], size=k)
            base = _standardise(series[mixed])
            series[mixed] = weights[:, :1] * base + weights[:, 1:] * partners + 3.0
        spiky = rng.random(n) < 0.1
        if spiky.any():
            series[spiky] = add_outliers(rng, series[spiky])
        noisy = rng.random(n) < 0.15
        if noisy.any():
            series[noisy] = heteroscedastic_noise(rng, series[noisy])
        return series[rng.permutation(n)]

    # -- group tasks -----------------------------------------------------------------------
    def _cotemporaneous(self, rng: np.random.Generator, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        factors = _standardise(self.univariate(rng, max(1, size // 2), length))
        loadings = rng.normal(size=(size, factors.shape[0]))
        rows = loadings @ np.nan_to_num(factors) + 0.3 * rng.normal(size=(size, length))
        return rows * rng.uniform(0.5, 5, (size, 1)) + rng.normal(0, 5, (size, 1)), np.full(size, TARGET)

    def _lead_lag(self, rng: np.random.Generator, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        max_lag = 12
        base = _standardise(self._synthetic(rng, 1, length + max_lag))[0]
        lags = rng.integers(0, max_lag + 1, size=size)
        rows = np.stack([base[max_lag - lag : max_lag - lag + length] for lag in lags])
        if rng.random() < 0.5:  # cointegration: a shared stochastic trend plus stationary gaps
            rows = np.cumsum(rng.normal(size=(1, length)), axis=1) * 0.2 + rows * 0.5
        rows = rows + 0.2 * rng.normal(size=rows.shape)
        return rows * rng.uniform(0.5, 3, (size, 1)) + rng.normal(0, 3, (size, 1)), np.full(size, TARGET)

    def _covariate(self, rng: np.random.Generator, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """A target driven by covariates through lagged and nonlinear effects."""
        num_covariates = size - 1
        covariates = []
        for _ in range(num_covariates):
            kind = rng.integers(3)
            if kind == 0:  # events such as promotions or holidays
                c = (rng.random(length) < rng.uniform(0.03, 0.2)).astype(float)
            elif kind == 1:  # smooth drivers such as temperature
                c = _standardise(kernel_composition(rng, 1, length))[0]
            else:  # piecewise-constant drivers such as a price
                c = np.repeat(rng.normal(size=length // 8 + 1), 8)[:length]
            covariates.append(c)
        covariates = np.stack(covariates)
        base = _standardise(self._synthetic(rng, 1, length))[0] * rng.uniform(0.1, 1.0)
        effect = np.zeros(length)
        for c in covariates:
            lag = rng.integers(0, 4) if rng.random() < 0.4 else 0
            shifted = np.concatenate([np.full(lag, c[0]), c[: length - lag]])
            transform = rng.integers(3)
            driven = shifted if transform == 0 else (np.tanh(2 * shifted) if transform == 1 else np.maximum(shifted, 0))
            effect += rng.normal(scale=2.0) * driven
        target = base + effect + 0.1 * rng.normal(size=length)
        roles = np.where(rng.random(num_covariates) < 0.75, FUTURE_COVARIATE, PAST_COVARIATE)
        rows = np.concatenate([target[None] * rng.uniform(1, 10) + rng.normal(0, 20), covariates])
        return rows, np.concatenate([[TARGET], roles])

    def group_task(self, rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray]:
        size = int(rng.integers(2, 7))
        maker = (self._cotemporaneous, self._lead_lag, self._covariate)[rng.choice(3, p=[0.3, 0.25, 0.45])]
        return maker(rng, size, length)

    # -- batches ---------------------------------------------------------------------------
    def _degrade_context(self, rng: np.random.Generator, context: np.ndarray) -> np.ndarray:
        """Short histories, random missing values and missing blocks."""
        n, length = context.shape
        short = rng.random(n) < self.mix.short_context_share
        keep = np.exp(rng.uniform(np.log(8), np.log(max(9, length)), n)).astype(int)
        columns = np.arange(length)[None, :]
        context = np.where(short[:, None] & (columns < length - keep[:, None]), np.nan, context)
        holes = rng.random(n) < self.mix.missing_share
        scattered = rng.random((n, length)) < rng.uniform(0, 0.15, (n, 1))
        block_start = rng.integers(0, length, n)[:, None]
        block = (columns >= block_start) & (columns < block_start + rng.integers(1, max(2, length // 8), n)[:, None])
        return np.where(holes[:, None] & (scattered | block), np.nan, context)

    def sample(self, rng: np.random.Generator, batch_size: int, context_length: int, horizon: int) -> dict:
        """One batch of about ``batch_size`` rows (group tasks are never split)."""
        length = context_length + horizon
        rows, roles, groups = [], [], []
        group_rows = int(batch_size * self.mix.group_row_share)
        next_group = 0
        while group_rows > 0:
            task, task_roles = self.group_task(rng, length)
            rows.append(task)
            roles.append(task_roles)
            groups.append(np.full(len(task_roles), next_group))
            next_group += 1
            group_rows -= len(task_roles)
        num_single = max(1, batch_size - sum(len(r) for r in roles))
        rows.append(self.univariate(rng, num_single, length))
        roles.append(np.full(num_single, TARGET))
        groups.append(np.arange(next_group, next_group + num_single))

        series = np.concatenate(rows).astype(np.float64)
        roles_array, group_array = np.concatenate(roles), np.concatenate(groups)
        # Random affine change per group keeps the model indifferent to units.
        scale = np.exp(rng.normal(0, 1.5, group_array.max() + 1))[group_array][:, None]
        shifted = rng.random((len(series), 1)) < 0.3
        offset = rng.normal(0, 1, group_array.max() + 1)[group_array][:, None] * shifted
        series = series * scale + offset * scale * 10
        context, future = series[:, :context_length], series[:, context_length:]
        context = self._degrade_context(rng, context)
        bad = ~np.isfinite(context).any(axis=1)
        context[bad, -1] = 0.0  # a row must have at least one observation
        return {
            "context": torch.from_numpy(context.astype(np.float32)),
            "future": torch.from_numpy(future.astype(np.float32)),
            "roles": torch.from_numpy(roles_array.astype(np.int64)),
            "group_ids": torch.from_numpy(group_array.astype(np.int64)),
        }
