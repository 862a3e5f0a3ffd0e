"""Vectorised synthetic series generators for pretraining.

Every generator has the signature ``generator(rng, n, length) -> (n, length) float64 array``
and draws ``n`` independent series at once with numpy, so data never starves the model.
Seasonal periods come from realistic calendars (hourly 24/168, daily 7/365, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Generator = Callable[[np.random.Generator, int, int], np.ndarray]

# Seasonal periods that real data at each sampling frequency carries; drawn per series.
PERIODS: dict[str, tuple[float, ...]] = {
    "hourly": (24.0, 168.0),
    "half_hourly": (48.0, 336.0),
    "daily": (7.0, 365.25, 30.4),
    "weekly": (52.18, 4.35),
    "monthly": (12.0,),
    "quarterly": (4.0,),
    "yearly": (),
}


def _sample_periods(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """A primary and a secondary period per series (inf = none), from one random calendar each."""
    calendars = list(PERIODS)
    primary, secondary = np.full(n, np.inf), np.full(n, np.inf)
    for i, name in enumerate(rng.choice(calendars, size=n)):
        periods = [p for p in PERIODS[name] if p * 1.5 <= length]
        if periods:
            primary[i] = periods[0]
            if len(periods) > 1 and rng.random() < 0.5:
                secondary[i] = periods[1]
    # Some series get an arbitrary period, so the model learns to find any cycle.
    free = rng.random(n) < 0.15
    primary[free] = rng.uniform(3, max(4.0, length / 3), size=free.sum())
    return primary, secondary


def _fourier_season(rng: np.random.Generator, period: np.ndarray, length: int, harmonics: int = 6) -> np.ndarray:
    """Random smooth-to-spiky seasonal shape with unit-ish amplitude; zero where period is inf."""
    n = period.shape[0]
    t = np.arange(length)[None, :]
    decay = rng.uniform(0.3, 1.5, size=(n, 1))
    out = np.zeros((n, length))
    finite = np.isfinite(period)
    safe_period = np.where(finite, period, 1.0)[:, None]
    for k in range(1, harmonics + 1):
        amp = rng.normal(size=(n, 1)) * np.exp(-decay * (k - 1))
        phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
        out += amp * np.sin(2 * np.pi * k * t / safe_period + phase)
    out /= out.std(axis=1, keepdims=True) + 1e-8
    return out * finite[:, None]


def smooth_noise(rng: np.random.Generator, n: int, length: int, lengthscale: np.ndarray) -> np.ndarray:
    """Gaussian-process-like smooth curves with an RBF spectrum, via random Fourier features."""
    features = 24
    t = np.arange(length)[None, None, :]
    omega = rng.normal(size=(n, features, 1)) / lengthscale[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, size=(n, features, 1))
    weights = rng.normal(size=(n, features, 1))
    return (weights * np.cos(omega * t + phase)).sum(1) * np.sqrt(2.0 / features)


def _ar1(rng: np.random.Generator, n: int, length: int, phi: np.ndarray) -> np.ndarray:
    eps = rng.normal(size=(n, length))
    out = np.empty_like(eps)
    out[:, 0] = eps[:, 0] / np.sqrt(1 - phi**2 + 1e-6)
    for t in range(1, length):
        out[:, t] = phi * out[:, t - 1] + eps[:, t]
    return out


def _piecewise_trend(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Linear trend whose slope changes at a few random changepoints."""
    slopes = np.zeros((n, length))
    slopes[:, 0] = rng.normal(scale=1.0, size=n)
    changes = rng.random((n, length)) < rng.uniform(0, 3, size=(n, 1)) / length
    slopes += changes * rng.normal(scale=1.0, size=(n, length))
    return np.cumsum(np.cumsum(slopes, axis=1), axis=1) / length


def seasonal_trend(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Trend with changepoints + one or two seasonalities (additive or multiplicative) + noise."""
    primary, secondary = _sample_periods(rng, n, length)
    season = _fourier_season(rng, primary, length) + rng.uniform(0, 0.7, (n, 1)) * _fourier_season(
        rng, secondary, length
    )
    trend = _piecewise_trend(rng, n, length) * rng.uniform(0, 3, (n, 1))
    noise = _ar1(rng, n, length, rng.uniform(-0.2, 0.8, n)) * rng.uniform(0.05, 0.8, (n, 1))
    amplitude = rng.uniform(0.2, 2.0, (n, 1))
    multiplicative = rng.random((n, 1)) < 0.3
    level = 3.0 + trend
    additive = level + amplitude * season + noise
    mult = level * np.exp(0.25 * amplitude * season + 0.1 * noise)
    return np.where(multiplicative, mult, additive)


def kernel_composition(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """KernelSynth-style draws: products and sums of periodic, RBF, rational-quadratic, linear,
    white-noise and constant components, each sampled from its spectrum."""
    t = np.linspace(0, 1, length)[None, :]
    primary, _ = _sample_periods(rng, n, length)

    def component(kind: np.ndarray) -> np.ndarray:
        out = np.zeros((n, length))
        lengthscale = np.exp(rng.uniform(np.log(length / 60), np.log(length * 1.5), n))
        rq_scale = lengthscale * np.exp(rng.normal(scale=0.7, size=n))  # a scale mixture of RBFs
        period = np.where(np.isfinite(primary), primary, rng.uniform(4, max(5.0, length / 2), n))
        makers = {
            0: lambda: _fourier_season(rng, period, length),
            1: lambda: smooth_noise(rng, n, length, lengthscale),
            2: lambda: 0.5 * (smooth_noise(rng, n, length, lengthscale) + smooth_noise(rng, n, length, rq_scale)),
            3: lambda: rng.normal(size=(n, 1)) * (t - rng.uniform(0, 1, (n, 1))) * 3,
            4: lambda: rng.normal(size=(n, length)) * 0.3,
            5: lambda: np.ones((n, length)) * rng.normal(size=(n, 1)),
        }
        for key, make in makers.items():
            chosen = kind == key
            if chosen.any():
                out[chosen] = make()[chosen]
        return out

    kinds = rng.choice(6, size=(n, 3), p=[0.3, 0.25, 0.15, 0.15, 0.1, 0.05])
    result = component(kinds[:, 0])
    for j in (1, 2):
        use = (rng.random(n) < 0.6)[:, None]
        multiply = (rng.random(n) < 0.35)[:, None]
        other = component(kinds[:, j])
        combined = np.where(multiply, result * (1 + 0.5 * other), result + other)
        result = np.where(use, combined, result)
    return result


def ets(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Simulated ETS(A/M, N/A/Ad, N/A/M) state-space paths."""
    primary, _ = _sample_periods(rng, n, min(length, 400))
    m = np.where(np.isfinite(primary), np.round(primary), 1).astype(int)
    m = np.minimum(m, 400)
    alpha = rng.uniform(0.05, 0.6, n)
    beta = alpha * rng.uniform(0, 0.3, n) * (rng.random(n) < 0.6)
    gamma = (1 - alpha) * rng.uniform(0, 0.3, n) * (m > 1)
    phi = np.where(rng.random(n) < 0.5, rng.uniform(0.8, 0.98, n), 1.0)
    sigma = rng.uniform(0.02, 0.25, n)
    multiplicative_error = rng.random(n) < 0.4
    level = np.full(n, 10.0)
    slope = rng.normal(scale=0.05, size=n) * (beta > 0)
    max_m = int(m.max())
    season = _fourier_season(rng, m.astype(float), max_m + 1)[:, :max_m]
    season = season * rng.uniform(0, 2.5, (n, 1)) * (m > 1)[:, None]
    out = np.empty((n, length))
    rows = np.arange(n)
    eps = rng.normal(size=(n, length)) * sigma[:, None]
    for t in range(length):
        s_index = t % m
        s = season[rows, s_index]
        mean = level + phi * slope + s
        error = np.where(multiplicative_error, np.abs(mean) * eps[:, t], eps[:, t] * 3)
        out[:, t] = mean + error
        new_level = level + phi * slope + alpha * error
        slope = phi * slope + beta * error
        season[rows, s_index] = s + gamma * error
        level = new_level
    return out


def arima(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """ARIMA(p<=3, d<=2, q<=2) with stationary AR roots."""
    burn = 50
    total = length + burn
    roots = rng.uniform(0.1, 0.95, (n, 3)) * np.sign(rng.normal(size=(n, 3)))
    roots *= rng.random((n, 3)) < np.array([0.9, 0.5, 0.2])
    # AR polynomial from roots: (1 - r1 L)(1 - r2 L)(1 - r3 L).
    c1 = roots.sum(1)
    c2 = -(roots[:, 0] * roots[:, 1] + roots[:, 0] * roots[:, 2] + roots[:, 1] * roots[:, 2])
    c3 = roots.prod(1)
    theta = rng.uniform(-0.6, 0.6, (n, 2)) * (rng.random((n, 2)) < 0.4)
    eps = rng.normal(size=(n, total))
    out = np.zeros((n, total))
    for t in range(3, total):
        out[:, t] = (
            c1 * out[:, t - 1]
            + c2 * out[:, t - 2]
            + c3 * out[:, t - 3]
            + eps[:, t]
            + theta[:, 0] * eps[:, t - 1]
            + theta[:, 1] * eps[:, t - 2]
        )
    out = out[:, burn:]
    d = rng.choice(3, size=n, p=[0.45, 0.45, 0.1])
    once = np.cumsum(out, axis=1)
    twice = np.cumsum(once, axis=1) / np.sqrt(length)
    return np.where((d == 0)[:, None], out, np.where((d == 1)[:, None], once, twice))


def random_walk_shifts(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Random walks with drift, level shifts and occasional regime changes in volatility."""
    volatility = np.exp(np.cumsum(rng.normal(scale=0.05, size=(n, length)), axis=1) * (rng.random((n, 1)) < 0.5))
    steps = rng.normal(size=(n, length)) * volatility + rng.normal(scale=0.1, size=(n, 1))
    shifts = (rng.random((n, length)) < rng.uniform(0, 4, (n, 1)) / length) * rng.normal(scale=8, size=(n, length))
    return np.cumsum(steps + shifts, axis=1)


def intermittent(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Intermittent and count demand: a smooth (often seasonal) rate, zero-inflated Poisson counts."""
    log_rate = 0.6 * smooth_noise(rng, n, length, np.full(n, length / 8.0))
    primary, _ = _sample_periods(rng, n, length)
    log_rate += rng.uniform(0, 1, (n, 1)) * _fourier_season(rng, primary, length)
    rate = np.exp(log_rate + rng.uniform(-1.5, 3.0, (n, 1)))
    demand = rng.poisson(rate).astype(float)
    occurs = rng.random((n, length)) < rng.uniform(0.1, 1.0, (n, 1))
    return demand * occurs


# Whole-step periods of calendar cycles (and their multiples) that real data repeats exactly.
INTEGER_PERIODS = (4, 7, 12, 24, 48, 52, 96, 168, 336)


def _repeating_shape(rng: np.random.Generator, period: int) -> np.ndarray:
    """One cycle of a repeating profile: smooth, spiky (rush hours) or on/off (opening hours)."""
    kind = rng.integers(3)
    if kind == 0:
        shape = np.cumsum(rng.normal(size=period))
        shape = shape - np.linspace(0, shape[-1] - shape[0], period)  # closes the cycle smoothly
    elif kind == 1:
        shape = np.zeros(period)
        for _ in range(rng.integers(1, 4)):
            centre, width = rng.uniform(0, period), rng.uniform(0.5, max(1.0, period / 6))
            distance = np.minimum(np.abs(np.arange(period) - centre), period - np.abs(np.arange(period) - centre))
            shape += rng.uniform(0.5, 2) * np.exp(-0.5 * (distance / width) ** 2)
    else:
        start, stop = np.sort(rng.integers(0, period + 1, 2))
        shape = ((np.arange(period) >= start) & (np.arange(period) < max(stop, start + 1))).astype(float)
    return (shape - shape.mean()) / (shape.std() + 1e-8)


def periodic_pattern(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """A cycle repeated almost verbatim (hourly load, traffic, sensors): the case where copying
    the last period beats any smooth fit. Some series carry a weekly factor on a daily cycle
    (24 and 168 steps, 7 and 365 days), a slowly drifting level and amplitude, and little noise."""
    out = np.empty((n, length))
    t = np.arange(length)
    for i in range(n):
        candidates = [p for p in INTEGER_PERIODS if 2.5 * p <= length]
        period = int(rng.choice(candidates)) if candidates and rng.random() < 0.8 else int(rng.integers(2, 40))
        series = np.resize(_repeating_shape(rng, period), length)
        if rng.random() < 0.5:  # a slower cycle modulating the fast one: weekdays against weekends
            slow = period * int(rng.choice([7, 4, 12])) if period <= 48 else period * 2
            if 1.5 * slow <= length:
                factor = np.resize(np.exp(0.3 * rng.normal(size=slow // period)), length // period + 1)
                series = series * np.repeat(factor, period)[:length] + 0.5 * np.resize(
                    _repeating_shape(rng, slow), length
                ) * rng.uniform(0, 1)
        drift = np.cumsum(rng.normal(size=length)) * rng.uniform(0, 0.02)
        amplitude = np.exp(np.cumsum(rng.normal(size=length)) * rng.uniform(0, 0.005))
        noise = rng.normal(size=length) * rng.uniform(0.0, 0.15)
        out[i] = 3.0 + drift + amplitude * series + noise + rng.normal() * t / length * (rng.random() < 0.3)
    return out


def flat_ending(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Trending or seasonal histories that go flat and stay flat (a saturated or discontinued
    series): the forecast must start at the last value, not continue the earlier motion."""
    base = np.where(rng.random((n, 1)) < 0.5, random_walk_shifts(rng, n, length), seasonal_trend(rng, n, length))
    stop = (length * rng.uniform(0.5, 0.9, n)).astype(int)
    after = np.arange(length)[None, :] >= stop[:, None]
    level = base[np.arange(n), stop][:, None]
    jitter = rng.normal(size=(n, length)) * np.abs(level) * rng.uniform(0, 0.002, (n, 1))
    return np.where(after, level + jitter, base)


def noisy_seasonal(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """A fixed seasonal profile under noise of 0.1 to 1.5 times its size, at a calendar period,
    on a level that may trend or grow (then the cycle grows with it): quarterly tourism, monthly
    admissions. Averaged over the cycles of the context the profile is plain to see even when no
    single cycle is, so the forecast should carry it at full amplitude; tsmojo-mini-v8 and -v9
    carry 0.6-0.8 of it on such real series (``benchmarks/seasonal_probe.py``)."""
    t = np.arange(length)
    out = np.empty((n, length))
    for i in range(n):
        candidates = [p for p in INTEGER_PERIODS if 3 * p <= length]
        period = int(rng.choice(candidates)) if candidates and rng.random() < 0.85 else int(rng.integers(3, 30))
        if rng.random() < 0.5:
            profile = np.resize(_repeating_shape(rng, period), length)
        else:
            profile = _fourier_season(rng, np.array([float(period)]), length, harmonics=int(rng.integers(1, 5)))[0]
        noise_ratio = np.exp(rng.uniform(np.log(0.1), np.log(1.5)))
        phi = rng.uniform(0.0, 0.5) * (rng.random() < 0.4)
        noise = _ar1(rng, 1, length, np.array([phi]))[0] * np.sqrt(1 - phi**2)
        kind = rng.integers(3)  # flat, a straight line, or exponential growth or decay
        rate = rng.uniform(-1.0, 1.5) / length
        level = np.where(kind == 0, 1.0, np.where(kind == 1, 1.0 + rate * t, np.exp(rate * t)))
        amplitude = rng.uniform(0.05, 0.4)
        if rng.random() < 0.5:  # multiplicative: the cycle and the noise scale with the level
            series = level * (1.0 + amplitude * (profile + noise_ratio * noise))
        else:
            series = level + amplitude * (profile + noise_ratio * noise)
        out[i] = series * rng.uniform(1.0, 100.0)
    return out


def steady_trend(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Trends that hold through the horizon under mild noise: a straight line, exponential growth
    or decay, or a random walk whose drift outweighs its steps (macro aggregates, installed bases,
    declining stocks). The case where damping a trend toward the last value or the last cycle
    loses; its opposite is :func:`flat_ending`."""
    t = np.arange(length)[None, :]
    kind = rng.integers(3, size=(n, 1))
    sign = rng.choice([-1.0, 1.0], size=(n, 1))
    noise = rng.normal(size=(n, length))
    line = sign * rng.uniform(0.02, 0.3, (n, 1)) * t + noise
    growth = np.exp(sign * rng.uniform(0.5, 2.0, (n, 1)) * t / length)
    exponential = growth * (1.0 + rng.uniform(0.005, 0.03, (n, 1)) * noise)
    drift = sign * rng.uniform(0.3, 1.0, (n, 1))
    walk = np.cumsum(drift + rng.uniform(0.1, 0.5, (n, 1)) * noise, axis=1)
    return np.where(kind == 0, line, np.where(kind == 1, exponential, walk)) + rng.uniform(-5, 5, (n, 1))


GENERATORS: dict[str, Generator] = {
    "seasonal_trend": seasonal_trend,
    "kernel_composition": kernel_composition,
    "ets": ets,
    "arima": arima,
    "random_walk_shifts": random_walk_shifts,
    "intermittent": intermittent,
    "periodic_pattern": periodic_pattern,
    "flat_ending": flat_ending,
    "steady_trend": steady_trend,
    "noisy_seasonal": noisy_seasonal,
}


def add_outliers(rng: np.random.Generator, series: np.ndarray, rate: float = 0.005) -> np.ndarray:
    """Isolated spikes of several standard deviations."""
    std = np.nanstd(series, axis=1, keepdims=True) + 1e-8
    spikes = (rng.random(series.shape) < rate) * rng.normal(scale=5, size=series.shape) * std
    return series + spikes


def heteroscedastic_noise(rng: np.random.Generator, series: np.ndarray) -> np.ndarray:
    """Noise whose scale follows the level or a slow random curve."""
    n, length = series.shape
    std = np.nanstd(series, axis=1, keepdims=True) + 1e-8
    envelope = np.exp(0.7 * smooth_noise(rng, n, length, np.full(n, length / 4.0)))
    return series + rng.normal(size=series.shape) * envelope * std * rng.uniform(0.02, 0.3, (n, 1))
