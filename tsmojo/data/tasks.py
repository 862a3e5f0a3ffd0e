"""Pretraining batches: univariate, multivariate and covariate tasks with augmentations.

A batch is the dict consumed by :mod:`tsmojo.lightning_module` (context, future, roles,
group_ids). Everything is drawn from one seeded numpy generator, so a (seed, batch index)
pair always gives the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tsmojo.data.synthetic import (
    GENERATORS,
    add_outliers,
    heteroscedastic_noise,
    kernel_composition,
    periodic_pattern,
    smooth_noise,
)
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
            "periodic_pattern": 0.15,
            "flat_ending": 0.04,
        }
    )
    real_share: float = 0.15
    mixup_share: float = 0.15
    group_row_share: float = 0.3
    # Shares of the group tasks: cotemporaneous, lead-lag, generic covariates, energy market,
    # weather-driven demand, and real multivariate panels (when loaded).
    group_task_weights: tuple[float, ...] = (0.15, 0.1, 0.2, 0.2, 0.15, 0.2)
    short_context_share: float = 0.25
    missing_share: float = 0.15
    # Loss weight of a target row whose group also holds covariates. Such a group spends the
    # compute of all its rows on one target's loss, so at weight 1 covariate-driven targets are a
    # small share of the loss however often they are drawn.
    covariate_target_weight: float = 1.0


MIN_REAL_CONTEXT = 8  # the fewest context points a shortened real series keeps (TaskSampler._real)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - np.nanmean(x, axis=1, keepdims=True)) / (np.nanstd(x, axis=1, keepdims=True) + 1e-8)


class TaskSampler:
    """Draws pretraining batches of ``context_length + horizon`` points per row."""

    def __init__(
        self,
        real_series: list[np.ndarray] | None = None,
        mix: TaskMix | None = None,
        real_panels: list[np.ndarray] | None = None,
    ) -> None:
        self.real_series = real_series or []
        self.real_panels = real_panels or []  # (variables, steps) arrays of aligned real series
        self.mix = mix or TaskMix()

    # -- univariate ----------------------------------------------------------------------
    def _synthetic(self, rng: np.random.Generator, n: int, length: int) -> np.ndarray:
        names = list(self.mix.generator_weights)
        weights = np.array([self.mix.generator_weights[k] for k in names])
        counts = rng.multinomial(n, weights / weights.sum())
        parts = [GENERATORS[name](rng, count, length) for name, count in zip(names, counts) if count]
        out = np.concatenate(parts, axis=0) if parts else np.zeros((0, length))
        return out[rng.permutation(n)]

    def _real(self, rng: np.random.Generator, n: int, length: int, horizon: int = 0) -> np.ndarray:
        """Windows of ``length`` points of real series, right-aligned and NaN-padded on the left.

        A series shorter than the window gives a random stretch of itself that ends ``horizon``
        points after a context of at least half the points it has before those, not the whole
        series: otherwise every draw of it that is not shortened at random
        (``TaskMix.short_context_share``) would have the same context length, and a dataset whose
        series share one length (862 of the real series have 104 points, so a 40-point context
        before a 64-step horizon) would be recognisable by that length alone. Models trained so
        damped the trend of most 40-point contexts and of few 39- or 41-point ones
        (``benchmarks/trend_probe.py``)."""
        out = np.full((n, length), np.nan)
        for i, index in enumerate(rng.integers(len(self.real_series), size=n)):
            values = self.real_series[index]
            if len(values) > length:
                start = int(rng.integers(0, len(values) - length + 1))
                values = values[start : start + length]
            elif len(values) - horizon > MIN_REAL_CONTEXT:
                most = len(values) - horizon
                points = int(rng.integers(max(MIN_REAL_CONTEXT, most // 2), most + 1))
                first = int(rng.integers(0, most - points + 1))
                values = values[first : first + points + horizon]
            out[i, length - len(values) :] = values
        return out

    def univariate(self, rng: np.random.Generator, n: int, length: int, horizon: int = 0) -> np.ndarray:
        """``n`` univariate rows of ``length`` points (the last ``horizon`` of them to forecast):
        synthetic series and real ones (``TaskMix.real_share``), some mixed (TSMixup)."""
        num_real = rng.binomial(n, self.mix.real_share) if self.real_series else 0
        real = self._real(rng, num_real, length, horizon)
        series = np.concatenate([self._synthetic(rng, n - num_real, length), real])
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
        drivers = []
        for _ in range(num_covariates):
            kind = rng.integers(3)
            if kind == 0:  # events such as promotions or holidays
                c = (rng.random(length) < rng.uniform(0.03, 0.2)).astype(float)
            elif kind == 1:  # smooth drivers such as temperature
                c = _standardise(kernel_composition(rng, 1, length))[0]
            else:  # piecewise-constant drivers such as a price
                c = np.repeat(rng.normal(size=length // 8 + 1), 8)[:length]
            drivers.append(c)
        covariates = np.stack(drivers)
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

    def _known_forecast(self, rng: np.random.Generator, driver: np.ndarray) -> np.ndarray:
        """A published forecast of ``driver``: the truth plus a smooth error, as load and weather
        forecasts are."""
        length = driver.shape[0]
        error = smooth_noise(rng, 1, length, np.array([rng.uniform(5, 50)]))[0]
        return driver + error * driver.std() * rng.uniform(0.0, 0.15)

    def _energy_market(self, rng: np.random.Generator, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """An hourly-like electricity price driven by residual load (load minus wind and solar)
        through a convex merit-order curve, with load and renewable forecasts as known covariates."""
        day = int(rng.choice([24, 48, 96, 12]))
        t = np.arange(length)
        load = periodic_pattern(rng, 1, length)[0]
        load = (load - load.mean()) / (load.std() + 1e-8)
        solar = np.clip(np.sin(2 * np.pi * (t % day) / day - np.pi / 2), 0, None)
        solar *= np.exp(0.5 * smooth_noise(rng, 1, length, np.array([day * 2.0]))[0])
        wind = np.exp(smooth_noise(rng, 1, length, np.array([day * rng.uniform(0.5, 4)]))[0])
        renewables = rng.uniform(0, 1.5) * solar + rng.uniform(0, 1.5) * wind
        residual = load - renewables + rng.normal(0, 0.3)
        curvature = rng.uniform(0.3, 1.5)
        price = np.exp(curvature * residual) + rng.uniform(0, 0.5) * residual
        spikes = (rng.random(length) < 0.003) * rng.exponential(5, length)
        price = price + spikes + 0.05 * rng.normal(size=length) * price.std()
        if rng.random() < 0.3:  # negative prices when renewables flood the market
            price = price - rng.uniform(0, 1) * price.std()
        drivers = [load, renewables, solar, wind][: max(1, size - 1)]
        covariates = np.stack([self._known_forecast(rng, d) for d in drivers])
        roles = np.full(len(drivers), FUTURE_COVARIATE)
        target = price * rng.uniform(5, 50) + rng.normal(0, 10)
        return np.concatenate([target[None], covariates * rng.uniform(1, 100, (len(drivers), 1))]), np.concatenate(
            [[TARGET], roles]
        )

    def _weather_driven(self, rng: np.random.Generator, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Demand or a pollutant driven by temperature (heating and cooling degrees), humidity or
        wind, and holidays, on top of its own daily and weekly profile."""
        day = int(rng.choice([24, 48, 7, 1]))
        t = np.arange(length)
        year = 365.25 * (24 if day == 24 else 48 if day == 48 else 1)
        temperature = (
            12
            + 10 * np.sin(2 * np.pi * t / year + rng.uniform(0, 2 * np.pi))
            + 3 * np.sin(2 * np.pi * t / max(day, 2) - 2) * (day > 7)
            + 3 * smooth_noise(rng, 1, length, np.array([max(day, 3) * 2.0]))[0]
        )
        comfort = rng.uniform(15, 20)
        effect = rng.uniform(0, 0.3) * np.clip(comfort - temperature, 0, None) + rng.uniform(0, 0.4) * np.clip(
            temperature - comfort - 3, 0, None
        )
        covariates, roles = [temperature], [FUTURE_COVARIATE]
        if size > 2:
            wind = np.exp(smooth_noise(rng, 1, length, np.array([max(day, 3) * 1.5]))[0])
            effect = effect - rng.uniform(0, 2) * wind  # dilutes pollutants, cools buildings
            covariates.append(wind)
            roles.append(FUTURE_COVARIATE)
        if size > 3:
            holidays = (rng.random(length // max(day, 1) + 1) < 0.03).repeat(max(day, 1))[:length].astype(float)
            effect = effect - rng.uniform(0.5, 3) * holidays
            covariates.append(holidays)
            roles.append(FUTURE_COVARIATE)
        profile = periodic_pattern(rng, 1, length)[0]
        target = rng.uniform(0.2, 1) * (profile - profile.mean()) + effect + 0.1 * rng.normal(size=length)
        rows = np.concatenate([target[None] * rng.uniform(1, 50) + rng.normal(0, 50), np.stack(covariates)])
        return rows, np.concatenate([[TARGET], roles])

    def _real_panel(self, rng: np.random.Generator, size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """A window of a real multivariate panel (a station's pollutants and weather, a basin's
        flow and rainfall): one variable is the target, others its covariates, as Chronos-2's
        multivariate tasks over real data."""
        panel = self.real_panels[rng.integers(len(self.real_panels))]
        variables, steps = panel.shape
        start = int(rng.integers(0, max(1, steps - length + 1)))
        window = panel[:, start : start + length]
        order = rng.permutation(variables)[: min(size, variables)]
        rows = np.full((len(order), length), np.nan)
        rows[:, length - window.shape[1] :] = window[order]
        roles = np.where(rng.random(len(order) - 1) < 0.7, FUTURE_COVARIATE, PAST_COVARIATE)
        return rows, np.concatenate([[TARGET], roles])

    def group_task(self, rng: np.random.Generator, length: int) -> tuple[np.ndarray, np.ndarray]:
        size = int(rng.integers(2, 7))
        makers = [
            self._cotemporaneous, self._lead_lag, self._covariate, self._energy_market, self._weather_driven,
            self._real_panel,
        ]  # fmt: skip
        weights = np.array(self.mix.group_task_weights, dtype=float)
        if not self.real_panels:
            weights[5] = 0.0
        maker = makers[rng.choice(len(makers), p=weights / weights.sum())]
        return maker(rng, size, length)

    # -- batches ---------------------------------------------------------------------------
    def _degrade_context(self, rng: np.random.Generator, context: np.ndarray) -> np.ndarray:
        """Short histories, random missing values and missing blocks."""
        n, length = map(int, context.shape)  # ints: numpy's stubs read an Any size as a scalar draw
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
        rows.append(self.univariate(rng, num_single, length, horizon))
        roles.append(np.full(num_single, TARGET))
        groups.append(np.arange(next_group, next_group + num_single))

        series = np.concatenate(rows).astype(np.float64)
        roles_array, group_array = np.concatenate(roles), np.concatenate(groups)
        # Random affine change per group keeps the model indifferent to units.
        scale = np.exp(rng.normal(0, 1.5, group_array.max() + 1))[group_array][:, None]
        shifted = rng.random((len(series), 1)) < 0.3
        offset = rng.normal(0, 1, group_array.max() + 1)[group_array][:, None] * shifted
        series = series * scale + offset * scale * 10
        # A rare draw (an exponential price curve times a large random scale) leaves float32's
        # range; clipped, it stays a finite, extreme series instead of an infinite loss.
        series = np.clip(series, -1e30, 1e30)
        context, future = series[:, :context_length], series[:, context_length:]
        context = self._degrade_context(rng, context)
        bad = ~np.isfinite(context).any(axis=1)
        context[bad, -1] = 0.0  # a row must have at least one observation
        has_covariates = np.zeros(group_array.max() + 1, dtype=bool)
        has_covariates[group_array[roles_array != TARGET]] = True
        target_weights = np.where(has_covariates[group_array], self.mix.covariate_target_weight, 1.0)
        return {
            "context": torch.from_numpy(context.astype(np.float32)),
            "future": torch.from_numpy(future.astype(np.float32)),
            "roles": torch.from_numpy(roles_array.astype(np.int64)),
            "group_ids": torch.from_numpy(group_array.astype(np.int64)),
            "target_weights": torch.from_numpy(target_weights.astype(np.float32)),
        }
