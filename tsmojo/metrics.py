"""Forecast metrics and quantile naming: the one definition every part of tsmojo uses.

The definitions follow GluonTS (``gluonts.ev``), so that numbers from ``tsmojo evaluate``, from
fine-tuning validation and from the benchmarks can be compared with published ones:

* pinball loss at level ``q`` of the error ``e = y - f``: ``max(q e, (q - 1) e)``; the model
  trains on its mean;
* quantile loss ``QL_q = 2 * pinball`` (GluonTS' ``quantile_loss``);
* WQL (``mean_weighted_sum_quantile_loss``): for each level, ``QL_q`` summed over every series and
  step divided by ``|y|`` summed over the same points, then the mean over levels. It is a ratio of
  sums, so it is accumulated as sums (:func:`quantile_loss_sums`) and divided once
  (:func:`wql_from_sums`);
* seasonal error of a context ``c``: ``mean |c_t - c_{t-m}|``; MASE: the mean over points of
  ``|y - median| / seasonal_error``; SQL: the mean over levels and points of
  ``QL_q / seasonal_error``.

Missing labels (NaN) are left out of every sum, as GluonTS' ``mask_invalid_label`` does. The
element-wise functions take numpy arrays or torch tensors (the model and the Lightning module
compute on tensors, the backtest on arrays).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "DEFAULT_QUANTILE_LEVELS",
    "check_quantile_levels",
    "columns_by_level",
    "mase",
    "parse_quantile_column",
    "pinball",
    "pinball_loss",
    "quantile_column",
    "quantile_loss",
    "quantile_loss_sums",
    "scaled_quantile_loss",
    "seasonal_error",
    "weighted_quantile_loss",
    "wql_from_sums",
]

#: The levels forecasts are scored at and returned by default: 0.1, 0.2, ..., 0.9. (The model's
#: own 21 levels are ``tsmojo.config.DEFAULT_QUANTILES``.)
DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

Array = TypeVar("Array", np.ndarray, torch.Tensor)


# -- quantile column names -----------------------------------------------------------------------


def quantile_column(level: float) -> str:
    """Name of the column holding quantile ``level``: ``0.1 -> "0.1"``, ``0.025 -> "0.025"``."""
    return f"{float(level):g}"


def check_quantile_levels(levels: Iterable[float]) -> list[float]:
    """``levels`` as floats; raises ``ValueError`` unless each lies strictly between 0 and 1
    (NaN, 0, 1 or 1.5 are refused: a quantile forecast has no such level)."""
    try:
        values = [float(q) for q in levels]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"quantile_levels must be numbers, got {levels!r}") from exc
    if not values or any(not 0 < q < 1 for q in values):  # NaN fails the comparison too
        raise ValueError(f"quantile levels must lie strictly between 0 and 1, got {values}")
    return values


def parse_quantile_column(name: object) -> float | None:
    """The level a column name stands for (``"0.1" -> 0.1``), or ``None`` for any other column.

    Rounded to 9 decimals so that a level read back from a name compares equal to the same level
    rounded likewise."""
    try:
        level = float(str(name))
    except ValueError:
        return None
    return round(level, 9) if 0 < level < 1 else None


def columns_by_level(columns: Iterable[object]) -> dict[float, object]:
    """``{level: column}`` for the columns whose names are quantile levels."""
    return {level: name for name in columns if (level := parse_quantile_column(name)) is not None}


# -- element-wise losses -------------------------------------------------------------------------


def _array_module(values):
    return torch if isinstance(values, torch.Tensor) else np


def pinball(target: Array, forecast: Array, levels) -> Array:
    """Pinball loss per point and level: target (...,), forecast (..., Q), levels (Q,) -> (..., Q)."""
    xp = _array_module(forecast)
    if xp is np:
        levels = np.asarray(levels, dtype=float)
    error = target[..., None] - forecast
    return xp.maximum(levels * error, (levels - 1.0) * error)


def quantile_loss(target: Array, forecast: Array, levels) -> Array:
    """GluonTS' quantile loss per point and level, ``2 * pinball``; shapes as in :func:`pinball`."""
    return 2 * pinball(target, forecast, levels)


def pinball_loss(
    prediction: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """The model's training loss: the pinball loss averaged over levels, then a ``weight``-ed mean
    over points. prediction (B, H, Q); target and weight (B, H); quantiles (Q,)."""
    return weighted_point_mean(pinball(target, prediction, quantiles).mean(-1), weight)


def weighted_point_mean(per_point: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The ``weight``-ed mean of a loss per point (B, H); 0 when no point has weight."""
    return (per_point * weight).sum() / weight.sum().clamp(min=1.0)


# -- reductions ----------------------------------------------------------------------------------


def quantile_loss_sums(target: Array, forecast: Array, levels) -> tuple[Array, Array]:
    """The two sums WQL divides: per level, ``QL_q`` summed over the observed points (Q,), and
    ``|y|`` summed over them (a scalar). Sums of several batches add up to the sums of their union.

    target (...,) with NaN where missing; forecast (..., Q); levels (Q,)."""
    xp = _array_module(forecast)
    observed = ~xp.isnan(target)
    filled = xp.nan_to_num(target)
    losses = xp.where(observed[..., None], quantile_loss(filled, forecast, levels), 0.0)
    return losses.reshape(-1, losses.shape[-1]).sum(0), xp.abs(filled).sum()


def wql_from_sums(loss_sums: Array, abs_target_sum) -> Array:
    """WQL from the sums of :func:`quantile_loss_sums`: the mean over levels of ``sum QL_q / sum |y|``."""
    with np.errstate(divide="ignore", invalid="ignore"):  # no observed |y|: inf or NaN, as GluonTS
        return (loss_sums / abs_target_sum).mean()


def weighted_quantile_loss(target: np.ndarray, forecast: np.ndarray, levels: Sequence[float]) -> float:
    """WQL of ``forecast`` (..., Q) at ``levels`` against ``target`` (...,), over every point."""
    return float(wql_from_sums(*quantile_loss_sums(np.asarray(target, float), np.asarray(forecast, float), levels)))


def seasonal_error(context: np.ndarray, seasonality: int) -> float:
    """Mean absolute seasonal difference of ``context`` (NaN-aware), the MASE/SQL denominator.

    ``m = 1`` when the context is not longer than the seasonality; NaN without two observed
    points ``m`` apart."""
    context = np.asarray(context, dtype=float)
    m = seasonality if seasonality < len(context) else 1
    if len(context) <= m:
        return float("nan")
    diff = np.abs(context[m:] - context[:-m])
    return float(np.nanmean(diff)) if np.isfinite(diff).any() else float("nan")


def mase(absolute_errors: np.ndarray, seasonal_errors: np.ndarray) -> float:
    """MASE over points: the mean of ``|y - median| / seasonal_error`` (one scale per point)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(np.asarray(absolute_errors, float) / np.asarray(seasonal_errors, float)))


def scaled_quantile_loss(quantile_losses: np.ndarray, seasonal_errors: np.ndarray) -> float:
    """SQL (GluonTS ``average_mean_scaled_quantile_loss``): the mean over levels and points of
    ``QL_q / seasonal_error``. quantile_losses (N, Q), seasonal_errors (N,)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean(np.mean(quantile_losses / np.asarray(seasonal_errors, float)[:, None], axis=0)))
