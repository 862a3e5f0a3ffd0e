"""Fan charts of probabilistic forecasts: history, median, and the 10-90% and 1-99% bands.

Works with tsmojo's output columns (``predictions``, ``"0.1"``...) and with Nixtla-style names
(``tsmojo``, ``tsmojo-q-10``...). Bands whose quantiles are missing are simply not drawn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tsmojo.metrics import parse_quantile_column

__all__ = ["fan_chart", "plot_forecast_grid", "quantile_columns", "safe_filename", "save_fan_charts"]

_NIXTLA_QUANTILE = re.compile(r"^.+-q-(?P<pct>\d+(?:\.\d+)?)$")
BANDS = ((0.01, 0.99, 0.15), (0.1, 0.9, 0.35))  # (low, high, alpha)


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in {"agg", "pdf", "svg", "ps", "cairo"}:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quantile_columns(forecasts: pd.DataFrame) -> tuple[dict[float, str], str | None]:
    """``({level: column}, median column)`` found in a forecast frame (tsmojo or Nixtla names)."""
    levels: dict[float, str] = {}
    for name in forecasts.columns:
        match = _NIXTLA_QUANTILE.match(str(name))
        level = round(float(match["pct"]) / 100, 9) if match else parse_quantile_column(name)
        if level is not None:
            levels[level] = name
    median = None
    for candidate in ("predictions", "tsmojo"):
        if candidate in forecasts.columns:
            median = candidate
            break
    if median is None and 0.5 in levels:
        median = levels[0.5]
    return levels, median


def _as_time(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values
    return pd.to_datetime(values, errors="coerce")


def fan_chart(
    ax,
    history: pd.DataFrame | None,
    forecast: pd.DataFrame,
    timestamp_column: str,
    target: str,
    title: str | None = None,
    history_points: int | None = None,
) -> None:
    """Draw one series on ``ax``: its (last ``history_points``) history, median and bands."""
    levels, median = quantile_columns(forecast)
    forecast = forecast.sort_values(timestamp_column)
    fc_time = _as_time(forecast[timestamp_column])
    if history is not None and len(history):
        history = history.sort_values(timestamp_column)
        if history_points:
            history = history.tail(history_points)
        ax.plot(
            _as_time(history[timestamp_column]),
            pd.to_numeric(history[target], errors="coerce"),
            color="black",
            linewidth=1.0,
            label="history",
        )
    for low, high, alpha in BANDS:
        if low in levels and high in levels:
            ax.fill_between(
                fc_time,
                forecast[levels[low]].to_numpy(float),
                forecast[levels[high]].to_numpy(float),
                color="tab:blue",
                alpha=alpha,
                linewidth=0,
                label=f"{low * 100:g}-{high * 100:g}% interval",
            )
    if median is not None:
        ax.plot(fc_time, forecast[median].to_numpy(float), color="tab:blue", linewidth=1.5, label="median forecast")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)


def plot_forecast_grid(
    history: pd.DataFrame | None,
    forecasts: pd.DataFrame,
    path: str | Path,
    id_column: str,
    timestamp_column: str,
    target: str,
    ids: Sequence | None = None,
    history_points: int | None = None,
    columns: int = 2,
) -> Path:
    """One PNG with a fan chart per series of ``ids`` (default: every series in ``forecasts``)."""
    plt = _pyplot()
    ids = list(pd.unique(forecasts[id_column])) if ids is None else list(ids)
    if not ids:
        raise ValueError("nothing to plot: no forecasts")
    columns = min(columns, len(ids))
    rows = -(-len(ids) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 3.2 * rows), squeeze=False)
    for ax, series_id in zip(axes.flat, ids, strict=False):
        past = None if history is None else history[history[id_column].astype(str) == str(series_id)]
        future = forecasts[forecasts[id_column].astype(str) == str(series_id)]
        fan_chart(ax, past, future, timestamp_column, target, title=str(series_id), history_points=history_points)
    for ax in list(axes.flat)[len(ids) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def safe_filename(series_id) -> str:
    """A file name for a series id: anything but letters, digits, ``-``, ``_`` and ``.`` becomes ``_``."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(series_id)).strip("._") or "series"
    return text[:120]


def save_fan_charts(
    history: pd.DataFrame,
    forecasts: pd.DataFrame,
    directory: str | Path,
    id_column: str,
    timestamp_column: str,
    target: str,
    ids: Sequence,
    history_points: int | None = None,
) -> list[Path]:
    """One PNG per series in ``directory`` (created if needed), named after the (sanitised) id."""
    plt = _pyplot()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths, used = [], set()
    history_ids = history[id_column].astype(str)
    forecast_ids = forecasts[id_column].astype(str)
    for series_id in ids:
        name = safe_filename(series_id)
        stem, k = name, 1
        while name in used:
            k += 1
            name = f"{stem}_{k}"
        used.add(name)
        fig, ax = plt.subplots(figsize=(9, 3.8))
        fan_chart(
            ax,
            history[history_ids == str(series_id)],
            forecasts[forecast_ids == str(series_id)],
            timestamp_column,
            target,
            title=str(series_id),
            history_points=history_points,
        )
        ax.legend(fontsize=8, loc="upper left")
        fig.tight_layout()
        path = directory / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def default_history_points(prediction_length: int) -> int:
    """How much history a chart shows: five horizons, at least 60 points."""
    return int(max(60, 5 * prediction_length))
