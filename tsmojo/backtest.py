"""Rolling-origin backtests (``tsmojo evaluate``) with GluonTS metric definitions.

For a series of length ``T``, window ``w = 0..K-1`` forecasts ``y[s : s + H]`` from the context
``y[:s]`` with ``s = T - H - (K - 1 - w) * step``: the last window ends at the end of the series,
earlier ones start ``step`` points apart. Windows without at least one context point are skipped.

Metrics are those of :mod:`tsmojo.metrics` (the ``gluonts.ev`` definitions; NaN labels are
masked, like GluonTS does): the seasonal error of a window is that of the whole series before it;
MASE and SQL of a group (a series, a window index, everything) are means over all its time steps,
WQL is a ratio of sums over them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tsmojo.metrics import (
    DEFAULT_QUANTILE_LEVELS,
    columns_by_level,
    mase,
    quantile_column,
    quantile_loss,
    scaled_quantile_loss,
    seasonal_error,
    wql_from_sums,
)

__all__ = ["BacktestResult", "make_windows", "rolling_backtest", "score_windows"]


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
    windows: Sequence[Window], forecasts: dict[str, np.ndarray], quantiles: Sequence[float] | np.ndarray
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
        ql = quantile_loss(label, predicted, quantiles)
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
            frame[_loss_column(q)] = ql[:, j]
        frame = frame[np.isfinite(label)]  # GluonTS masks missing labels
        rows.append(frame)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def _loss_column(level: float) -> str:
    return f"ql_{quantile_column(level)}"


def _aggregate(steps: pd.DataFrame, quantiles: Sequence[float]) -> dict[str, float]:
    ql = steps[[_loss_column(q) for q in quantiles]].to_numpy(dtype=float)
    scale = steps["seasonal_error"].to_numpy(dtype=float)
    return {
        "MASE": mase(steps["abs_error"].to_numpy(dtype=float), scale),
        "WQL": float(wql_from_sums(ql.sum(axis=0), steps["abs_label"].sum())),
        "SQL": scaled_quantile_loss(ql, scale),
    }


@dataclass
class BacktestResult:
    per_series: pd.DataFrame
    aggregate: pd.DataFrame
    errors: list[tuple[object, str]]


def rolling_backtest(
    clean: pd.DataFrame,
    predict: Callable[[pd.DataFrame, dict], pd.DataFrame],
    id_column: str,
    timestamp_column: str,
    target: str,
    prediction_length: int,
    windows: int = 1,
    step: int | None = None,
    seasonality: int = 1,
    quantiles: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    context_length: int | None = None,
    freqs: Mapping[object, object] | None = None,
) -> BacktestResult:
    """Backtest ``predict`` on every series of a validated frame.

    ``predict(contexts, window_freqs)`` receives the stacked contexts of all windows (the id
    column holds one key per window, each window's rows in time order) and ``{key: frequency}``,
    each window taking its series' frequency from ``freqs`` (``{series_id: frequency}`` as
    :func:`tsmojo.frames.validate_long_frame` reports them; None where unknown). It returns
    tsmojo's forecast frame (id, timestamp, quantile columns).
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
    freqs = freqs or {}
    forecast_frame = predict(contexts, {w.key: freqs.get(w.series_id) for w in cut})
    names = columns_by_level(forecast_frame.columns)
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
