"""TSMojoPipeline: predict, predict_df, quantile handling, invariances and input errors.

Uses the bundled checkpoint for behaviour only (never for accuracy) and real series from the
shared eval datasets (located by $TSMOJO_SHARED_DATASETS, default <repo>/../shared/datasets).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import load_eval
from tsmojo.pipeline import MAX_BATCH_WORKERS, TSMojoPipeline, batch_workers
from tsmojo.tasks import interpolate_quantiles, mean_weights


@pytest.fixture(scope="module")
def pipeline():
    return TSMojoPipeline.from_pretrained("tsmojo-mini")


@pytest.fixture(scope="module")
def m4_context():
    """Three m4_hourly series without their last 48 points (the test window)."""
    df = load_eval("m4_hourly")
    df = df[df["unique_id"].isin(["H1", "H20", "H200"])]
    return df.groupby("unique_id", group_keys=False)[["unique_id", "ds", "y"]].apply(lambda g: g.iloc[:-48])


@pytest.fixture(scope="module")
def etth1_wide():
    df = load_eval("ETTh1")
    wide = df.pivot(index="ds", columns="unique_id", values="y").iloc[-1000:-24]
    return wide[["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]]


def rng_series(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return 10 + np.sin(np.arange(n) / 4) * 3 + rng.normal(scale=0.5, size=n)


# -- shapes and quantiles ------------------------------------------------------------------------


def test_predict_shapes_and_sorted_quantiles(pipeline):
    x = rng_series()
    levels = (0.1, 0.5, 0.9)
    quantiles, mean = pipeline.predict(
        [x, np.stack([x, x * 2]), {"target": x, "past_covariates": {"c": x}}], 20, quantile_levels=levels
    )
    assert [q.shape for q in quantiles] == [(1, 20, 3), (2, 20, 3), (1, 20, 3)]
    assert [m.shape for m in mean] == [(1, 20), (2, 20), (1, 20)]
    for q in quantiles:
        assert np.isfinite(q).all() and (np.diff(q, axis=-1) >= 0).all()
    # a 3-D array is a batch of multivariate tasks
    quantiles3, _ = pipeline.predict(np.stack([np.stack([x, x * 2])] * 2), 20, quantile_levels=levels)
    np.testing.assert_allclose(quantiles3[0], quantiles[1], atol=1e-5)


def test_quantile_interpolation_and_mean(pipeline):
    x = rng_series()
    model_levels = pipeline.model_quantile_levels
    full, mean = pipeline.predict([x], 10, quantile_levels=model_levels)
    picked, _ = pipeline.predict([x], 10, quantile_levels=(0.001, 0.05, 0.125, 0.5, 0.999))
    q = full[0]
    np.testing.assert_array_equal(picked[0][..., 0], q[..., 0])  # below 0.01: clamped
    np.testing.assert_array_equal(picked[0][..., 1], q[..., model_levels.index(0.05)])
    between = 0.5 * (q[..., model_levels.index(0.1)] + q[..., model_levels.index(0.15)])
    np.testing.assert_allclose(picked[0][..., 2], between, rtol=1e-6)
    np.testing.assert_array_equal(picked[0][..., 4], q[..., -1])  # above 0.99: clamped
    weights = mean_weights(model_levels)
    assert weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(mean[0], q @ weights, rtol=1e-6)
    # mean of a symmetric, linear quantile function is its centre
    levels = np.array(model_levels)
    assert (levels - 0.5) @ weights == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(interpolate_quantiles(levels, levels, [0.3, 0.33]), [0.3, 0.33])


def test_long_horizon_unrolls_on_the_median():
    """Beyond the head's 64 steps the forecast equals a new forecast from the context extended by
    the median so far: the same task through the unrolled route and two direct calls."""
    pipeline = TSMojoPipeline.from_pretrained("tsmojo-mini", dtype="float32")
    x = rng_series(150)
    long, _ = pipeline.predict([x], 150)
    first, _ = pipeline.predict([x], 64)
    np.testing.assert_allclose(long[0][:, :64], first[0], rtol=1e-4, atol=1e-4)
    extended = np.r_[x, first[0][0, :, 4]]  # level 0.5 of the nine default levels
    second, _ = pipeline.predict([extended], 64)
    np.testing.assert_allclose(long[0][:, 64:128], second[0], rtol=1e-4, atol=1e-4)
    assert long[0].shape == (1, 150, 9)


def test_context_length_truncates(pipeline):
    x = rng_series(400)
    a, _ = pipeline.predict([x], 16, context_length=64)
    b, _ = pipeline.predict([x[-64:]], 16)
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)


# -- invariances ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-3), ("bfloat16", 1e-2)])
def test_scaling_equivariance(pipeline, m4_context, dtype, tolerance):
    """An affine map of the input maps the forecast alike. The scaled inputs differ from the
    originals by float32 rounding only; in bf16 that can flip the rounding of a model input and
    move a forecast by a few bf16 steps (2^-8 relative), so its bound is the spread times 1e-2."""
    pipeline = TSMojoPipeline(pipeline.model, dtype=dtype)
    y = m4_context[m4_context["unique_id"] == "H1"]["y"].to_numpy()
    base, base_mean = pipeline.predict([y], 48)
    scaled, scaled_mean = pipeline.predict([y * 37.5 - 1000.0], 48)
    bound = tolerance * 37.5 * y.std()
    np.testing.assert_allclose(scaled[0], base[0] * 37.5 - 1000.0, rtol=1e-4, atol=bound)
    np.testing.assert_allclose(scaled_mean[0], base_mean[0] * 37.5 - 1000.0, rtol=1e-4, atol=bound)


def test_batch_independence_without_cross_learning(pipeline, m4_context):
    # float32: bf16 forecasts move slightly with the batch composition (bound: test_hardening.py)
    pipeline = TSMojoPipeline(pipeline.model, dtype="float32")
    series = [g["y"].to_numpy()[-400:] for _, g in m4_context.groupby("unique_id")]
    alone, alone_mean = pipeline.predict([series[0]], 48)
    others = [
        series[1][:150],
        np.stack([series[2], series[2] * 0.5]),
        {"target": series[1], "past_covariates": {"c": series[1]}},
    ]
    together, together_mean = pipeline.predict([*others, series[0]], 48)
    np.testing.assert_allclose(together[-1], alone[0], atol=1e-5 * np.abs(alone[0]).max(), rtol=0)
    np.testing.assert_allclose(together_mean[-1], alone_mean[0], atol=1e-5 * np.abs(alone[0]).max(), rtol=0)
    # several forward passes (tiny batch_size) give the same numbers
    split, _ = pipeline.predict([*others, series[0]], 48, batch_size=1)
    np.testing.assert_allclose(split[-1], alone[0], atol=1e-5 * np.abs(alone[0]).max(), rtol=0)
    joint, _ = pipeline.predict([*others, series[0]], 48, cross_learning=True)
    assert joint[-1].shape == alone[0].shape and np.isfinite(joint[-1]).all()


def test_batches_forecast_side_by_side_give_the_numbers_of_one_by_one(pipeline):
    rng = np.random.default_rng(5)
    t = np.arange(300)
    series = [10 + np.sin(2 * np.pi * t / 24 + i) + 0.3 * rng.normal(size=300).cumsum() for i in range(12)]
    inputs = [*series, series[3][:90], {"target": series[0], "past_covariates": {"c": series[1]}}]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert batch_workers(7, torch.device("cpu")) == (1, 1)
        one_by_one, one_by_one_mean = pipeline.predict(inputs, 24, batch_size=2)
        torch.set_num_threads(2)  # 8 batches of at most 2 rows: two workers of one thread each
        assert batch_workers(7, torch.device("cpu")) == (2, 1)
        side_by_side, side_by_side_mean = pipeline.predict(inputs, 24, batch_size=2)
    finally:
        torch.set_num_threads(threads)
    for a, b, a_mean, b_mean in zip(one_by_one, side_by_side, one_by_one_mean, side_by_side_mean, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a_mean, b_mean)


def test_batch_workers_split_the_threads_on_a_cpu_only():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(8)
        assert batch_workers(1, torch.device("cpu")) == (1, 8)  # one batch keeps every thread
        assert batch_workers(3, torch.device("cpu")) == (3, 2)
        assert batch_workers(100, torch.device("cpu")) == (MAX_BATCH_WORKERS, 8 // MAX_BATCH_WORKERS)
        assert batch_workers(100, torch.device("cuda")) == (1, 8)
    finally:
        torch.set_num_threads(threads)


def test_constant_and_leading_nan_series(pipeline):
    constant = np.full(100, 7.0)
    leading = np.concatenate([np.full(50, np.nan), rng_series(100)])
    quantiles, mean = pipeline.predict([constant, leading, np.zeros(30)], 12)
    assert all(np.isfinite(q).all() for q in quantiles)
    assert all(np.isfinite(m).all() for m in mean)


# -- real data, all routes agree -----------------------------------------------------------------


def test_predict_df_m4_hourly_matches_predict(pipeline, m4_context):
    out = pipeline.predict_df(m4_context, prediction_length=48, quantile_levels=(0.1, 0.5, 0.9))
    assert list(out.columns) == ["unique_id", "ds", "predictions", "0.1", "0.5", "0.9"]
    assert len(out) == 3 * 48
    ids = list(pd.unique(m4_context["unique_id"]))
    assert list(pd.unique(out["unique_id"])) == ids
    arrays = [m4_context[m4_context["unique_id"] == i]["y"].to_numpy() for i in ids]
    quantiles, _ = pipeline.predict(arrays, 48, quantile_levels=(0.1, 0.5, 0.9))
    for i, q in zip(ids, quantiles, strict=True):
        part = out[out["unique_id"] == i]
        np.testing.assert_array_equal(part[["0.1", "0.5", "0.9"]].to_numpy(), q[0])
        np.testing.assert_array_equal(part["predictions"].to_numpy(), q[0][:, 1])
        last = m4_context[m4_context["unique_id"] == i]["ds"].iloc[-1]
        expected = pd.date_range(last, periods=49, freq="h")[1:]
        assert (part["ds"].to_numpy() == expected.to_numpy()).all()


def test_multivariate_etth1_one_group(pipeline, etth1_wide):
    channels = list(etth1_wide.columns)
    quantiles, _ = pipeline.predict([etth1_wide.to_numpy().T], 24)
    assert quantiles[0].shape == (7, 24, 9)
    df = etth1_wide.reset_index().assign(item_id="ETTh1").rename(columns={"ds": "timestamp"})
    out = pipeline.predict_df(df, target=channels, prediction_length=24)
    assert list(out.columns[:4]) == ["item_id", "timestamp", "target_name", "predictions"]
    for d, name in enumerate(channels):
        part = out[out["target_name"] == name]
        np.testing.assert_array_equal(part[[f"0.{k}" for k in range(1, 10)]].to_numpy(), quantiles[0][d])
    # the channels inform each other: forecasting OT alone differs from forecasting it in the group
    alone, _ = pipeline.predict([etth1_wide["OT"].to_numpy()], 24)
    assert not np.allclose(alone[0][0], quantiles[0][-1])


def covariate_frames(h=24):
    """Target: a real m4_hourly series; known-future covariate: the target 24 h later (a "perfect
    forecast" of the next day, shifted), plus a categorical weekday/weekend covariate."""
    df = load_eval("m4_hourly")
    y = df[df["unique_id"] == "H150"].set_index("ds")["y"].iloc[-400:]
    full = pd.DataFrame({"unique_id": "H150", "ds": y.index, "y": y.to_numpy()})
    full["lead"] = full["y"].shift(-24).bfill().ffill() * 0.01
    full["weekend"] = np.where(full["ds"].dt.dayofweek >= 5, "weekend", "weekday")
    full["noise"] = np.random.default_rng(0).normal(size=len(full))
    history, future = full.iloc[:-h], full.iloc[-h:]
    return history, future[["unique_id", "ds", "lead", "weekend"]]


def test_predict_df_with_covariates_matches_predict(pipeline):
    history, future = covariate_frames()
    out = pipeline.predict_df(history, future_df=future)
    assert len(out) == 24 and (out["ds"].to_numpy() == future["ds"].to_numpy()).all()
    # the same task through predict(): "noise" past-only, "lead"/"weekend" known-future
    weekend_codes = history.groupby("weekend")["y"].mean()  # target-mean encoding
    item = {
        "target": history["y"].to_numpy(),
        "past_covariates": {
            "lead": history["lead"].to_numpy(),
            "weekend": history["weekend"].map(weekend_codes).to_numpy(),
            "noise": history["noise"].to_numpy(),
        },
        "future_covariates": {
            "lead": future["lead"].to_numpy(),
            "weekend": future["weekend"].map(weekend_codes).to_numpy(),
        },
    }
    quantiles, _ = pipeline.predict([item], 24)
    np.testing.assert_array_equal(out[[f"0.{k}" for k in range(1, 10)]].to_numpy(), quantiles[0][0])
    # categorical values straight into predict() are encoded the same way
    raw = dict(item)
    raw["past_covariates"] = {**item["past_covariates"], "weekend": history["weekend"].to_numpy()}
    raw["future_covariates"] = {**item["future_covariates"], "weekend": future["weekend"].to_numpy()}
    raw_quantiles, _ = pipeline.predict([raw], 24)
    np.testing.assert_array_equal(raw_quantiles[0], quantiles[0])
    # known-future values given as one T + H array are the same thing
    joined = {
        "target": item["target"],
        "past_covariates": {"noise": item["past_covariates"]["noise"]},
        "future_covariates": {
            k: np.concatenate([item["past_covariates"][k], item["future_covariates"][k]]) for k in ("lead", "weekend")
        },
    }
    joined_quantiles, _ = pipeline.predict([joined], 24)
    np.testing.assert_array_equal(joined_quantiles[0], quantiles[0])


@pytest.mark.parametrize(
    ("freq", "start"),
    [("MS", "2019-01-01"), ("W-SUN", "2020-01-05"), ("B", "2021-03-01"), ("QS-DEC", "2000-12-01"), ("h", "2021-01-01")],
)
def test_frequency_aliases_give_correct_future_timestamps(pipeline, freq, start):
    stamps = pd.date_range(start, periods=40, freq=freq)
    df = pd.DataFrame({"id": "s", "timestamp": stamps, "target": rng_series(40)})
    out = pipeline.predict_df(df, prediction_length=5)
    expected = pd.date_range(stamps[-1], periods=6, freq=freq)[1:]
    assert list(out["timestamp"]) == list(expected)
    explicit = pipeline.predict_df(df, prediction_length=5, freq={"h": "H"}.get(freq, freq))
    pd.testing.assert_frame_equal(explicit, out)


def test_integer_timestamps(pipeline):
    df = pd.DataFrame({"unique_id": "a", "ds": np.arange(10, 110, 2), "y": rng_series(50)})
    out = pipeline.predict_df(df, prediction_length=3)
    assert list(out["ds"]) == [110, 112, 114]


# -- errors name the series ----------------------------------------------------------------------


def _good(series_id="ok", n=30):
    return pd.DataFrame(
        {"unique_id": series_id, "ds": pd.date_range("2021-01-01", periods=n, freq="D"), "y": rng_series(n)}
    )


def _bad_frames():
    nan = _good("all_nan").assign(y=np.nan)
    inf = _good("with_inf")
    inf.loc[3, "y"] = np.inf
    dup = _good("dup_ts")
    dup.loc[5, "ds"] = dup.loc[4, "ds"]
    gap = _good("gappy").drop(index=7)
    text = _good("text_target").astype({"y": object})
    text.loc[2, "y"] = "oops"
    return {"all_nan": nan, "with_inf": inf, "dup_ts": dup, "gappy": gap, "text_target": text}


@pytest.mark.parametrize("bad", ["all_nan", "with_inf", "dup_ts", "gappy", "text_target"])
def test_bad_series_raise_naming_the_series(pipeline, bad):
    df = pd.concat([_good(), _bad_frames()[bad]], ignore_index=True)
    with pytest.raises(ValueError, match=bad):
        pipeline.predict_df(df, prediction_length=4)


def test_fill_gaps_makes_gappy_series_work(pipeline):
    gappy = _bad_frames()["gappy"]
    out = pipeline.predict_df(gappy, prediction_length=4, fill_gaps=True)
    assert len(out) == 4 and np.isfinite(out["predictions"]).all()
    # The same as the series with its missing day written out as NaN.
    grid = pd.date_range(gappy["ds"].min(), gappy["ds"].max(), freq="D")
    written = gappy.set_index("ds").reindex(grid).rename_axis("ds").reset_index()
    written["unique_id"] = "gappy"
    expected = pipeline.predict_df(written[["unique_id", "ds", "y"]], prediction_length=4)
    np.testing.assert_allclose(out["predictions"], expected["predictions"], rtol=1e-6)


def test_future_df_errors_name_the_series(pipeline):
    df = pd.concat([_good("a"), _good("b")], ignore_index=True).assign(x=1.0)
    future = pd.DataFrame(
        {"unique_id": ["a"] * 4 + ["b"] * 4, "ds": list(pd.date_range("2021-01-31", periods=4)) * 2, "x": 2.0}
    )
    assert len(pipeline.predict_df(df, future, prediction_length=4)) == 8
    with pytest.raises(ValueError, match="'b'.*3 rows"):
        pipeline.predict_df(df, future.iloc[:7], prediction_length=4)
    with pytest.raises(ValueError, match="'b'.*missing from future_df"):
        pipeline.predict_df(df, future.iloc[:4], prediction_length=4)
    with pytest.raises(ValueError, match="in future_df but not in df"):
        pipeline.predict_df(df, future.assign(z=0.0), prediction_length=4)


def test_array_input_errors(pipeline):
    with pytest.raises(ValueError, match="input 1: target row 0 has no observed value"):
        pipeline.predict([rng_series(), np.full(10, np.nan)], 4)
    with pytest.raises(ValueError, match="input 0: target holds infinite"):
        pipeline.predict([np.array([1.0, np.inf, 2.0])], 4)
    with pytest.raises(ValueError, match="future covariates cover 2 future steps"):
        pipeline.predict([{"target": rng_series(20), "future_covariates": {"x": np.arange(22.0)}}], 4)
    with pytest.raises(ValueError, match="past covariate 'x' has length 5"):
        pipeline.predict([{"target": rng_series(20), "past_covariates": {"x": np.arange(5.0)}}], 4)


def test_from_pretrained_errors_and_directory(tmp_path, pipeline):
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        TSMojoPipeline.from_pretrained("no-such-model")
    pipeline.save_pretrained(tmp_path / "copy")
    again = TSMojoPipeline.from_pretrained(tmp_path / "copy", device="auto")
    a, _ = pipeline.predict([rng_series()], 8)
    b, _ = again.predict([rng_series()], 8)
    np.testing.assert_array_equal(a[0], b[0])
