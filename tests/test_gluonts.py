"""GluonTS integration: TSMojoPredictor / TSMojoEstimator on real data, matching the pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gluonts.dataset.split import split
from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
from gluonts.evaluation import make_evaluation_predictions
from gluonts.model import evaluate_forecasts, evaluate_model
from gluonts.model.forecast import QuantileForecast
from gluonts.model.predictor import Predictor

from tests.helpers import load_eval
from tsmojo.gluonts import TSMojoEstimator, TSMojoPredictor, frame_to_entries
from tsmojo.pipeline import TSMojoPipeline

LEVELS = tuple(np.round(np.arange(1, 10) / 10, 1))


@pytest.fixture(scope="module")
def pipeline():
    return TSMojoPipeline.from_pretrained("tsmojo-mini")


@pytest.fixture(scope="module")
def m4_frame():
    df = load_eval("m4_hourly")
    return df[df["unique_id"].isin(["H5", "H50", "H300"])].groupby("unique_id").tail(500)


@pytest.fixture(scope="module")
def m4_test(m4_frame):
    entries = frame_to_entries(m4_frame)
    _, template = split(entries, offset=-48)
    return template.generate_instances(48)


def test_quantile_forecasts_match_pipeline_and_predict_df(pipeline, m4_frame, m4_test):
    predictor = TSMojoPredictor(pipeline, prediction_length=48)
    forecasts = list(predictor.predict(m4_test.input))
    assert len(forecasts) == 3
    # same series order as the entries: batch position changes results in the last float bits
    context = m4_frame.groupby("unique_id", sort=False, group_keys=False)[["unique_id", "ds", "y"]].apply(
        lambda g: g.iloc[:-48]
    )
    frame_out = pipeline.predict_df(context, prediction_length=48, quantile_levels=LEVELS)
    arrays = [entry["target"] for entry in m4_test.input]
    quantiles, means = pipeline.predict(arrays, 48, quantile_levels=LEVELS)
    for forecast, entry, q, mean in zip(forecasts, m4_test.input, quantiles, means, strict=True):
        assert isinstance(forecast, QuantileForecast)
        assert forecast.item_id == entry["item_id"]
        assert forecast.start_date == entry["start"] + len(entry["target"])
        assert forecast.start_date.freqstr == "h"
        for level in (*LEVELS, 0.5):
            assert str(level) in forecast.forecast_keys
        assert "mean" in forecast.forecast_keys and "0.01" in forecast.forecast_keys
        got = np.stack([forecast.quantile(level) for level in LEVELS], axis=-1)
        np.testing.assert_array_equal(got, q[0])
        np.testing.assert_array_equal(forecast.mean, mean[0])
        part = frame_out[frame_out["unique_id"] == entry["item_id"]]
        np.testing.assert_array_equal(part[[str(level) for level in LEVELS]].to_numpy(), q[0])
        assert part["ds"].iloc[0] == forecast.start_date.to_timestamp()


def test_evaluate_model_and_make_evaluation_predictions(pipeline, m4_frame, m4_test):
    predictor = TSMojoPredictor(pipeline, prediction_length=48)
    metrics = [MASE(), MeanWeightedSumQuantileLoss(quantile_levels=LEVELS)]
    result = evaluate_model(predictor, test_data=m4_test, metrics=metrics, seasonality=24)
    assert np.isfinite(result.to_numpy()).all()
    again = evaluate_forecasts(predictor.predict(m4_test.input), test_data=m4_test, metrics=metrics, seasonality=24)
    pd.testing.assert_frame_equal(result, again)
    forecast_it, truth_it = make_evaluation_predictions(frame_to_entries(m4_frame), predictor)
    forecasts, truths = list(forecast_it), list(truth_it)
    assert len(forecasts) == len(truths) == 3
    assert forecasts[0].index[0] == truths[0].index[-48]


def test_multivariate_etth1_entry(pipeline):
    df = load_eval("ETTh1").groupby("unique_id").tail(400)
    wide = df.pivot(index="ds", columns="unique_id", values="y")
    entries = frame_to_entries(
        wide.reset_index().assign(item_id="ETTh1").rename(columns={"ds": "timestamp"}),
        target=list(wide.columns),
    )
    entry = entries[0]
    assert entry["target"].shape == (7, 400)
    predictor = TSMojoPredictor(pipeline, prediction_length=24, quantile_levels=LEVELS)
    forecast = next(iter(predictor.predict([{**entry, "target": entry["target"][:, :-24]}])))
    assert forecast.forecast_array.shape == (len(LEVELS) + 1, 24, 7)
    quantiles, _ = pipeline.predict([entry["target"][:, :-24]], 24, quantile_levels=LEVELS)
    np.testing.assert_array_equal(forecast.forecast_array[:-1].transpose(2, 1, 0), quantiles[0])


def test_covariate_fields_match_pipeline(pipeline):
    df = load_eval("m4_hourly")
    y = df[df["unique_id"] == "H77"]["y"].to_numpy()[-300:]
    lead = np.roll(y, -24) * 0.5  # known-future covariate: tomorrow's value (a transformed real series)
    past = np.convolve(y, np.ones(5) / 5, mode="same")  # past-only covariate
    entry = {
        "start": pd.Period("2020-01-01 00:00", freq="h"),
        "item_id": "H77",
        "target": y[:-24],
        "feat_dynamic_real": lead[None, :],
        "past_feat_dynamic_real": past[None, :-24],
    }
    forecast = next(iter(TSMojoPredictor(pipeline, prediction_length=24, quantile_levels=LEVELS).predict([entry])))
    item = {
        "target": y[:-24],
        "past_covariates": {"past": past[:-24]},
        "future_covariates": {"lead": lead},
    }
    quantiles, _ = pipeline.predict([item], 24, quantile_levels=LEVELS)
    np.testing.assert_array_equal(np.stack([forecast.quantile(q) for q in LEVELS], -1), quantiles[0][0])
    with pytest.raises(ValueError, match="'H77'.*feat_dynamic_real has 276 steps"):
        next(
            iter(
                TSMojoPredictor(pipeline, prediction_length=24).predict(
                    [{**entry, "feat_dynamic_real": lead[None, :-24]}]
                )
            )
        )


def test_serialize_round_trip(pipeline, m4_test, tmp_path):
    predictor = TSMojoPredictor(pipeline, prediction_length=48, quantile_levels=(0.05, 0.5, 0.95), batch_size=2)
    predictor.serialize(tmp_path)
    assert {"config.json", "model.safetensors", "tsmojo-predictor.json"} <= {p.name for p in tmp_path.iterdir()}
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    loaded = Predictor.deserialize(tmp_path)
    assert isinstance(loaded, TSMojoPredictor)
    assert loaded.quantile_levels == (0.05, 0.5, 0.95) and loaded.batch_size == 2
    for a, b in zip(predictor.predict(m4_test.input), loaded.predict(m4_test.input), strict=True):
        np.testing.assert_array_equal(a.forecast_array, b.forecast_array)
        assert a.forecast_keys == b.forecast_keys and a.start_date == b.start_date


def test_estimator_trains_a_predictor_without_stray_files(tmp_path, monkeypatch):
    from tsmojo.config import TSMojoConfig
    from tsmojo.model import TSMojoModel

    monkeypatch.chdir(tmp_path)
    config = TSMojoConfig(
        patch_size=8, d_model=16, num_layers=1, num_heads=2, d_ff=32, ssm_state=4, window=4,
        chunk_size=4, memory_size=4, max_output_patches=1, context_length=32,
    )  # fmt: skip
    start = TSMojoPipeline(TSMojoModel(config))
    rng = np.random.default_rng(0)
    data = [
        {"start": pd.Period("2021-01-01", freq="D"), "target": rng.normal(size=60) + 5, "item_id": f"s{i}"}
        for i in range(3)
    ]
    estimator = TSMojoEstimator(
        prediction_length=8, model=start, batch_size=2, num_batches_per_epoch=2, trainer_kwargs={"max_epochs": 2},
        patience=5,
    )  # fmt: skip
    predictor = estimator.train(data, validation_data=data)
    assert isinstance(predictor, TSMojoPredictor) and predictor.prediction_length == 8
    forecasts = list(predictor.predict(data))
    assert len(forecasts) == 3 and forecasts[0].forecast_array.shape[1] == 8
    assert list(tmp_path.iterdir()) == []
    assert predictor.pipeline.fit_history["steps"] == 4


def test_frame_to_entries_known_covariates_with_future_df():
    history = pd.DataFrame(
        {"unique_id": "a", "ds": pd.date_range("2024-01-01", periods=10, freq="D"), "y": np.arange(10.0)}
    )
    history["promo"], history["temp"] = np.arange(10.0) * 10, np.arange(10.0) / 10
    future = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2024-01-11", periods=3, freq="D")})
    future["promo"], future["y"] = [100.0, 110.0, 120.0], np.nan  # extra columns are ignored
    (entry,) = frame_to_entries(history, known_covariates=["promo"], past_covariates=["temp"], future_df=future)
    assert entry["start"] == pd.Period("2024-01-01", freq="D") and entry["item_id"] == "a"
    np.testing.assert_array_equal(entry["feat_dynamic_real"], [np.arange(13.0) * 10])
    np.testing.assert_array_equal(entry["past_feat_dynamic_real"], [np.arange(10.0) / 10])
    # future rows that do not follow the history would misalign the covariates: an error naming the series
    with pytest.raises(ValueError, match="'a'.*do not follow"):
        frame_to_entries(
            history, known_covariates=["promo"], future_df=future.assign(ds=future["ds"] + pd.Timedelta(days=1))
        )


def test_estimator_train_from_fine_tunes_a_copy_of_the_predictor(tmp_path, monkeypatch):
    import torch

    from tsmojo.config import TSMojoConfig
    from tsmojo.model import TSMojoModel

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    start = TSMojoPredictor(TSMojoPipeline(TSMojoModel(TSMojoConfig.tiny(context_length=32)), dtype="float32"), 8)
    before = {k: v.clone() for k, v in start.pipeline.model.state_dict().items()}
    rng = np.random.default_rng(0)
    data = [
        {"start": pd.Period("2021-01-01", freq="D"), "target": rng.normal(size=60) + 5, "item_id": f"s{i}"}
        for i in range(3)
    ]
    estimator = TSMojoEstimator(
        prediction_length=8, model=start.pipeline, batch_size=2, num_batches_per_epoch=2,
        trainer_kwargs={"max_epochs": 1},
    )  # fmt: skip
    tuned = estimator.train_from(start, data)
    assert isinstance(tuned, TSMojoPredictor) and tuned.pipeline is not start.pipeline
    assert tuned.pipeline.fit_history["steps"] == 2
    after = tuned.pipeline.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the copy was trained
    assert all(torch.equal(before[k], v) for k, v in start.pipeline.model.state_dict().items())  # the original not
    assert len(list(tuned.predict(data))) == 3
