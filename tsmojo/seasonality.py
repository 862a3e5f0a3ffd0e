"""Seasonal period detection and the seasonal-naive hint the model reads beside the values.

A patch model has to rebuild a cycle from its own summary of the past, and on near-periodic
series (hourly load, temperatures, traffic) that loses to copying the last cycle. So every row
gets a hint: the value one detected period earlier, over the context (so the model sees how
well the copy would have done) and over the horizon (the seasonal-naive forecast itself).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def detect_period(scaled: torch.Tensor, max_period: int, window: int, min_correlation: float) -> torch.Tensor:
    """Dominant seasonal period of each row, 0 where none is found.

    The autocorrelation of the first differences (so trends do not mask cycles) over the last
    ``window`` steps is computed with NaN-aware pair counts, so left padding and missing values
    change nothing. Candidate lags lie in ``2 .. max_period`` with pairs for at least half the
    observed window; a candidate is a local maximum of the correlation, follows a negative dip,
    and clears both ``min_correlation`` and three standard errors of white noise. The period is
    the shortest candidate within 20% of the best one.

    scaled: (B, L) float, NaN where missing. Returns (B,) int64.
    """
    x = scaled[:, -window:].double()
    diff = x[:, 1:] - x[:, :-1]
    observed = ~torch.isnan(diff)
    count = observed.sum(-1, keepdim=True).clamp(min=1)
    centred = torch.where(observed, diff - torch.nan_to_num(diff).sum(-1, keepdim=True) / count, 0.0)
    mask = observed.double()
    n = centred.shape[1]
    size = 1 << (2 * n - 1).bit_length()
    spectrum = torch.fft.rfft(centred, size)
    products = torch.fft.irfft(spectrum * spectrum.conj(), size)[:, :n]
    mask_spectrum = torch.fft.rfft(mask, size)
    pairs = torch.fft.irfft(mask_spectrum * mask_spectrum.conj(), size)[:, :n].round()
    correlation = products / pairs.clamp(min=1) / (products[:, :1] / pairs[:, :1].clamp(min=1)).clamp(min=1e-12)
    lags = torch.arange(n, device=scaled.device)
    usable = (lags >= 2) & (lags <= max_period) & (pairs >= 0.5 * count) & (pairs >= 8)
    peak = torch.zeros_like(usable)
    peak[:, 1:-1] = (correlation[:, 1:-1] >= correlation[:, :-2]) & (correlation[:, 1:-1] >= correlation[:, 2:])
    # A peak must clear both the floor and the noise level of its own pair count (3 standard
    # errors of a white-noise autocorrelation), so short yearly series do not find cycles.
    significant = correlation > torch.clamp(3.0 / pairs.clamp(min=1).sqrt(), min=min_correlation)
    # A cycle's differences anti-correlate at some lag before the period (half a cycle on);
    # smooth non-periodic motion has no such dip, and its slowly decaying correlation would
    # otherwise make the first lags look like short periods.
    dipped = F.pad(torch.cummin(correlation[:, 1:], dim=-1).values < 0, (1, 0), value=False)
    dipped = F.pad(dipped[:, :-1], (1, 0), value=False)  # a dip strictly before the lag
    score = torch.where(usable & peak & significant & dipped, correlation, torch.full_like(correlation, -1.0))
    best = score.max(-1, keepdim=True).values
    # Multiples of a period correlate about as well as the period itself: take the shortest lag
    # within 20% of the best, which copies the most recent cycle.
    close = (score > 0) & (score >= 0.8 * best)
    first = torch.where(close, lags, torch.full_like(lags, n)).min(-1).values
    return torch.where(best[:, 0] > 0, first, torch.zeros_like(first))


def seasonal_hint(scaled: torch.Tensor, period: torch.Tensor, horizon: int, drift: bool = False) -> torch.Tensor:
    """The value one period earlier for every context step and the seasonal-naive forecast for
    the ``horizon`` steps after it (the last cycle repeated); NaN where there is no period or no
    such value. With ``drift``, the forecast's k-th repeat of the cycle is moved by k periods of
    the context's :func:`seasonal_drift`, as seasonal naive with drift does.

    scaled: (B, L); period: (B,) int64. Returns (B, L + horizon).
    """
    length = scaled.shape[1]
    steps = torch.arange(length + horizon, device=scaled.device)
    m = period.clamp(min=1)[:, None]
    # Past steps read one period back; future step L + j reads L - m + (j mod m).
    source = torch.where(steps < length, steps - m, length - m + (steps - length) % m)
    valid = (period[:, None] > 0) & (source >= 0)
    values = torch.gather(scaled, 1, source.clamp(min=0, max=length - 1))
    if drift and horizon > 0:
        repeats = torch.where(steps < length, 0, torch.div(steps - length, m, rounding_mode="floor") + 1)
        values = values + seasonal_drift(scaled, period) * m * repeats
    return torch.where(valid, values, torch.full_like(values, float("nan")))


# Cycles of seasonal differences that seasonal_drift averages: one alone is as noisy as the
# series, and a long average lags a trend that changed.
DRIFT_CYCLES = 3


def seasonal_drift(scaled: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """Change per step from one cycle to the next, averaged over the observed pairs of the last
    ``DRIFT_CYCLES`` periods of the context: (B, 1), 0 where a row has no period or no pair.

    A copy of the last cycle holds the level of a trending series still, so a gate that moves a
    forecast toward it damps the trend; on a series without a trend the drift is about 0."""
    length = scaled.shape[1]
    m = period.clamp(min=1)[:, None]
    recent = torch.arange(length, device=scaled.device)[None, :] >= length - DRIFT_CYCLES * m
    differences = lag_differences(scaled, period)
    differences = torch.where(recent, differences, torch.full_like(differences, float("nan")))
    drift = torch.nanmean(differences, dim=-1, keepdim=True) / m
    return torch.nan_to_num(drift, nan=0.0)


# Below this error (in scaled units) a cycle counts as copied exactly: an exactly periodic
# context would otherwise have an unbounded gain.
_NAIVE_ERROR_FLOOR = 1e-2


def lag_differences(scaled: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
    """Each step minus the step ``lag`` earlier, per row: (B, L), NaN where either is missing or a
    row's lag is 0. scaled (B, L) with NaN; lag (B,) int64."""
    return scaled - seasonal_hint(scaled, lag, horizon=0)


def mean_lag_error(scaled: torch.Tensor, lag: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between each step and the step ``lag`` earlier, per row, over
    the pairs both observed; NaN where a row has none. scaled (B, L) with NaN; lag (B,) >= 1."""
    return torch.nanmean(lag_differences(scaled, lag).abs(), dim=-1)


def seasonal_gain(scaled: torch.Tensor, period: torch.Tensor) -> torch.Tensor:
    """How much better copying the last cycle predicts a context than copying the last step, per
    row (B,): the one-step-naive error over the seasonal-naive error, both mean absolute over the
    context's observed pairs, the latter floored at 1e-2 (an exact copy would be unbounded);
    above 1, copying a cycle pays. NaN where a row has no period (0) or no pair.

    scaled: (B, L) with NaN; period: (B,) int64, as :func:`detect_period` returns it.
    """
    seasonal_error = mean_lag_error(scaled, period.clamp(min=1))
    seasonal_error = torch.where(period > 0, seasonal_error, torch.full_like(seasonal_error, float("nan")))
    step_error = mean_lag_error(scaled, torch.ones_like(period))
    return step_error / seasonal_error.clamp(min=_NAIVE_ERROR_FLOOR)
