"""tsmojo.backtest: rolling-origin windows and their scores, checked against ``gluonts.ev``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tsmojo.backtest import rolling_backtest
from tsmojo.metrics import DEFAULT_QUANTILE_LEVELS


def test_backtest_metrics_match_gluonts():
    """MASE, WQL and SQL of `tsmojo evaluate` equal GluonTS's MASE, mean_weighted_sum_quantile_loss
    and average_mean_scaled_quantile_loss on the same windows and forecasts."""
    from gluonts.ev.metrics import MASE, AverageMeanScaledQuantileLoss, MeanWeightedSumQuantileLoss
    from gluonts.ev.ts_stats import seasonal_error

    rng = np.random.default_rng(1)
    horizon, windows, step, m = 5, 2, 3, 7
    levels = list(DEFAULT_QUANTILE_LEVELS)
    df = pd.concat(
        [
            pd.DataFrame(
                {"id": f"s{k}", "ds": pd.date_range("2020", periods=n, freq="D"), "y": rng.gamma(2, size=n) * 10}
            )
            for k, n in enumerate([30, 41, 25])
        ]
    )

    def fake_forecast(context: np.ndarray) -> dict[float, np.ndarray]:
        base = np.resize(context[-m:], horizon)
        return {q: base * (0.5 + q) for q in levels}

    seen_freqs = {}

    def predict(contexts: pd.DataFrame, window_freqs: dict) -> pd.DataFrame:
        seen_freqs.update(window_freqs)
        rows = []
        for key, part in contexts.groupby("id", sort=False):
            frame = pd.DataFrame(
                {"id": key, "ds": pd.date_range(part["ds"].iloc[-1], periods=horizon + 1, freq="D")[1:]}
            )
            for q, values in fake_forecast(part["y"].to_numpy()).items():
                frame[f"{q:g}"] = values
            rows.append(frame)
        return pd.concat(rows)

    freqs = {f"s{k}": pd.offsets.Day() for k in range(3)}
    result = rolling_backtest(
        df, predict, "id", "ds", "y", horizon, windows=windows, step=step, seasonality=m, freqs=freqs
    )
    assert len(seen_freqs) == 3 * windows and set(seen_freqs.values()) == {pd.offsets.Day()}
    data = {"label": [], "seasonal_error": [], **{str(q): [] for q in levels}}
    for _, part in df.groupby("id", sort=False):
        y = part["y"].to_numpy()
        for w in range(windows):
            start = len(y) - horizon - (windows - 1 - w) * step
            data["label"].append(y[start : start + horizon])
            data["seasonal_error"].append(seasonal_error(y[:start], m))
            for q, values in fake_forecast(y[:start]).items():
                data[str(q)].append(values)
    data = {k: np.array(v) for k, v in data.items()}
    expected = {}
    for name, metric in [
        ("MASE", MASE()),
        ("WQL", MeanWeightedSumQuantileLoss(quantile_levels=levels)),
        ("SQL", AverageMeanScaledQuantileLoss(quantile_levels=levels)),
    ]:
        evaluator = metric(axis=None)
        evaluator.update(data)
        expected[name] = float(evaluator.get())
    overall = result.aggregate.iloc[0]
    assert overall["window"] == "all" and overall["num_series"] == 3
    for name, value in expected.items():
        assert overall[name] == pytest.approx(value, rel=1e-12), name
    assert len(result.per_series) == 3 and result.per_series["windows"].eq(2).all()
