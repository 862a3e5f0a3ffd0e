"""Shared helpers of the tsmojo benchmarks: datasets, the evaluation protocol, baselines and metrics.

Protocol (Chronos zero-shot benchmark, see ``shared/datasets/README.md``): one forecast window per
series made of its last ``prediction_length`` points, the context is everything before it. Scores
come from GluonTS ``evaluate_forecasts``:

- ``MASE``: ``gluonts.ev.metrics.MASE()`` (median forecast), averaged over every scored point;
  with a common horizon that is the mean over series of each series' MASE. The scale is the
  seasonal-naive error of the context with the seasonality of the README table.
- ``WQL``: ``gluonts.ev.metrics.MeanWeightedSumQuantileLoss`` over levels 0.1, ..., 0.9: for each
  level, the quantile loss summed over all series and steps divided by the sum of ``|y|``; then the
  mean over levels.

Missing labels and missing context values are masked (``mask_invalid_label=True``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tsmojo.data.real import shared_datasets_dir
from tsmojo.frequency import normalize_freq, period_freq
from tsmojo.metrics import DEFAULT_QUANTILE_LEVELS

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# The benchmark protocol scores the levels tsmojo returns by default.
EVAL_QUANTILES: tuple[float, ...] = DEFAULT_QUANTILE_LEVELS


@dataclass(frozen=True)
class DatasetSpec:
    """One benchmark dataset: its folders under ``eval/``, published name, horizon and seasonality."""

    name: str
    folders: tuple[str, ...]
    published_name: str | None
    prediction_length: int
    seasonality: int


# The README table of shared/datasets: the seasonality column is the one the published numbers use.
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("m1_quarterly", ("m1_quarterly",), "monash_m1_quarterly", 8, 4),
        DatasetSpec("m1_yearly", ("m1_yearly",), "monash_m1_yearly", 6, 1),
        DatasetSpec("m3_quarterly", ("m3_quarterly",), "monash_m3_quarterly", 8, 4),
        DatasetSpec("m3_yearly", ("m3_yearly",), "monash_m3_yearly", 6, 1),
        DatasetSpec("m3_other", ("m3_other",), None, 8, 1),
        DatasetSpec("tourism_quarterly", ("tourism_quarterly",), "monash_tourism_quarterly", 8, 4),
        DatasetSpec("tourism_yearly", ("tourism_yearly",), "monash_tourism_yearly", 4, 1),
        DatasetSpec("ETTh", ("ETTh1", "ETTh2"), "ETTh", 24, 24),
        DatasetSpec("exchange_rate", ("exchange_rate",), "exchange_rate", 30, 5),
        DatasetSpec("nn5_daily", ("nn5_daily",), "nn5", 56, 1),
        DatasetSpec("car_parts", ("car_parts",), "monash_car_parts", 12, 12),
        DatasetSpec("hospital", ("hospital",), "monash_hospital", 12, 12),
        DatasetSpec("fred_md", ("fred_md",), "monash_fred_md", 12, 12),
        DatasetSpec("m4_hourly", ("m4_hourly",), "m4_hourly", 48, 24),
        DatasetSpec("m4_weekly", ("m4_weekly",), "m4_weekly", 13, 1),
        DatasetSpec("nn3", ("nn3",), None, 18, 12),
        DatasetSpec("electricity_weekly", ("electricity_weekly",), "monash_electricity_weekly", 8, 1),
    ]
}
AGGREGATE_DATASETS: tuple[str, ...] = (
    "m1_quarterly",
    "m1_yearly",
    "m3_quarterly",
    "m3_yearly",
    "tourism_quarterly",
    "tourism_yearly",
    "ETTh",
    "exchange_rate",
    "nn5_daily",
    "car_parts",
    "hospital",
    "fred_md",
)
# The 12 of the aggregate first, then the 5 without published aggregate numbers.
ALL_DATASETS: tuple[str, ...] = (*AGGREGATE_DATASETS, *(d for d in DATASETS if d not in AGGREGATE_DATASETS))
QUICK_DATASETS: tuple[str, ...] = ("m1_yearly", "m1_quarterly", "exchange_rate", "hospital")
# Where the README says our seasonal naive reproduces the published MASE (to 4 decimals).
REPRODUCIBLE_SEASONAL_NAIVE: frozenset[str] = frozenset(
    {
        "m1_quarterly",
        "m1_yearly",
        "m3_quarterly",
        "m3_yearly",
        "m4_hourly",
        "m4_weekly",
        "tourism_quarterly",
        "hospital",
        "car_parts",
        "exchange_rate",
        "nn5_daily",
        "ETTh",
        "fred_md",
    }
)
# Published dataset names in the fev re-run use seasonal_naive; the chronos result files seasonal-naive.
SEASONAL_NAIVE_NAMES = ("seasonal_naive", "seasonal-naive")


def published_results_path() -> Path:
    env = os.environ.get("TSMOJO_PUBLISHED_RESULTS")
    return Path(env) if env else shared_datasets_dir().parent / "anchors" / "published_results.csv"


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------
@dataclass
class EvalDataset:
    """Series of one benchmark dataset, split into context and the last-window label."""

    name: str
    freq: str
    prediction_length: int
    seasonality: int
    item_ids: list[str]
    starts: list[pd.Period]
    targets: list[np.ndarray]  # full series, float32, NaN = missing
    published_name: str | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def contexts(self) -> list[np.ndarray]:
        return [t[: -self.prediction_length] for t in self.targets]

    @property
    def labels(self) -> list[np.ndarray]:
        return [t[-self.prediction_length :] for t in self.targets]

    def gluonts_dataset(self) -> list[dict]:
        """The full series as GluonTS data entries (a list is a valid GluonTS ``Dataset``)."""
        return [
            {"item_id": item_id, "start": start, "target": target}
            for item_id, start, target in zip(self.item_ids, self.starts, self.targets, strict=True)
        ]

    def test_data(self):
        """GluonTS ``TestData``: one window of ``prediction_length`` at the end of each series."""
        from gluonts.dataset.split import split

        _, template = split(self.gluonts_dataset(), offset=-self.prediction_length)
        return template.generate_instances(prediction_length=self.prediction_length, windows=1)


def _period_freq(freq: str | None) -> str:
    """The ``pd.Period`` frequency of a meta.json frequency (``MS`` -> ``M``, ``QS`` -> ``Q-DEC``...),
    as :func:`tsmojo.frequency.period_freq` gives it; days where meta.json names none."""
    if not freq:
        return "D"
    # Business-day Periods are deprecated in pandas; the calendar is irrelevant to the metrics
    # (the seasonality is explicit), so business days become days.
    if isinstance(normalize_freq(freq), pd.offsets.BusinessDay):
        return "D"
    return period_freq(freq)


def _read_folder(folder: Path, prefix: str = "") -> tuple[dict, list[str], list[pd.Period], list[np.ndarray]]:
    meta = json.loads((folder / "meta.json").read_text())
    freq = _period_freq(meta.get("frequency"))
    df = pd.read_parquet(folder / "data.parquet", columns=["unique_id", "ds", "y"])
    df = df.sort_values(["unique_id", "ds"], kind="stable")
    integer_index = meta.get("ds_kind") == "integer_index" or not pd.api.types.is_datetime64_any_dtype(df["ds"])
    ids, starts, targets = [], [], []
    for uid, group in df.groupby("unique_id", sort=True):
        if integer_index:
            # No dates in the source: an arbitrary fixed start, the index only orders the points.
            start = pd.Period("2000-01-03", freq=freq) + int(group["ds"].iloc[0])
        else:
            start = pd.Period(group["ds"].iloc[0], freq=freq)
        ids.append(f"{prefix}{uid}")
        starts.append(start)
        targets.append(group["y"].to_numpy(dtype=np.float32))
    return meta, ids, starts, targets


def load_dataset(
    name_or_path: str | Path,
    root: str | Path | None = None,
    max_series: int | None = None,
    prediction_length: int | None = None,
    seasonality: int | None = None,
) -> EvalDataset:
    """Load a benchmark dataset by name (``DATASETS``) or any folder in the eval format.

    ``max_series`` keeps the first N series (by id): for smoke tests only, never for reported numbers.
    """
    root = Path(root) if root else shared_datasets_dir() / "eval"
    if str(name_or_path) in DATASETS:
        spec = DATASETS[str(name_or_path)]
        folders = [root / f for f in spec.folders]
        name, published, h, m = spec.name, spec.published_name, spec.prediction_length, spec.seasonality
    else:
        folder = Path(name_or_path)
        if not folder.is_dir():
            folder = root / str(name_or_path)
        if not (folder / "meta.json").is_file():
            raise FileNotFoundError(f"{name_or_path}: not a known dataset name nor a folder with meta.json")
        folders = [folder]
        meta = json.loads((folder / "meta.json").read_text())
        name, published = folder.name, None
        h, m = int(meta["prediction_length"]), int(meta.get("seasonality") or 1)
    h = prediction_length or h
    m = seasonality or m
    ids, starts, targets, metas = [], [], [], []
    for folder in folders:
        prefix = f"{folder.name}/" if len(folders) > 1 else ""
        meta, i, s, t = _read_folder(folder, prefix)
        metas.append(meta)
        ids += i
        starts += s
        targets += t
    if max_series:
        ids, starts, targets = ids[:max_series], starts[:max_series], targets[:max_series]
    too_short = [i for i, t in zip(ids, targets, strict=True) if len(t) <= h]
    if too_short:
        raise ValueError(f"{name}: {len(too_short)} series are not longer than prediction_length={h}")
    return EvalDataset(
        name=name,
        freq=_period_freq(metas[0].get("frequency")),
        prediction_length=h,
        seasonality=m,
        item_ids=ids,
        starts=starts,
        targets=targets,
        published_name=published,
        meta=metas[0],
    )


def earlier_window(dataset: EvalDataset, windows_back: int) -> tuple[EvalDataset, list[str]]:
    """``dataset`` with its test window moved ``windows_back`` horizons earlier: every series loses
    its last ``windows_back * prediction_length`` points, so the label is the window before them
    and the context everything earlier. Returns the moved dataset and the ids of the series left
    out because no context point would remain (they are not silently dropped: the caller reports
    them). ``windows_back=0`` is the benchmark's own window."""
    if windows_back < 0:
        raise ValueError(f"windows_back must be >= 0, got {windows_back}")
    cut = windows_back * dataset.prediction_length
    kept = [i for i, t in enumerate(dataset.targets) if len(t) - cut > dataset.prediction_length]
    kept_set = set(kept)
    left_out = [item for i, item in enumerate(dataset.item_ids) if i not in kept_set]
    moved = EvalDataset(
        name=dataset.name,
        freq=dataset.freq,
        prediction_length=dataset.prediction_length,
        seasonality=dataset.seasonality,
        item_ids=[dataset.item_ids[i] for i in kept],
        starts=[dataset.starts[i] for i in kept],
        targets=[dataset.targets[i][: len(dataset.targets[i]) - cut] for i in kept],
        published_name=None if windows_back else dataset.published_name,
        meta=dataset.meta,
    )
    return moved, left_out


# ----------------------------------------------------------------------------------------------
# Forecasts and metrics
# ----------------------------------------------------------------------------------------------
def quantile_forecasts(
    dataset: EvalDataset, values: np.ndarray | Sequence[np.ndarray], quantile_levels: Sequence[float]
) -> list:
    """Wrap ``values`` (N, H, Q) as GluonTS ``QuantileForecast`` objects aligned with ``dataset``."""
    from gluonts.model.forecast import QuantileForecast

    keys = [str(float(q)) for q in quantile_levels]
    forecasts = []
    for item_id, start, target, v in zip(dataset.item_ids, dataset.starts, dataset.targets, values, strict=True):
        v = np.asarray(v, dtype=np.float64)
        forecast_start = start + (len(target) - dataset.prediction_length)
        forecasts.append(
            QuantileForecast(forecast_arrays=v.T.copy(), start_date=forecast_start, forecast_keys=keys, item_id=item_id)
        )
    return forecasts


def metric_definitions():
    from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss

    return [MASE(), MeanWeightedSumQuantileLoss(quantile_levels=EVAL_QUANTILES)]


def _metrics_row(frame: pd.DataFrame) -> dict[str, float]:
    row = frame.reset_index(drop=True).iloc[0]
    return {"MASE": float(row["MASE[0.5]"]), "WQL": float(row["mean_weighted_sum_quantile_loss"])}


def score_forecasts(dataset: EvalDataset, forecasts: Iterable) -> dict[str, float]:
    """MASE and WQL of ``forecasts`` (GluonTS Forecast objects, one per series in order)."""
    from gluonts.model.evaluation import evaluate_forecasts

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = evaluate_forecasts(
            list(forecasts),
            test_data=dataset.test_data(),
            metrics=metric_definitions(),
            seasonality=dataset.seasonality,
            batch_size=5000,
        )
    return _metrics_row(frame)


def score_predictor(dataset: EvalDataset, predictor) -> tuple[dict[str, float], float]:
    """Run a GluonTS predictor on the test windows through ``evaluate_model``; returns (scores, seconds).

    The timing covers prediction and scoring (scoring is a small fraction of it).
    """
    import time

    from gluonts.model.evaluation import evaluate_model

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = evaluate_model(
            predictor,
            test_data=dataset.test_data(),
            metrics=metric_definitions(),
            seasonality=dataset.seasonality,
            batch_size=5000,
        )
    return _metrics_row(frame), time.perf_counter() - start


# ----------------------------------------------------------------------------------------------
# Baselines
# ----------------------------------------------------------------------------------------------
def seasonal_naive_values(dataset: EvalDataset) -> np.ndarray:
    """Seasonal naive point forecasts, (N, H, 9): the point repeated at every level of ``EVAL_QUANTILES``.

    Same forecast as GluonTS' ``SeasonalNaivePredictor``.

    Missing context values are filled with the last observed value; a context shorter than one
    season is forecast by its mean.
    """
    h, m = dataset.prediction_length, dataset.seasonality
    out = np.empty((len(dataset), h, len(EVAL_QUANTILES)), dtype=np.float64)
    for i, context in enumerate(dataset.contexts):
        ctx = forward_fill(context)
        if len(ctx) >= m:
            out[i] = ctx[len(ctx) - m + np.arange(h) % m][:, None]
        else:
            out[i] = np.nanmean(ctx)
    return out


def forward_fill(x: np.ndarray) -> np.ndarray:
    """Last-value imputation; leading NaNs stay NaN, as in GluonTS' ``LastValueImputation``."""
    x = np.asarray(x, dtype=np.float64)
    if not np.isnan(x).any():
        return x
    return pd.Series(x).ffill().to_numpy()


def _fill_for_stats(x: np.ndarray) -> np.ndarray:
    """Forward fill then backward fill; an all-missing context becomes zeros."""
    s = pd.Series(np.asarray(x, dtype=np.float64)).ffill().bfill()
    return s.fillna(0.0).to_numpy()


STATS_MODELS = ("auto_ets", "auto_arima", "auto_theta")
# Central prediction intervals giving the quantiles 0.1..0.9 (level 80 -> 0.1 and 0.9, ...).
STATS_LEVELS = (20, 40, 60, 80)
STATS_MAX_CONTEXT = 1000


def stats_forecast_values(
    dataset: EvalDataset, model: str, max_context: int = STATS_MAX_CONTEXT, n_jobs: int = 1
) -> np.ndarray:
    """Quantile forecasts (N, H, 9) at levels 0.1..0.9 from a statsforecast model.

    Quantiles come from the model's native prediction intervals; the median is the point forecast.
    Contexts are the last ``max_context`` points, with missing values forward/backward filled.
    A series where the model fails falls back to statsforecast's ``SeasonalNaive``.
    """
    from statsforecast import StatsForecast
    from statsforecast.models import AutoARIMA, AutoETS, AutoTheta, SeasonalNaive

    m = dataset.seasonality
    h = dataset.prediction_length
    cls = {"auto_ets": AutoETS, "auto_arima": AutoARIMA, "auto_theta": AutoTheta}[model]
    sf_model = cls(season_length=m, alias="model")
    frames = []
    for i, context in enumerate(dataset.contexts):
        y = _fill_for_stats(context[-max_context:])
        frames.append(pd.DataFrame({"unique_id": i, "ds": np.arange(len(y)), "y": y}))
    df = pd.concat(frames, ignore_index=True)
    sf = StatsForecast(
        models=[sf_model], freq=1, n_jobs=n_jobs, fallback_model=SeasonalNaive(season_length=m, alias="model")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = sf.forecast(df=df, h=h, level=list(STATS_LEVELS))
    fc = fc.reset_index() if "unique_id" not in fc.columns else fc
    fc = fc.sort_values(["unique_id", "ds"], kind="stable")
    columns = []
    for level in sorted(STATS_LEVELS, reverse=True):
        columns.append(f"model-lo-{level}")
    columns.append("model")
    for level in sorted(STATS_LEVELS):
        columns.append(f"model-hi-{level}")
    values = fc[columns].to_numpy(dtype=np.float64).reshape(len(dataset), h, len(columns))
    # A degenerate fit can give NaN intervals: fall back to the point forecast there.
    point = values[..., len(STATS_LEVELS)][..., None]
    values = np.where(np.isnan(values), point, values)
    return np.sort(values, axis=-1)


def geometric_mean(values: Iterable[float]) -> float:
    values = [float(v) for v in values]
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        return float("nan")
    return float(np.exp(np.mean(np.log(values))))


def load_published(path: str | Path | None = None) -> pd.DataFrame:
    """Published Chronos Benchmark II rows (fev re-run preferred), indexed by our dataset names.

    Columns: dataset, model, MASE, WQL, benchmark.
    """
    path = Path(path) if path else published_results_path()
    raw = pd.read_csv(path)
    raw = raw[~raw["dataset"].str.startswith("fev-bench")]
    to_ours = {spec.published_name: spec.name for spec in DATASETS.values() if spec.published_name}
    raw = raw[raw["dataset"].isin(to_ours)].copy()
    raw["dataset"] = raw["dataset"].map(to_ours)
    raw["model"] = raw["model"].replace({"seasonal-naive": "seasonal_naive"})
    raw["model"] = raw["model"].str.replace("amazon/", "", regex=False).str.replace("-", "_", regex=False)
    raw["model"] = raw["model"].replace({"timesfm_2.0": "timesfm-2.0"})
    # Prefer the fev re-run where both sources have the same (dataset, model, metric).
    raw["priority"] = raw["benchmark"].str.contains("fev re-run").map({True: 0, False: 1})
    raw = raw.sort_values("priority").drop_duplicates(["dataset", "model", "metric"])
    wide = raw.pivot_table(index=["dataset", "model"], columns="metric", values="value", aggfunc="first")
    bench = raw.drop_duplicates(["dataset", "model"]).set_index(["dataset", "model"])["benchmark"]
    wide = wide.join(bench).reset_index()
    wide.columns.name = None
    return wide[["dataset", "model", "MASE", "WQL", "benchmark"]]
