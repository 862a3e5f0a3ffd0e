"""Covariates that help on real data: tsmojo on fev-bench tasks with known-future covariates.

Examples::

    python benchmarks/covariates.py                                   # the 4 tasks, every model
    python benchmarks/covariates.py --tasks epf_be,epf_de --models tsmojo,tsmojo_target_only
    python benchmarks/covariates.py --model path/to/checkpoint --context-length 2048 --output-name covariates_ctx2048
    python benchmarks/covariates.py --models tsmojo,tsmojo_target_only,tsmojo_finetuned,seasonal_naive,mstl_arima_x

Data: every folder of ``--data-dir`` (default ``$TSMOJO_SHARED_DATASETS/covariates``) holding
``data.parquet`` (long format: ``unique_id``, ``ds``, ``y`` and one column per covariate) and
``meta.json`` (``prediction_length``, ``windows``, ``window_step``, ``initial_cutoff``,
``seasonality``, ``known_covariates``, optional ``past_covariates``, ``quantile_levels``,
``eval_metric``, ``extra_metrics``, and ``fev_multivariate_targets``: the folder's series are the
target dimensions of ONE multivariate item, as fev scores ``uci_air_quality_1H``).

Protocol: fev's own machinery, offline. Each folder becomes a ``fev.Task`` over a local parquet
file (``dataset_path=.../data.parquet``; fev loads local files through ``datasets`` without any
network access), with ``horizon``, ``num_windows``, ``initial_cutoff``, ``window_step_size``,
``seasonality`` and the metrics of ``meta.json``. A multivariate folder is first pivoted to one
item whose target columns are the folder's series (written to a temporary parquet file). fev
builds the windows (window ``i`` forecasts the ``prediction_length`` points after
``y[:len + initial_cutoff + i * window_step]``, the known covariates are given over the past and
the forecast window), hands each model its input with ``fev.convert_input_data`` and scores the
forecasts with ``Task.evaluation_summary``: fev's SQL and MASE (scaled by the in-sample
seasonal-naive error of the window's whole past), WAPE and WQL with epsilon 1, computed per window
(per target dimension, then averaged) and averaged over the windows.

Measured rows (``--models``):

- ``tsmojo``: ``TSMojoPipeline.predict_df`` with the history frame (targets and covariates) and
  ``future_df`` holding the known covariates over the forecast window; several targets form one
  group (``target=[...]``).
- ``tsmojo_target_only``: the same call on the target column(s) alone.
- ``tsmojo_univariate`` (not run by default): every target dimension forecast on its own, without
  covariates (differs from ``tsmojo_target_only`` only on multivariate tasks).
- ``tsmojo_finetuned`` (not run by default, a few minutes): per task, a copy of the model fine-tuned
  (``TSMojoPipeline.fit``, seed 0) on the past that window 0 sees, ``y[:len + initial_cutoff]`` with
  its covariates (fev's input of the first window, so nothing at or after its cutoff), then every
  window forecast exactly as ``tsmojo``. The last ``--finetune-val-windows`` x H points of that
  past are held out: each of those windows is a validation series (the best of the checks every
  ``--finetune-validate-every`` steps is kept, ``--finetune-patience`` checks without improvement
  stop the run) and training windows end before them. Same settings for every task:
  ``--finetune-steps`` (150), ``--finetune-context`` (default: the forecast context),
  ``--finetune-batch-size`` (32), ``--finetune-lr`` (1e-4).
- ``seasonal_naive``: fev-bench's seasonal naive (``models/statsforecast/model.py`` of
  autogluon/fev): statsforecast ``SeasonalNaive`` on the last 1,000 points, missing values forward
  filled then 0, quantiles from its prediction intervals. It must reproduce the published values.
- ``mstl_arima_x``: a covariate-aware statistical baseline. statsforecast ``MSTL`` (daily and,
  for hourly data, weekly seasonality) whose seasonally adjusted part is an ``AutoARIMA`` with the
  known covariates as regressors (regression with ARIMA errors), on the last ``--stats-context``
  points (default 1,000), quantiles from its prediction intervals. A seasonal ``AutoARIMA`` with
  the covariates (``auto_arima_x``, also available) took 40-50 s per fit on the shared 2-core
  machine (about 100 minutes for the 4 tasks), hence MSTL + ARIMA-X as the default.

Cache: the statistical rows (``seasonal_naive``, ``mstl_arima_x``, ``auto_arima_x``) are deterministic;
each (task, model, context) row is stored as a small JSON file in ``--cache-dir`` (default
``benchmarks/results/cache/covariates``) and read back on later runs, as long as the task's files
(sha256 of ``data.parquet`` and ``meta.json``) and the fev version are the same. ``--no-cache``
neither reads nor writes it. The report says which rows came from the cache (their seconds are
those of the run that computed them). So a new tsmojo checkpoint is scored in seconds next to the
MSTL baseline (about 10 minutes to compute).

Published rows come from ``shared/anchors/covariates_published.csv`` (fev-bench, fev 0.8.0).
Relative scores divide by the seasonal naive of the same source (measured by measured, published
by published). Outputs: ``benchmarks/results/<output-name>.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, RESULTS_DIR, geometric_mean  # noqa: E402
from tsmojo.bundled import DEFAULT_MODEL  # noqa: E402
from tsmojo.data.real import shared_datasets_dir  # noqa: E402

MEASURED_MODELS = (
    "tsmojo",
    "tsmojo_target_only",
    "tsmojo_univariate",
    "tsmojo_finetuned",
    "seasonal_naive",
    "mstl_arima_x",
    "auto_arima_x",
)
DEFAULT_MODELS = ("tsmojo", "tsmojo_target_only", "seasonal_naive", "mstl_arima_x")
STATISTICAL_MODELS = ("seasonal_naive", "mstl_arima_x", "auto_arima_x")  # deterministic: cached
METRICS = ("SQL", "MASE", "WAPE", "WQL")
SEASONAL_NAIVE = "Seasonal Naive"  # the model name of the published anchors
# fev-bench's statsforecast wrapper: context of its seasonal naive (and of its AutoARIMA).
FEV_STATS_CONTEXT = 1000
DEFAULT_STATS_CONTEXT = 1000
# The seasonal-naive check: the published scores have 6 decimals, so a reproduction is within half
# their last digit (the data README reports 1e-7 relative against the unrounded values).
SEASONAL_NAIVE_TOLERANCE = 5.01e-7
ID, TIMESTAMP = "unique_id", "ds"
DEFAULT_CACHE_DIR = RESULTS_DIR / "cache" / "covariates"


# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CovariateTask:
    """One folder of the covariate benchmark, as read from its ``meta.json``."""

    name: str
    folder: Path
    horizon: int
    windows: int
    window_step: int
    initial_cutoff: int
    seasonality: int
    known_covariates: tuple[str, ...]
    past_covariates: tuple[str, ...]
    quantile_levels: tuple[float, ...]
    eval_metric: str
    extra_metrics: tuple[str, ...]
    multivariate: bool
    target: str = "y"

    @classmethod
    def from_folder(cls, folder: str | Path) -> CovariateTask:
        """Read ``folder/meta.json`` (the format of ``shared/datasets/covariates``)."""
        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        horizon = int(meta["prediction_length"])
        return cls(
            name=folder.name,
            folder=folder,
            horizon=horizon,
            windows=int(meta.get("windows", 1)),
            window_step=int(meta.get("window_step") or horizon),
            initial_cutoff=int(meta["initial_cutoff"]),
            seasonality=int(meta.get("seasonality") or 1),
            known_covariates=tuple(meta.get("known_covariates") or ()),
            past_covariates=tuple(meta.get("past_covariates") or ()),
            quantile_levels=tuple(float(q) for q in meta.get("quantile_levels") or [i / 10 for i in range(1, 10)]),
            eval_metric=str(meta.get("eval_metric", "SQL")),
            extra_metrics=tuple(meta.get("extra_metrics") or ("MASE", "WAPE(eps=1)", "WQL(eps=1)")),
            multivariate=bool(meta.get("fev_multivariate_targets", False)),
            target=str(meta.get("target", "y")),
        )


def parse_metric(spec: str) -> str | dict:
    """A metric of ``meta.json`` as fev's metric config: ``"MASE"`` -> ``"MASE"``,
    ``"WQL(eps=1)"`` -> ``{"name": "WQL", "epsilon": 1.0}``."""
    match = re.fullmatch(r"\s*(\w+)\s*(?:\(\s*eps(?:ilon)?\s*=\s*([-+0-9.eE]+)\s*\))?\s*", spec)
    if match is None:
        raise ValueError(f"cannot read metric {spec!r} (expected NAME or NAME(eps=VALUE))")
    name, epsilon = match.groups()
    return name.upper() if epsilon is None else {"name": name.upper(), "epsilon": float(epsilon)}


def find_tasks(data_dir: str | Path, names: Sequence[str] | None = None) -> list[CovariateTask]:
    """The task folders of ``data_dir`` (sorted by name), or the ``names`` asked for, in that order."""
    data_dir = Path(data_dir)
    if names:
        missing = [n for n in names if not (data_dir / n / "meta.json").is_file()]
        if missing:
            raise FileNotFoundError(f"no task folder (with meta.json) for {missing} in {data_dir}")
        return [CovariateTask.from_folder(data_dir / n) for n in names]
    folders = sorted(p.parent for p in data_dir.glob("*/meta.json") if (p.parent / "data.parquet").is_file())
    if not folders:
        raise FileNotFoundError(f"no task folders (meta.json + data.parquet) in {data_dir}")
    return [CovariateTask.from_folder(f) for f in folders]


def import_fev():
    """``fev``, kept off the network: every task reads local parquet files only."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import fev
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("benchmarks/covariates.py needs fev: pip install 'fev>=0.10,<0.11'") from exc
    return fev


def multivariate_frame(spec: CovariateTask) -> pd.DataFrame:
    """The folder's series as the target columns of one item (fev's layout of a multivariate task).

    The covariates are repeated for every series in the folder; each timestamp takes the first
    non-missing value over the series."""
    frame = pd.read_parquet(spec.folder / "data.parquet")
    covariates = [*spec.known_covariates, *spec.past_covariates]
    targets = frame.pivot(index=TIMESTAMP, columns=ID, values=spec.target)
    clash = set(map(str, targets.columns)) & {ID, TIMESTAMP, *covariates}
    if clash:
        raise ValueError(f"{spec.name}: series ids {sorted(clash)} clash with column names")
    targets.columns = [str(c) for c in targets.columns]
    wide = targets.join(frame.groupby(TIMESTAMP)[covariates].first()).reset_index()
    wide.insert(0, ID, spec.name)
    return wide


def task_extra_metrics(spec: CovariateTask) -> list[str | dict]:
    """The task's extra metrics, completed with those of ``METRICS`` it lacks (fev-bench's conventions:
    MASE and SQL without epsilon, WAPE and WQL with epsilon 1), so that every table column exists."""
    configs = [parse_metric(m) for m in spec.extra_metrics]
    names = {c if isinstance(c, str) else c["name"] for c in [parse_metric(spec.eval_metric), *configs]}
    defaults = {"SQL": "SQL", "MASE": "MASE", "WAPE": "WAPE(eps=1)", "WQL": "WQL(eps=1)"}
    return configs + [parse_metric(defaults[m]) for m in METRICS if m not in names]


def make_fev_task(spec: CovariateTask, workdir: str | Path):
    """The ``fev.Task`` of a folder; a multivariate folder is pivoted into ``workdir`` first."""
    fev = import_fev()
    path, target = spec.folder / "data.parquet", spec.target
    if spec.multivariate:
        wide = multivariate_frame(spec)
        path = Path(workdir) / spec.name / "data.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        wide.to_parquet(path, index=False)
        covariates = {*spec.known_covariates, *spec.past_covariates}
        target = [c for c in wide.columns if c not in (ID, TIMESTAMP, *covariates)]
    return fev.Task(
        dataset_path=str(path),
        id_column=ID,
        timestamp_column=TIMESTAMP,
        target=target,
        known_dynamic_columns=list(spec.known_covariates),
        past_dynamic_columns=list(spec.past_covariates),
        horizon=spec.horizon,
        num_windows=spec.windows,
        initial_cutoff=spec.initial_cutoff,
        window_step_size=spec.window_step,
        seasonality=spec.seasonality,
        eval_metric=parse_metric(spec.eval_metric),
        extra_metrics=task_extra_metrics(spec),
        quantile_levels=list(spec.quantile_levels),
        task_name=spec.name,
    )


# ----------------------------------------------------------------------------------------------
# Forecasts: every model returns, per window, {target column: [{"predictions": (H,), "0.1": (H,), ...}]}
# (fev's prediction format, one dict per item in the window's item order)
# ----------------------------------------------------------------------------------------------
@dataclass
class WindowInput:
    """What a model sees of one evaluation window (fev's adapters, computed once per window)."""

    past: pd.DataFrame  # id, timestamp, target columns, covariates (pandas adapter)
    future: pd.DataFrame  # id, timestamp, known covariates over the forecast window
    past_univariate: pd.DataFrame  # nixtla adapter, one item per target dimension: unique_id, ds, y, covariates
    future_univariate: pd.DataFrame
    targets: list[str]
    horizon: int
    seasonality: int
    quantile_levels: list[float]
    freq: str

    @property
    def item_ids(self) -> list:
        """The window's items, in fev's order (the order its predictions must follow)."""
        return list(pd.unique(self.past[ID]))


def window_input(task, window) -> WindowInput:
    """Convert one fev window with fev's pandas and nixtla adapters."""
    fev = import_fev()
    past, future, _ = fev.convert_input_data(window, adapter="pandas")
    past_uni, future_uni, _ = fev.convert_input_data(window, adapter="nixtla", as_univariate=True)
    return WindowInput(
        past=past,
        future=future,
        past_univariate=past_uni,
        future_univariate=future_uni,
        targets=list(window.target_columns),
        horizon=window.horizon,
        seasonality=task.seasonality,
        quantile_levels=list(task.quantile_levels),
        freq=task.freq,
    )


def fev_predictions(values: dict[str, np.ndarray], quantile_levels: Sequence[float]) -> dict[str, list[dict]]:
    """``{target: (N, H, 1 + Q)}`` (point, then the quantiles) -> fev's per-target list of dicts."""
    out = {}
    for target, array in values.items():
        items = []
        for item in np.asarray(array, dtype=np.float64):
            entry = {"predictions": item[:, 0]}
            entry.update({str(q): item[:, 1 + k] for k, q in enumerate(quantile_levels)})
            items.append(entry)
        out[target] = items
    return out


def tsmojo_forecast(
    pipeline, data: WindowInput, use_covariates: bool, context_length: int | None, batch_size: int = 256
) -> dict[str, list[dict]]:
    """``TSMojoPipeline.predict_df`` on one window: all target columns of an item form one group,
    with the known covariates (history in ``df``, forecast window in ``future_df``) when asked."""
    covariates = [c for c in data.past.columns if c not in (ID, TIMESTAMP, *data.targets)]
    history = data.past if use_covariates else data.past[[ID, TIMESTAMP, *data.targets]]
    known = [c for c in data.future.columns if c not in (ID, TIMESTAMP)]
    future = data.future if use_covariates and known and covariates else None
    forecast = pipeline.predict_df(
        history,
        future_df=future,
        id_column=ID,
        timestamp_column=TIMESTAMP,
        target=list(data.targets),
        prediction_length=data.horizon,
        quantile_levels=data.quantile_levels,
        batch_size=batch_size,
        context_length=context_length,
    )
    return _frame_to_predictions(forecast, data)


def tsmojo_univariate_forecast(pipeline, data: WindowInput, context_length: int | None) -> dict[str, list[dict]]:
    """Every target dimension on its own (fev's ``as_univariate`` split), no covariates."""
    history = data.past_univariate[[ID, TIMESTAMP, "y"]]
    forecast = pipeline.predict_df(
        history,
        id_column=ID,
        timestamp_column=TIMESTAMP,
        target="y",
        prediction_length=data.horizon,
        quantile_levels=data.quantile_levels,
        context_length=context_length,
    )
    return _univariate_frame_to_predictions(forecast, data)


def _quantile_columns(frame: pd.DataFrame, levels: Sequence[float]) -> list[str]:
    """The columns of ``levels`` in a forecast frame (named like ``"0.1"``), in the order of ``levels``."""
    by_level = {}
    for column in frame.columns:
        try:
            by_level[round(float(column), 9)] = column
        except (TypeError, ValueError):
            continue
    missing = [q for q in levels if round(float(q), 9) not in by_level]
    if missing:
        raise ValueError(f"forecast frame lacks quantile columns {missing} (has {list(frame.columns)})")
    return [by_level[round(float(q), 9)] for q in levels]


def _frame_to_predictions(forecast: pd.DataFrame, data: WindowInput) -> dict[str, list[dict]]:
    """A ``predict_df`` frame (``target_name`` when several targets) -> fev predictions."""
    columns = ["predictions", *_quantile_columns(forecast, data.quantile_levels)]
    ids, h = data.item_ids, data.horizon
    values = {}
    for target in data.targets:
        part = forecast if "target_name" not in forecast.columns else forecast[forecast["target_name"] == target]
        part = part.set_index(ID).loc[ids]  # the window's item order, whatever the output order
        values[target] = part[columns].to_numpy(dtype=np.float64).reshape(len(ids), h, len(columns))
    return fev_predictions(values, data.quantile_levels)


def _univariate_frame_to_predictions(forecast: pd.DataFrame, data: WindowInput) -> dict[str, list[dict]]:
    """Forecasts of the ``as_univariate`` items (item 1 target 1, item 1 target 2, ...) -> fev predictions."""
    columns = ["predictions", *_quantile_columns(forecast, data.quantile_levels)]
    order = list(pd.unique(data.past_univariate[ID]))
    frame = forecast.set_index(ID).loc[order]
    array = frame[columns].to_numpy(dtype=np.float64).reshape(len(order), data.horizon, len(columns))
    d = len(data.targets)
    return fev_predictions({t: array[k::d] for k, t in enumerate(data.targets)}, data.quantile_levels)


def _interval_suffix(level: float) -> str:
    """The statsforecast interval column holding quantile ``level`` (fev: ``_quantile_to_suffix``)."""
    if level < 0.5:
        return f"-lo-{int(100 - 200 * level)}"
    return f"-hi-{int(200 * level - 100)}"


def _statsforecast_predictions(forecast: pd.DataFrame, alias: str, data: WindowInput) -> dict[str, list[dict]]:
    """statsforecast output (``alias``, ``alias-lo-80``...) of the ``as_univariate`` items -> fev predictions."""
    order = list(pd.unique(data.past_univariate[ID]))
    forecast = forecast.set_index(ID).loc[order]
    columns = [alias, *[alias + _interval_suffix(q) for q in data.quantile_levels]]
    # fev-bench fills what a model could not forecast with 0.
    array = forecast[columns].fillna(0.0).to_numpy(dtype=np.float64)
    array = array.reshape(len(order), data.horizon, len(columns))
    d = len(data.targets)
    return fev_predictions({t: array[k::d] for k, t in enumerate(data.targets)}, data.quantile_levels)


def _interval_levels(quantile_levels: Sequence[float]) -> list[int]:
    """The central interval levels whose bounds are the quantiles (0.1 and 0.9 -> 80). The median (level 0)
    is left out: statsforecast 2.1 refuses it (2.0, which fev-bench ran, returned the point forecast)."""
    return sorted({round(abs(q - 0.5) * 200) for q in quantile_levels} - {0})


def _run_statsforecast(sf, alias: str, data: WindowInput, **kwargs) -> pd.DataFrame:
    """``sf.forecast`` with the interval levels of the window's quantiles; the median is the point forecast."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        forecast = sf.forecast(h=data.horizon, level=_interval_levels(data.quantile_levels), **kwargs)
    forecast = forecast.reset_index() if ID not in forecast.columns else forecast
    forecast[alias + _interval_suffix(0.5)] = forecast[alias]
    return forecast


def seasonal_naive_forecast(data: WindowInput, max_context: int = FEV_STATS_CONTEXT) -> dict[str, list[dict]]:
    """fev-bench's seasonal naive (autogluon/fev ``models/statsforecast/model.py``, model
    ``seasonalnaive``): missing values forward filled then 0, the last ``max_context`` points,
    statsforecast ``SeasonalNaive`` with quantiles from its prediction intervals."""
    from statsforecast import StatsForecast
    from statsforecast.models import SeasonalNaive

    train = data.past_univariate[[ID, TIMESTAMP, "y"]].copy()
    if train["y"].isna().any():
        train["y"] = train.groupby(ID, sort=False)["y"].ffill()
        train = train.fillna(0.0)
    train = train.groupby(ID, sort=False).tail(max_context).reset_index(drop=True)
    # Positions instead of timestamps: the forecast values do not depend on them.
    train[TIMESTAMP] = train.groupby(ID, sort=False).cumcount()
    model = SeasonalNaive(season_length=data.seasonality, alias="SeasonalNaive")
    sf = StatsForecast(models=[model], freq=1, n_jobs=1, fallback_model=SeasonalNaive(data.seasonality))
    forecast = _run_statsforecast(sf, "SeasonalNaive", data, df=train)
    return _statsforecast_predictions(forecast, "SeasonalNaive", data)


def _fill_covariates(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Forward then backward fill per item; a covariate never observed becomes 0 (regressions refuse NaN)."""
    frame = frame.copy()
    frame[list(columns)] = frame.groupby(ID, sort=False)[list(columns)].transform(lambda c: c.ffill().bfill())
    frame[list(columns)] = frame[list(columns)].fillna(0.0)
    return frame


def stats_exogenous_forecast(
    data: WindowInput, model: str = "mstl_arima_x", max_context: int = DEFAULT_STATS_CONTEXT
) -> dict[str, list[dict]]:
    """A statsforecast model with the known covariates as regressors (``X_df``), one fit per target
    dimension. ``mstl_arima_x``: MSTL (daily, plus weekly for hourly data) with an AutoARIMA-X on the
    seasonally adjusted series; ``auto_arima_x``: seasonal AutoARIMA-X. Targets: missing values
    forward filled then 0 (as fev's seasonal naive); covariates forward/backward filled. Falls
    back to ``SeasonalNaive`` where a fit fails."""
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL, AutoARIMA, SeasonalNaive

    m = data.seasonality
    known = [c for c in data.future_univariate.columns if c not in (ID, TIMESTAMP)]
    past = data.past_univariate[[ID, TIMESTAMP, "y", *known]].copy()
    past["y"] = past.groupby(ID, sort=False)["y"].ffill().fillna(0.0)
    past = past.groupby(ID, sort=False).tail(max_context).reset_index(drop=True)
    future = data.future_univariate[[ID, TIMESTAMP, *known]].copy()
    # Fill the covariates over past + future together, so a gap at the cutoff takes the last known value.
    both = pd.concat([past.assign(_future=False), future.assign(_future=True)], ignore_index=True)
    order = {k: i for i, k in enumerate(pd.unique(past[ID]))}
    both = both.sort_values(ID, key=lambda c: c.map(order), kind="stable")
    both = _fill_covariates(both, known) if known else both
    both[TIMESTAMP] = both.groupby(ID, sort=False).cumcount()
    past = both.loc[~both["_future"], [ID, TIMESTAMP, "y", *known]]
    future = both.loc[both["_future"], [ID, TIMESTAMP, *known]]
    if model == "mstl_arima_x":
        hourly = pd.tseries.frequencies.to_offset(data.freq) == pd.tseries.frequencies.to_offset("h")
        seasons = [m, 7 * m] if hourly and m == 24 and max_context >= 2 * 7 * m else [m]
        sf_model = MSTL(season_length=seasons, trend_forecaster=AutoARIMA(), alias="model")
    elif model == "auto_arima_x":
        sf_model = AutoARIMA(season_length=m, alias="model")
    else:
        raise ValueError(f"unknown statistical model {model!r}")
    sf = StatsForecast(models=[sf_model], freq=1, n_jobs=1, fallback_model=SeasonalNaive(m, alias="model"))
    forecast = _run_statsforecast(sf, "model", data, df=past, X_df=future if known else None)
    return _statsforecast_predictions(forecast, "model", data)


# ----------------------------------------------------------------------------------------------
# Fine-tuning on a task's own past (the tsmojo_finetuned row)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FineTuneOptions:
    """The ``TSMojoPipeline.fit`` settings of the ``tsmojo_finetuned`` row (the same for every task).

    ``context_length=None``: the context the forecasts use. ``validation_windows``: how many H-point
    windows at the end of the history are held out for validation (0: none, train on it all)."""

    num_steps: int = 150
    context_length: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-4
    validation_windows: int = 4
    validate_every: int = 25
    patience: int | None = 2
    seed: int = 0


def finetune_frames(
    data: WindowInput, validation_windows: int, context_length: int
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """The training and validation frames of ``data.past`` (a window's history) and its known covariates.

    With ``V = validation_windows`` and history length ``n`` per item, the training frame is the first
    ``n - V * H`` points; validation series ``k = 0..V-1`` end ``(V - 1 - k) * H`` points before the end
    (``fit`` scores each validation series on its last H points), so their scored points are the
    last ``V * H`` of the history and no training window reaches them. A validation series keeps only
    its last ``context_length + H`` points (all that ``fit`` reads of it). Nothing of ``data.future``
    (the forecast window) is used."""
    history = data.past.sort_values([ID, TIMESTAMP], kind="stable").reset_index(drop=True)
    known = [c for c in data.future.columns if c not in (ID, TIMESTAMP)]
    horizon, v = data.horizon, int(validation_windows)
    if v < 0:
        raise ValueError(f"validation_windows must be >= 0, got {v}")
    if v == 0:
        return history, None, known
    position = history.groupby(ID, sort=False).cumcount()
    length = history.groupby(ID, sort=False)[TIMESTAMP].transform("size")
    shortest = int((length - v * horizon).min())
    if shortest < horizon + 16:
        raise ValueError(
            f"a history of {shortest + v * horizon} points is too short for {v} validation windows of {horizon}"
        )
    train = history[position < length - v * horizon].reset_index(drop=True)
    parts = []
    for k in range(v):
        end = length - (v - 1 - k) * horizon
        keep = (position < end) & (position >= end - horizon - context_length)
        part = history[keep].copy()
        part[ID] = part[ID].astype(str) + f"__val{k}"
        parts.append(part)
    return train, pd.concat(parts, ignore_index=True), known


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's banners and its warnings about the trainer setup while ``fit`` runs."""
    names = ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
            warnings.filterwarnings("ignore", module=r"torch\.utils\.data")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class FineTunedTsmojo:
    """The ``tsmojo_finetuned`` row: :meth:`start` fine-tunes a copy of the model on the history of a
    task's first window, :meth:`forecast` forecasts a window like the ``tsmojo`` row with that copy."""

    def __init__(self, pipeline, options: FineTuneOptions, context_length: int | None) -> None:
        self.base, self.options, self.context_length = pipeline, options, context_length
        self.tuned = None

    def start(self, data: WindowInput) -> dict:
        """Fine-tune on ``data.past`` (window 0's history); returns what the report shows of the fit."""
        options = self.options
        context = options.context_length or self.base.resolve_context_length(self.context_length)
        train, validation, known = finetune_frames(data, options.validation_windows, context)
        seen, cutoff = data.past[TIMESTAMP].max(), data.future[TIMESTAMP].min()
        if seen >= cutoff:  # fev's window 0 never does this; a guard against any future change
            raise RuntimeError(f"fine-tuning data reaches {seen}, the forecast window starts at {cutoff}")
        with quiet_lightning():
            self.tuned = self.base.fit(
                train,
                prediction_length=data.horizon,
                validation=validation,
                num_steps=options.num_steps,
                learning_rate=options.learning_rate,
                batch_size=options.batch_size,
                context_length=context,
                validate_every=options.validate_every,
                patience=options.patience if validation is not None else None,
                seed=options.seed,
                known_covariates=known,
                id_column=ID,
                timestamp_column=TIMESTAMP,
                target=list(data.targets),
            )
        history = getattr(self.tuned, "fit_history", {}) or {}
        best = history.get("best_val_wql", float("nan"))
        return {
            "fit_steps": int(history.get("steps", options.num_steps)),
            "fit_best_val_wql": float(best) if best is not None and math.isfinite(best) else float("nan"),
            "fit_val_wql": " ".join(f"{v:.4f}" for v in history.get("val_wql", [])),
            "fit_train_points": int(train.groupby(ID).size().max()),
            "fit_context": int(context),
        }

    def forecast(self, data: WindowInput) -> dict[str, list[dict]]:
        if self.tuned is None:
            raise RuntimeError("tsmojo_finetuned: start() (the fine-tuning) must run on the first window")
        return tsmojo_forecast(self.tuned, data, True, self.context_length)


# ----------------------------------------------------------------------------------------------
# Running and scoring
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRun:
    """One measured row: its name in the tables and how it forecasts a window.

    ``start``: called once per task with the first window's input before any forecast (the
    fine-tuning); what it returns goes into the row. ``cache_key``: where the row is cached (only
    deterministic rows have one), e.g. ``"mstl_arima_x_ctx1000"``."""

    key: str
    label: str
    uses_covariates: bool
    forecast: Callable[[WindowInput], dict[str, list[dict]]]
    start: Callable[[WindowInput], dict] | None = None
    cache_key: str | None = None


def model_runs(
    models: Sequence[str],
    model: str | Path = DEFAULT_MODEL,
    context_length: int | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    stats_context: int = DEFAULT_STATS_CONTEXT,
    finetune: FineTuneOptions | None = None,
) -> tuple[list[ModelRun], dict]:
    """The measured models asked for (``MEASURED_MODELS`` keys) and a description of the tsmojo setup."""
    unknown = [m for m in models if m not in MEASURED_MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {MEASURED_MODELS}")
    info: dict = {}
    pipeline = None
    if any(m.startswith("tsmojo") for m in models):
        from tsmojo import TSMojoPipeline

        pipeline = TSMojoPipeline.from_pretrained(model, device=device, dtype=dtype)
        name = Path(str(model)).name
        info = {
            "model": str(model),
            "name": name,
            "dtype": str(pipeline.dtype).removeprefix("torch."),
            "context_length": pipeline.resolve_context_length(context_length),
            "device": str(pipeline.device),
        }
    name = info.get("name", "")
    finetune = finetune or FineTuneOptions()
    tuned = FineTunedTsmojo(pipeline, finetune, context_length) if "tsmojo_finetuned" in models else None
    if tuned is not None:
        context = finetune.context_length or info["context_length"]
        patience = finetune.patience if finetune.validation_windows else None
        info["fine-tuning"] = (
            f"{finetune.num_steps} steps, batch {finetune.batch_size}, lr {finetune.learning_rate:g}, "
            f"context {context}, {finetune.validation_windows} validation windows, "
            f"validation every {finetune.validate_every} steps, patience {patience}, seed {finetune.seed}"
        )
    builders: dict[str, tuple[str, bool, Callable[[WindowInput], dict[str, list[dict]]]]] = {
        "tsmojo": (name, True, lambda d: tsmojo_forecast(pipeline, d, True, context_length)),
        "tsmojo_target_only": (
            f"{name} (target only)",
            False,
            lambda d: tsmojo_forecast(pipeline, d, False, context_length),
        ),
        "tsmojo_univariate": (
            f"{name} (univariate)",
            False,
            lambda d: tsmojo_univariate_forecast(pipeline, d, context_length),
        ),
        "seasonal_naive": (SEASONAL_NAIVE, False, seasonal_naive_forecast),
        "mstl_arima_x": (
            f"MSTL + AutoARIMA-X (last {stats_context})",
            True,
            lambda d: stats_exogenous_forecast(d, "mstl_arima_x", stats_context),
        ),
        "auto_arima_x": (
            f"AutoARIMA-X (last {stats_context})",
            True,
            lambda d: stats_exogenous_forecast(d, "auto_arima_x", stats_context),
        ),
    }
    runs = []
    for key in models:
        if key == "tsmojo_finetuned":
            runs.append(ModelRun(key, f"{name} fine-tuned", True, tuned.forecast, start=tuned.start))
            continue
        context = FEV_STATS_CONTEXT if key == "seasonal_naive" else stats_context
        cache_key = f"{key}_ctx{context}" if key in STATISTICAL_MODELS else None
        runs.append(ModelRun(key, *builders[key], cache_key=cache_key))
    return runs, info


@contextlib.contextmanager
def datasets_cache_in(directory: Path) -> Iterator[None]:
    """Point the ``datasets`` cache at ``directory`` while fev loads a task: ``datasets`` turns every
    parquet file it reads into an Arrow copy in its cache (``~/.cache/huggingface`` by default),
    and the pivoted multivariate files get a fresh path each run, so the copies would pile up."""
    import datasets

    previous = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = directory
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = previous


def evaluate_task(
    spec: CovariateTask, runs: Sequence[ModelRun], workdir: str | Path, verbose: bool = True
) -> list[dict]:
    """Every model on every window of one task, scored by ``fev.Task.evaluation_summary``.

    ``seconds``: wall time of the model's forecasts over all windows (fev's input conversion and
    the scoring excluded)."""
    task = make_fev_task(spec, workdir)
    with datasets_cache_in(Path(workdir) / "hf-datasets-cache"):
        task.load_full_dataset()
    predictions: dict[str, list] = {run.key: [] for run in runs}
    seconds = dict.fromkeys(predictions, 0.0)
    fits: dict[str, dict] = {}
    for index, window in enumerate(task.iter_windows()):
        data = window_input(task, window)
        if index == 0:  # the past of the first window: all that a model may learn from
            for run in (r for r in runs if r.start is not None):
                start = time.perf_counter()
                fits[run.key] = dict(run.start(data) or {})
                fits[run.key]["fit_seconds"] = time.perf_counter() - start
                if verbose:
                    print(f"{spec.name:20s} {run.label:34s} fine-tuned: " + _fit_summary(fits[run.key]), flush=True)
        for run in runs:
            start = time.perf_counter()
            predictions[run.key].append(run.forecast(data))
            seconds[run.key] += time.perf_counter() - start
    rows = []
    for run in runs:
        summary = task.evaluation_summary(predictions[run.key], model_name=run.label)
        row = {"task": spec.name, "model": run.label, **{m: float(summary[m]) for m in METRICS}}
        row.update(uses_covariates=run.uses_covariates, source="measured", seconds=seconds[run.key], key=run.key)
        row.update({"cached": False, "fit_seconds": float("nan"), **fits.get(run.key, {})})
        rows.append(row)
        if verbose:
            print(
                f"{spec.name:20s} {run.label:34s} SQL {row['SQL']:.4f} MASE {row['MASE']:.4f} "
                f"WAPE {row['WAPE']:.4f} WQL {row['WQL']:.4f} {row['seconds']:8.1f} s",
                flush=True,
            )
    return rows


def _fit_summary(fit: dict) -> str:
    """One line about a fine-tuning run (``FineTunedTsmojo.start``'s dict plus ``fit_seconds``)."""
    text = f"{fit.get('fit_steps', '?')} steps on {fit.get('fit_train_points', '?')} points"
    if math.isfinite(fit.get("fit_best_val_wql", float("nan"))):
        text += f", validation WQL {fit.get('fit_val_wql', '')} (best {fit['fit_best_val_wql']:.4f})"
    return text + f", {fit.get('fit_seconds', float('nan')):.1f} s"


# ----------------------------------------------------------------------------------------------
# Cache of the deterministic (statistical) rows
# ----------------------------------------------------------------------------------------------
def task_fingerprint(spec: CovariateTask) -> str:
    """sha256 of the folder's ``data.parquet`` and ``meta.json``: a cached row is only valid for these."""
    digest = hashlib.sha256()
    for name in ("data.parquet", "meta.json"):
        digest.update((spec.folder / name).read_bytes())
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, spec: CovariateTask, run: ModelRun) -> Path:
    """``<cache_dir>/<task>__<model>_ctx<context>.json``."""
    return Path(cache_dir) / f"{spec.name}__{run.cache_key}.json"


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def read_cached_row(cache_dir: str | Path, spec: CovariateTask, run: ModelRun, fingerprint: str) -> dict | None:
    """The cached row of ``run`` on ``spec``, or None when there is none or it was computed on other
    data or with another fev version (which defines the windows and the metrics)."""
    path = cache_path(cache_dir, spec, run)
    if run.cache_key is None or not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if entry.get("data_sha256") != fingerprint or entry.get("fev") != import_fev().__version__:
        return None
    if any(not isinstance(entry.get(m), int | float) for m in METRICS):
        return None
    row = {"task": spec.name, "model": run.label, **{m: float(entry[m]) for m in METRICS}}
    row.update(uses_covariates=run.uses_covariates, source="measured", seconds=float(entry.get("seconds", "nan")))
    row.update(key=run.key, cached=True, fit_seconds=float("nan"))
    return row


def write_cached_row(cache_dir: str | Path, spec: CovariateTask, run: ModelRun, row: dict, fingerprint: str) -> Path:
    """Store a computed row (scores, seconds, what it is valid for) as ``cache_path``."""
    path = cache_path(cache_dir, spec, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"task": spec.name, "model": run.key, "label": run.label, "cache_key": run.cache_key}
    entry.update({m: row[m] for m in METRICS})
    entry.update(seconds=round(float(row["seconds"]), 2), data_sha256=fingerprint, fev=import_fev().__version__)
    entry.update(statsforecast=_package_version("statsforecast"), created=time.strftime("%Y-%m-%d"))
    path.write_text(json.dumps(entry, indent=1) + "\n")
    return path


def evaluate_task_cached(
    spec: CovariateTask,
    runs: Sequence[ModelRun],
    workdir: str | Path,
    cache_dir: str | Path | None = None,
    verbose: bool = True,
) -> list[dict]:
    """:func:`evaluate_task`, reading the rows with a ``cache_key`` from ``cache_dir`` where a valid
    entry exists and storing the ones it computes (``cache_dir=None``: no cache). Rows keep the
    order of ``runs``; a cached row has ``cached=True``."""
    fingerprint = task_fingerprint(spec) if cache_dir is not None else ""
    rows: dict[str, dict] = {}
    for run in runs:
        row = read_cached_row(cache_dir, spec, run, fingerprint) if cache_dir is not None else None
        if row is not None:
            rows[run.key] = row
            if verbose:
                print(
                    f"{spec.name:20s} {run.label:34s} SQL {row['SQL']:.4f} MASE {row['MASE']:.4f} "
                    f"WAPE {row['WAPE']:.4f} WQL {row['WQL']:.4f} (cached, {cache_path(cache_dir, spec, run).name})",
                    flush=True,
                )
    todo = [run for run in runs if run.key not in rows]
    if todo:
        for run, row in zip(todo, evaluate_task(spec, todo, workdir, verbose=verbose)):
            rows[run.key] = row
            if cache_dir is not None and run.cache_key is not None:
                write_cached_row(cache_dir, spec, run, row, fingerprint)
    return [rows[run.key] for run in runs]


def published_rows(path: str | Path, tasks: Sequence[str]) -> pd.DataFrame:
    """Anchor rows of ``tasks`` (columns as the measured ones; ``seconds`` unknown)."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=["task", "model", *METRICS, "uses_covariates", "source", "seconds", "key"])
    raw = pd.read_csv(path)
    raw = raw[raw["task"].isin(tasks)]
    frame = raw[["task", "model", *METRICS]].copy()
    frame["uses_covariates"] = raw["uses_covariates"].astype(str).str.lower().eq("true")
    frame["source"], frame["seconds"], frame["key"] = "published", float("nan"), ""
    return frame.reset_index(drop=True)


def add_relative(frame: pd.DataFrame) -> pd.DataFrame:
    """``rel_<metric>``: model / seasonal naive of the same task and source; measured rows fall back
    to the published seasonal naive when the measured one was not run."""
    frame = frame.copy()
    naive = frame[frame["model"] == SEASONAL_NAIVE].set_index(["task", "source"])
    for metric in METRICS:
        reference = []
        for task, source in zip(frame["task"], frame["source"]):
            key = (task, source) if (task, source) in naive.index else (task, "published")
            reference.append(naive.loc[key, metric] if key in naive.index else float("nan"))
        frame[f"rel_{metric}"] = frame[metric] / np.asarray(reference, dtype=float)
    return frame


def covariate_effect(frame: pd.DataFrame, with_key: str = "tsmojo", without_key: str = "tsmojo_target_only") -> dict:
    """Per task ``metric(with covariates) / metric(target only)`` of the measured tsmojo rows and
    the geometric mean over tasks (``"overall"``); empty if either row is missing."""
    measured = frame[frame["source"] == "measured"]
    with_cov = measured[measured["key"] == with_key].set_index("task")
    without = measured[measured["key"] == without_key].set_index("task")
    tasks = [t for t in with_cov.index if t in without.index]
    if not tasks:
        return {}
    out = {metric: {t: with_cov.loc[t, metric] / without.loc[t, metric] for t in tasks} for metric in METRICS}
    for metric in METRICS:
        out[metric]["overall"] = geometric_mean(out[metric][t] for t in tasks)
    return out


def seasonal_naive_check(frame: pd.DataFrame) -> pd.DataFrame:
    """Measured vs published seasonal naive per task and metric, with the relative difference."""
    naive = frame[frame["model"] == SEASONAL_NAIVE]
    measured = naive[naive["source"] == "measured"].set_index("task")
    published = naive[naive["source"] == "published"].set_index("task")
    rows = []
    for task in measured.index.intersection(published.index):
        for metric in METRICS:
            ours, theirs = float(measured.loc[task, metric]), float(published.loc[task, metric])
            rows.append({"task": task, "metric": metric, "measured": ours, "published": theirs,
                         "abs_diff": abs(ours - theirs), "rel_diff": abs(ours - theirs) / abs(theirs)})  # fmt: skip
    return pd.DataFrame(rows, columns=["task", "metric", "measured", "published", "abs_diff", "rel_diff"])


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _row_order(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Measured rows first (in run order), then published ones by their geometric mean relative SQL."""
    keys = list(dict.fromkeys(zip(frame["model"], frame["source"])))
    measured = [k for k in keys if k[1] == "measured"]
    published = [k for k in keys if k[1] == "published"]
    score = {
        k: geometric_mean(frame[(frame["model"] == k[0]) & (frame["source"] == k[1])]["rel_SQL"]) for k in published
    }
    published.sort(key=lambda k: (not math.isfinite(score[k]), score[k]))
    return measured + published


def metric_table(frame: pd.DataFrame, tasks: Sequence[str], column: str, with_gmean: bool) -> str:
    """A markdown table: one row per (model, source), one column per task (+ geometric mean)."""
    header = ["model", "source", "covariates", *tasks] + (["gmean"] if with_gmean else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, source in _row_order(frame):
        rows = frame[(frame["model"] == model) & (frame["source"] == source)].set_index("task")
        values = [float(rows.loc[t, column]) if t in rows.index else float("nan") for t in tasks]
        cells = [model, source, "yes" if bool(rows["uses_covariates"].iloc[0]) else "no", *map(_fmt, values)]
        if with_gmean:
            cells.append(_fmt(geometric_mean(values)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_report(
    frame: pd.DataFrame,
    tasks: Sequence[str],
    command: str,
    setup: dict,
    total_s: float,
    cache_dir: str | Path | None = None,
) -> str:
    """The ``.md`` report: relative and absolute tables, the covariate and fine-tuning effects, the checks."""
    fev_version = import_fev().__version__
    tuned_note = ""
    if (frame["key"] == "tsmojo_finetuned").any():
        tuned_note = (
            f" `{setup.get('name', 'tsmojo')} fine-tuned` is the same call as `{setup.get('name', 'tsmojo')}` with a "
            "copy of the model fine-tuned, per task, on the task's history before its first evaluation window "
            "(nothing at or after that cutoff)."
        )
    setup_line = ", ".join(f"{k} {v}" for k, v in setup.items() if k != "name") or "no tsmojo row"
    parts = [
        "# Covariate benchmark (fev-bench tasks with known-future covariates)",
        "",
        f"Command: `{command}`  ",
        f"tsmojo: {setup_line}; fev {fev_version} (metrics and windows); total wall time {total_s:.0f} s "
        f"on {os.cpu_count()} CPU cores.",
        "",
        "Measured rows are divided by the measured seasonal naive, published rows (fev-bench, fev 0.8.0) by the "
        "published one. gmean: geometric mean over the tasks ('-' where a task is missing). Lower is better.",
        "",
        f"Rows: `{setup.get('name', 'tsmojo')}` is `predict_df` with the known covariates (history in `df`, forecast "
        "window in `future_df`); `(target only)` is the same call on the target columns alone (a multivariate task's "
        "targets stay one group in both); `(univariate)` forecasts each target dimension on its own; the seasonal "
        "naive is fev-bench's (statsforecast, last 1,000 points); `MSTL + AutoARIMA-X` is statsforecast MSTL "
        "(seasonalities 24 and 168 on hourly data) with an AutoARIMA on the seasonally adjusted series that takes the "
        "known covariates as regressors, one fit per target dimension and window." + tuned_note,
        "",
        cache_note(frame, cache_dir),
        "",
        "## SQL relative to seasonal naive",
        "",
        metric_table(frame, tasks, "rel_SQL", True),
        "",
        "## SQL (absolute)",
        "",
        metric_table(frame, tasks, "SQL", False),
        "",
        "## MASE relative to seasonal naive",
        "",
        metric_table(frame, tasks, "rel_MASE", True),
        "",
        "## WQL relative to seasonal naive",
        "",
        metric_table(frame, tasks, "rel_WQL", True),
        "",
    ]
    comparisons = [
        ("Covariate effect: tsmojo with covariates / tsmojo on the target alone (< 1: covariates help)", {}),
        (
            "Fine-tuning effect: fine-tuned / zero-shot, both with covariates (< 1: fine-tuning helps)",
            {"with_key": "tsmojo_finetuned", "without_key": "tsmojo"},
        ),
    ]
    for title, keys in comparisons:
        effect = covariate_effect(frame, **keys)
        if not effect:
            continue
        shown = [t for t in tasks if t in effect["SQL"]]
        parts += [f"## {title}", "", "| metric | " + " | ".join(shown) + " | gmean |", "|" + "---|" * (len(shown) + 2)]
        for metric in METRICS:
            values = [_fmt(effect[metric][t]) for t in shown]
            parts.append(f"| {metric} | " + " | ".join(values) + f" | {_fmt(effect[metric]['overall'])} |")
        parts.append("")
    parts += _finetune_section(frame)
    check = seasonal_naive_check(frame)
    if len(check):
        parts += [
            "## Seasonal naive: measured vs published",
            "",
            "The published scores have 6 decimals: a reproduction differs by at most 5e-7.",
            "",
            "| task | metric | measured | published | difference |",
            "|---|---|---|---|---|",
        ]
        for _, row in check.iterrows():
            parts.append(
                f"| {row['task']} | {row['metric']} | {row['measured']:.7f} | {row['published']:.6f} | "
                f"{row['abs_diff']:.1e} |"
            )
        parts.append("")
    measured = frame[frame["source"] == "measured"]
    parts += [
        "## Measured rows (absolute scores, forecast wall time over all windows)",
        "",
        "seconds: the forecasts of all windows (for a cached row, as measured by the run that computed it); "
        "fine-tune s: the fine-tuning before the first window.",
        "",
        "| task | model | SQL | MASE | WAPE | WQL | seconds | fine-tune s | cached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in measured.iterrows():
        scores = " | ".join(f"{row[m]:.4f}" for m in METRICS)
        fit = _fmt(row.get("fit_seconds", float("nan")), 1)
        cached = "yes" if _is_cached(row) else "no"
        parts.append(f"| {row['task']} | {row['model']} | {scores} | {row['seconds']:.1f} | {fit} | {cached} |")
    return "\n".join(parts) + "\n"


def _is_cached(row) -> bool:
    value = row.get("cached", False)
    return isinstance(value, bool | np.bool_) and bool(value)


def cache_note(frame: pd.DataFrame, cache_dir: str | Path | None) -> str:
    """The report's sentence about the cache: which rows were read from it."""
    if cache_dir is None:
        return "Cache: not used (`--no-cache`); every measured row was computed by this run."
    measured = frame[frame["source"] == "measured"]
    cached = measured[[_is_cached(row) for _, row in measured.iterrows()]]
    where = _display_path(cache_dir)
    if cached.empty:
        return f"Cache: no row read from `{where}` (the statistical rows computed here were stored there)."
    by_model = {m: list(part["task"]) for m, part in cached.groupby("model", sort=False)}
    listed = "; ".join(f"{m} ({', '.join(t)})" for m, t in by_model.items())
    return (
        f"Cache: rows read from `{where}` (computed by an earlier run on the same data files and fev version, "
        f"not recomputed here; `--no-cache` recomputes them): {listed}."
    )


def _display_path(path: str | Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _finetune_section(frame: pd.DataFrame) -> list[str]:
    """Per task: what the fine-tuning saw and how it went."""
    rows = frame[(frame["source"] == "measured") & (frame["key"] == "tsmojo_finetuned")]
    if rows.empty:
        return []
    parts = [
        "## Fine-tuning runs (tsmojo_finetuned)",
        "",
        "Each task: a copy of the model trained on the past of its first window only (the points before the first "
        "cutoff, with their covariates); the last windows of that past are the validation series, training windows "
        "end before them; the weights of the best validation check are kept.",
        "",
        "| task | training points | context | steps | validation WQL at each check | best | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, row in rows.iterrows():
        checks = row.get("fit_val_wql", "")
        checks = checks if isinstance(checks, str) and checks else "-"
        parts.append(
            f"| {row['task']} | {int(row['fit_train_points'])} | {int(row['fit_context'])} | {int(row['fit_steps'])} | "
            f"{checks} | {_fmt(row['fit_best_val_wql'], 4)} | {_fmt(row['fit_seconds'], 1)} |"
        )
    parts.append("")
    return parts


def readme_row(frame: pd.DataFrame, tasks: Sequence[str], setup: dict) -> str:
    """One markdown row for a README: geometric mean SQL / seasonal naive with and without covariates."""
    measured = frame[frame["source"] == "measured"]

    def gmean(key: str) -> float:
        rows = measured[measured["key"] == key].set_index("task")
        return geometric_mean(rows.loc[t, "rel_SQL"] if t in rows.index else float("nan") for t in tasks)

    chronos_rows = frame[(frame["source"] == "published") & (frame["model"] == "Chronos-2")].set_index("task")
    chronos = geometric_mean(chronos_rows.loc[t, "rel_SQL"] if t in chronos_rows.index else float("nan") for t in tasks)
    effect = covariate_effect(frame).get("SQL", {}).get("overall", float("nan"))
    name = setup.get("name", "tsmojo")
    tuned = f" fine-tuned {_fmt(gmean('tsmojo_finetuned'))} |" if (measured["key"] == "tsmojo_finetuned").any() else ""
    return (
        f"| {name} | fev-bench covariate tasks ({len(tasks)}), SQL / seasonal naive, gmean | "
        f"with covariates {_fmt(gmean('tsmojo'))} | target only {_fmt(gmean('tsmojo_target_only'))} | "
        f"ratio {_fmt(effect)} |{tuned} Chronos-2 (published) {_fmt(chronos)} |"
    )


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------
def default_data_dir() -> Path:
    """``$TSMOJO_SHARED_DATASETS/covariates`` (``tsmojo.data.real.shared_datasets_dir``)."""
    return shared_datasets_dir() / "covariates"


def default_published_path() -> Path:
    """The published fev-bench scores: ``<shared>/anchors/covariates_published.csv``."""
    return shared_datasets_dir().parent / "anchors" / "covariates_published.csv"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line options (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder of task folders (default: shared covariates)")
    parser.add_argument("--published", default=None, help="published anchors CSV (default: shared anchors)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="bundled model name or model directory")
    parser.add_argument("--context-length", type=int, default=None, help="tsmojo context (default: the model's)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tasks", default="", help="comma-separated task folders (default: all)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, of {MEASURED_MODELS}")
    parser.add_argument("--stats-context", type=int, default=DEFAULT_STATS_CONTEXT, help="context of the ARIMA-X")
    parser.add_argument("--output-name", default="covariates", help="file stem of the outputs")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="cache of the statistical rows")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    tune = parser.add_argument_group("tsmojo_finetuned (the same settings for every task)")
    defaults = FineTuneOptions()
    tune.add_argument("--finetune-steps", type=int, default=defaults.num_steps, help="optimizer steps (at most)")
    tune.add_argument(
        "--finetune-context", type=int, default=None, help="longest training context (default: the forecast context)"
    )
    tune.add_argument("--finetune-batch-size", type=int, default=defaults.batch_size)
    tune.add_argument("--finetune-lr", type=float, default=defaults.learning_rate)
    tune.add_argument(
        "--finetune-val-windows",
        type=int,
        default=defaults.validation_windows,
        help="H-point windows at the end of the history held out for validation (0: none)",
    )
    tune.add_argument("--finetune-validate-every", type=int, default=defaults.validate_every)
    tune.add_argument(
        "--finetune-patience", type=int, default=defaults.patience, help="checks without improvement (-1: never stop)"
    )
    return parser.parse_args(argv)


def finetune_options(args: argparse.Namespace) -> FineTuneOptions:
    """The ``--finetune-*`` options."""
    return FineTuneOptions(
        num_steps=args.finetune_steps,
        context_length=args.finetune_context,
        batch_size=args.finetune_batch_size,
        learning_rate=args.finetune_lr,
        validation_windows=args.finetune_val_windows,
        validate_every=args.finetune_validate_every,
        patience=None if args.finetune_patience is None or args.finetune_patience < 0 else args.finetune_patience,
    )


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    """Run the benchmark; writes ``<output-name>.csv`` and ``.md`` and returns the results table."""
    args = parse_args(argv)
    shown = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python benchmarks/covariates.py", *(shlex.quote(str(a)) for a in shown)])
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    specs = find_tasks(data_dir, [t.strip() for t in args.tasks.split(",") if t.strip()])
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    import torch

    torch.set_num_threads(args.torch_threads)
    runs, setup = model_runs(
        models, args.model, args.context_length, args.dtype, args.device, args.stats_context, finetune_options(args)
    )
    cache_dir = None if args.no_cache else Path(args.cache_dir)
    print(f"command: {command}")
    print(f"tasks: {', '.join(s.name for s in specs)} from {data_dir}; models: {', '.join(r.label for r in runs)}")
    if setup:
        print("tsmojo: " + ", ".join(f"{k} {v}" for k, v in setup.items()))
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="tsmojo-covariates-") as workdir:
        for spec in specs:
            rows += evaluate_task_cached(spec, runs, workdir, cache_dir, verbose=not args.quiet)
    total = time.perf_counter() - start
    names = [s.name for s in specs]
    frame = pd.concat(
        [pd.DataFrame(rows), published_rows(args.published or default_published_path(), names)], ignore_index=True
    )
    frame = add_relative(frame)
    frame["cached"] = frame["cached"].astype("boolean").fillna(False).astype(bool) if "cached" in frame else False

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    columns = ["task", "model", *METRICS, "uses_covariates", "source", "seconds", "cached", "fit_seconds"]
    columns += [f"rel_{m}" for m in METRICS]
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *columns])))
    frame[columns].to_csv(output_dir / f"{args.output_name}.csv", index=False, float_format="%.10g")
    report = markdown_report(frame, names, command, setup, total, cache_dir)
    (output_dir / f"{args.output_name}.md").write_text(report)

    check = seasonal_naive_check(frame)
    for task in dict.fromkeys(check["task"]):
        part = check[check["task"] == task].set_index("metric")
        worst = float(part["abs_diff"].max())
        flag = "OK: same to the published 6 decimals" if worst <= SEASONAL_NAIVE_TOLERANCE else "MISMATCH"
        print(
            f"seasonal naive {task}: SQL {part.loc['SQL', 'measured']:.7f} vs published "
            f"{part.loc['SQL', 'published']:.6f}; largest difference over {', '.join(METRICS)}: {worst:.1e} ({flag})"
        )
    print("\n" + report)
    print("README row:\n" + readme_row(frame, names, setup))
    print(f"\nwrote {output_dir / args.output_name}.{{csv,md}} in {total:.0f} s")
    print(f"reproduce: {command}")
    return frame


if __name__ == "__main__":
    main()
