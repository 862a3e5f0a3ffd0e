"""How much of a stable seasonal cycle a model carries forward, by period and history length.

    python benchmarks/seasonal_probe.py MODEL [MODEL ...] [--periods 4,12,24] [--cycles 3,6,12,25]
                                        [--noise 0.3] [--series 200]
    python benchmarks/seasonal_probe.py MODEL [MODEL ...] --datasets tourism_quarterly,m4_hourly

Each series is a level, a mild linear trend, a fixed seasonal profile of unit standard deviation
repeated exactly, and white noise of ``--noise`` standard deviations of the profile (seed 0). The
profile is a random mix of a few harmonics, so it is smooth, peaked or saw-toothed from one
series to the next. Every model forecasts two cycles after ``--cycles`` cycles of history.

For each forecast, the seasonal gain is the coefficient of the true future seasonal component in
a least-squares fit of the forecast median on it, a constant and a linear term: 1 carries the cycle
on at full amplitude, 0 forecasts it flat. The cycle is the same in every period of the history,
so a gain well below 1 with many cycles of history is damping that averaging them would not do.
Each cell is the median gain over the series and, after the slash, the model's mean absolute error
over the future relative to that of the average cycle: a linear trend fitted to the history plus
the mean of its detrended cycles, which the first rows score (its relative error is 1 by
definition). Few cycles under heavy noise justify some damping: an average of k cycles has an
estimation error of noise^2 / k of the profile's variance.

With ``--datasets NAME,...`` the script scores benchmark datasets instead (``benchmarks.common``):
on each series whose context has a strong, stable seasonal profile (classical decomposition at the
dataset's seasonality, at least three cycles, seasonal strength above 0.5), the gain is the
coefficient of that profile, continued over the horizon, in the same fit. It prints the median
over those series for the truth, seasonal naive and each model: a model that carries a cycle as
the truth does scores what the truth scores.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import forward_fill, load_dataset, seasonal_naive_values  # noqa: E402
from tsmojo import TSMojoPipeline  # noqa: E402

HARMONICS = 3
STRONG_PROFILE = 0.5  # seasonal strength above which a benchmark series counts as stably seasonal


def seasonal_series(
    count: int, period: int, cycles: int, horizon: int, noise: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """History (count, cycles * period), future (count, horizon) and the future's seasonal part."""
    rng = np.random.default_rng(seed)
    steps = np.arange(cycles * period + horizon)
    phase = 2 * np.pi * steps[None, :] / period
    profile = np.zeros((count, steps.size))
    for k in range(1, min(HARMONICS, period // 2) + 1):
        weight = rng.standard_normal((count, 1)) / k
        profile += weight * np.sin(k * phase + rng.uniform(0, 2 * np.pi, (count, 1)))
    profile /= profile[:, :period].std(axis=1, keepdims=True) + 1e-12
    level = rng.uniform(20.0, 200.0, (count, 1))
    amplitude = level * rng.uniform(0.05, 0.3, (count, 1))
    trend = amplitude * rng.uniform(-0.02, 0.02, (count, 1)) * steps[None, :]
    seasonal = amplitude * profile
    series = level + trend + seasonal + noise * amplitude * rng.standard_normal((count, steps.size))
    history = cycles * period
    return series[:, :history], series[:, history:], seasonal[:, history:]


def seasonal_gains(forecast: np.ndarray, seasonal: np.ndarray) -> np.ndarray:
    """Per row: the coefficient of ``seasonal`` in a fit of ``forecast`` on it, a constant and a line."""
    horizon = forecast.shape[1]
    gains = np.empty(len(forecast))
    for i in range(len(forecast)):
        design = np.stack([np.ones(horizon), np.arange(horizon), seasonal[i]], axis=1)
        gains[i] = np.linalg.lstsq(design, forecast[i], rcond=None)[0][2]
    return gains


def average_cycle_forecast(history: np.ndarray, period: int, horizon: int) -> np.ndarray:
    """The oracle: a linear trend fitted to the history plus the mean of its detrended cycles."""
    steps = np.arange(history.shape[1] + horizon)
    out = np.empty((len(history), horizon))
    for i, values in enumerate(history):
        slope, intercept = np.polyfit(steps[: values.size], values, 1)
        detrended = values - (intercept + slope * steps[: values.size])
        cycle = detrended.reshape(-1, period).mean(axis=0)
        out[i] = intercept + slope * steps[values.size :] + cycle[steps[values.size :] % period]
    return out


def context_profile(context: np.ndarray, period: int, horizon: int) -> tuple[np.ndarray, float] | None:
    """The classical-decomposition profile of ``context`` continued over ``horizon`` steps, and its
    seasonal strength (1 - residual variance / detrended variance); None under three cycles.

    The trend is the centred moving average of one period (2 x period for an even period). Missing
    values are carried forward (leading ones dropped), so the phases stay aligned with the calendar."""
    observed = np.flatnonzero(~np.isnan(context))
    if observed.size == 0:
        return None
    values = forward_fill(context[observed[0] :])
    if period < 2 or len(values) < 3 * period:
        return None
    trend = np.convolve(values, np.ones(period) / period, "valid")
    if period % 2 == 0:
        trend = np.convolve(trend, [0.5, 0.5], "valid")
    offset = period // 2
    detrended = values[offset : offset + len(trend)] - trend
    phases = (np.arange(len(detrended)) + offset) % period
    profile = np.array([detrended[phases == phase].mean() for phase in range(period)])
    profile -= profile.mean()
    residual = detrended - profile[phases]
    strength = 1.0 - residual.var() / (detrended.var() + 1e-12)
    return profile[(len(values) + np.arange(horizon)) % period], float(strength)


def dataset_gains(models: Sequence[str], names: Sequence[str]) -> None:
    """Print, per dataset, the median gain of the truth, seasonal naive and each model on the
    series with a strong stable profile."""
    pipelines = {model: TSMojoPipeline.from_pretrained(model) for model in models}
    print("median seasonal gain on the series whose context has a strong, stable profile")
    print("| dataset | series | truth | seasonal naive | " + " | ".join(models) + " |")
    print("|---" * (len(models) + 4) + "|")
    for name in names:
        dataset = load_dataset(name)
        horizon = dataset.prediction_length
        profiles = [context_profile(c, dataset.seasonality, horizon) for c in dataset.contexts]
        rows = [i for i, found in enumerate(profiles) if found is not None and found[1] > STRONG_PROFILE]
        if not rows:
            print(f"| {name} | 0 |" + " - |" * (len(models) + 2))
            continue
        seasonal = np.stack([profiles[i][0] for i in rows])
        forecasts = [np.stack(dataset.labels)[rows], seasonal_naive_values(dataset)[rows, :, 4]]
        contexts = [dataset.contexts[i] for i in rows]
        for pipeline in pipelines.values():
            quantiles, _ = pipeline.predict(contexts, horizon, quantile_levels=[0.5])
            forecasts.append(np.stack([q[0, :, 0] for q in quantiles]))
        cells = [f"{np.median(seasonal_gains(forecast, seasonal)):.2f}" for forecast in forecasts]
        print(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="bundled model names or model directories")
    parser.add_argument("--periods", default="4,12,24", help="seasonal periods in time steps")
    parser.add_argument("--cycles", default="3,6,12,25", help="cycles of history before the forecast")
    parser.add_argument("--noise", type=float, default=0.3, help="noise standard deviation over the profile's")
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--datasets", help="score these benchmark datasets (comma-separated) instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    if args.datasets:
        dataset_gains(args.models, args.datasets.split(","))
        return
    periods = [int(v) for v in args.periods.split(",")]
    cycles = [int(v) for v in args.cycles.split(",")]
    if min(periods) < 2 or min(cycles) < 2:
        parser.error("--periods and --cycles must be at least 2")
    print(
        f"median seasonal gain (1: full cycle, 0: flat) / mean absolute error over the average cycle's; "
        f"{args.series} series, noise {args.noise}, horizon 2 cycles"
    )
    print("| model | period | " + " | ".join(f"{c} cycles" for c in cycles) + " |")
    print("|---" * (len(cycles) + 2) + "|")
    cases = {
        (period, count): seasonal_series(args.series, period, count, 2 * period, args.noise)
        for period in periods
        for count in cycles
    }
    reference = {key: average_cycle_forecast(history, key[0], 2 * key[0]) for key, (history, _, _) in cases.items()}

    def cell(forecast: np.ndarray, key: tuple[int, int]) -> str:
        _, future, seasonal = cases[key]
        error = np.abs(forecast - future).mean() / np.abs(reference[key] - future).mean()
        return f"{np.median(seasonal_gains(forecast, seasonal)):.2f} / {error:.2f}"

    for period in periods:
        cells = [cell(reference[period, count], (period, count)) for count in cycles]
        print(f"| average cycle (oracle) | {period} | " + " | ".join(cells) + " |", flush=True)
    for model in args.models:
        pipeline = TSMojoPipeline.from_pretrained(model)
        for period in periods:
            cells = []
            for count in cycles:
                history = cases[period, count][0]
                quantiles, _ = pipeline.predict(list(history), 2 * period, quantile_levels=[0.5])
                cells.append(cell(np.stack([q[0, :, 0] for q in quantiles]), (period, count)))
            print(f"| {model} | {period} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
