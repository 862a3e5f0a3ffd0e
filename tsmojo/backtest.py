"""Rolling-origin backtests (``tsmojo evaluate``) with GluonTS metric definitions.

For a series of length ``T``, window ``w = 0..K-1`` forecasts ``y[s : s + H]`` from the context
``y[:s]`` with ``s = T - H - (K - 1 - w) * step``: the last window ends at the end of the series,
earlier ones start ``step`` points apart. Windows without at least one context point are skipped.

Metrics, as in ``gluonts.ev`` (NaN labels are masked, like GluonTS does):

* seasonal error of a window: ``mean |c_t - c_{t-m}|`` over its context ``c`` (``m = 1`` when
  the context is not longer than ``m``);
* MASE: ``mean |y - median| / seasonal_error``;
* quantile loss ``QL_q = 2 * |(y - f_q) * (1{f_q >= y} - q)|``;
* WQL: ``mean_q  sum QL_q / sum |y|`` (sums over every time step and window in the group);
* SQL (scaled quantile loss, GluonTS ``average_mean_scaled_quantile_loss``): ``mean_q mean(QL_q / seasonal_error)``.

MASE and SQL of a group (a series, a window index, everything) are means over all its time steps,
WQL is a ratio of sums over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["BacktestResult", "make_windows", "rolling_backtest", "score_windows", "seasonal_error"]

DEFAULT_QUANTILES = tuple(round(0.1 * i, 1) for i in range(1, 10))


def seasonal_error(context: np.ndarray, seasonality: int) -> float:
    """Mean absolute seasonal difference of ``context`` (NaN-aware), the MASE/SQL denominator."""
    context = np.asarray(context, dtype=float)
    m = seasonality if seasonality < len(context) else 1
    if len(context) <= m:
        return float("nan")
    diff = np.abs(context[m:] - context[:-m])
    return float(np.nanmean(diff)) if np.isfinite(diff).any() else float("nan")


@dataclass
class Window:
    key: str
    series_id: object
    window: int
    context: pd.DataFrame
    label: np.ndarray
    label_timestamps: np.ndarray
    seasonal_error: float


def make_windows(
    clean: pd.DataFrame,
    id_column: str,
    timestamp_column: str,
    target: str,
    prediction_length: int,
    windows: int,
    step: int,
    seasonality: int,
    context_length: int | None = None,
) -> tuple[list[Window], list[tuple[object, str]]]:
    """Cut every series of a validated frame into rolling-origin windows.

    Returns ``(windows, errors)``; a series too short for any window is an error.
    """
    result, errors = [], []
    for index, (series_id, part) in enumerate(clean.groupby(id_column, sort=False)):
        values = part[target].to_numpy(dtype=float)
        length = len(values)
        made = 0
        for w in range(windows):
            start = length - prediction_length - (windows - 1 - w) * step
            if start < 1:
                continue
            context = part.iloc[:start]
            if not np.isfinite(context[target].to_numpy(dtype=float)).any():
                continue
            label = values[start : start + prediction_length]
            if context_length:
                context = context.iloc[-context_length:]
            scale_context = values[:start]
            result.append(
                Window(
                    key=f"{index}:{w}",
                    series_id=series_id,
                    window=w,
                    context=context.assign(**{id_column: f"{index}:{w}"}),
                    label=label,
                    label_timestamps=part[timestamp_column].to_numpy()[start : start + prediction_length],
                    seasonal_error=seasonal_error(scale_context, seasonality),
                )
            )
            made += 1
        if not made:
            errors.append(
                (
                    series_id,
                    f"too short for a backtest: {length} points, need more than "
                    f"{prediction_length + (windows - 1) * step} for {windows} window(s) of {prediction_length}",
                )
            )
    return result, errors


def score_windows(
    windows: Sequence[Window], forecasts: dict[str, np.ndarray], quantiles: Sequence[float]
) -> pd.DataFrame:
    """One row per (window, time step): label, abs error, scaled error and quantile losses.

    ``forecasts[key]`` is an array (H, len(quantiles)); the median is the 0.5 column, or the
    column nearest 0.5.
    """
    quantiles = np.asarray(quantiles, dtype=float)
    median = int(np.argmin(np.abs(quantiles - 0.5)))
    rows = []
    for window in windows:
        predicted = forecasts[window.key]
        label = window.label
        steps = min(len(label), len(predicted))
        label, predicted = label[:steps], predicted[:steps]
        ql = 2 * np.abs((label[:, None] - predicted) * ((predicted >= label[:, None]) - quantiles))
        frame = pd.DataFrame(
            {
                "series_id": [window.series_id] * steps,
                "window": window.window,
                "abs_label": np.abs(label),
                "abs_error": np.abs(label - predicted[:, median]),
                "seasonal_error": window.seasonal_error,
            }
        )
        for j, q in enumerate(quantiles):
            frame[f"ql_{q:g}"] = ql[:, j]
        frame = frame[np.isfinite(label)]  # GluonTS masks missing labels
        rows.append(frame)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _aggregate(steps: pd.DataFrame, quantiles: Sequence[float]) -> dict[str, float]:
    ql = steps[[f"ql_{q:g}" for q in quantiles]].to_numpy(dtype=float)
    scale = steps["seasonal_error"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mase = float(np.mean(steps["abs_error"].to_numpy(dtype=float) / scale))
        wql = float(np.mean(ql.sum(axis=0) / steps["abs_label"].sum()))
        sql = float(np.mean(np.mean(ql / scale[:, None], axis=0)))
    return {"MASE": mase, "WQL": wql, "SQL": sql}


@dataclass
class BacktestResult:
    per_series: pd.DataFrame
    aggregate: pd.DataFrame
    errors: list[tuple[object, str]]


def rolling_backtest(
    clean: pd.DataFrame,
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    id_column: str,
    timestamp_column: str,
    target: str,
    prediction_length: int,
    windows: int = 1,
    step: int | None = None,
    seasonality: int = 1,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    context_length: int | None = None,
) -> BacktestResult:
    """Backtest ``predict`` on every series of a validated frame.

    ``predict(contexts)`` receives the stacked contexts of all windows (the id column holds one
    key per window) and returns tsmojo's forecast frame (id, timestamp, quantile columns).
    """
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    step = prediction_length if step is None else step
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    cut, errors = make_windows(
        clean, id_column, timestamp_column, target, prediction_length, windows, step, seasonality, context_length
    )
    if not cut:
        empty = pd.DataFrame(columns=[id_column, "windows", "MASE", "WQL", "SQL"])
        return BacktestResult(empty, pd.DataFrame(columns=["window", "num_series", "MASE", "WQL", "SQL"]), errors)
    contexts = pd.concat([w.context for w in cut], ignore_index=True)
    forecast_frame = predict(contexts)
    names = {}
    for name in forecast_frame.columns:
        try:
            names[round(float(name), 9)] = name
        except (TypeError, ValueError):
            continue
    columns = [names[round(q, 9)] for q in quantiles]
    by_key = {str(k): part[columns].to_numpy(dtype=float) for k, part in forecast_frame.groupby(id_column, sort=False)}
    scored_windows = [w for w in cut if w.key in by_key]
    for w in cut:
        if w.key not in by_key:
            errors.append((w.series_id, f"no forecast for window {w.window}"))
    steps = score_windows(scored_windows, by_key, quantiles)

    per_series = []
    for series_id, part in steps.groupby("series_id", sort=False):
        per_series.append({id_column: series_id, "windows": part["window"].nunique(), **_aggregate(part, quantiles)})
    per_series = pd.DataFrame(per_series, columns=[id_column, "windows", "MASE", "WQL", "SQL"])

    aggregate = [{"window": "all", "num_series": steps["series_id"].nunique(), **_aggregate(steps, quantiles)}]
    for w, part in steps.groupby("window", sort=True):
        aggregate.append({"window": str(w), "num_series": part["series_id"].nunique(), **_aggregate(part, quantiles)})
    return BacktestResult(per_series, pd.DataFrame(aggregate), errors)
