"""Context length: the API uses what it is asked for up to the model's maximum, warns beyond it,
the bundled model stays finite and sane far beyond its longest training context, and a context of
one value (or a few equal ones) is forecast near that value."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from tsmojo import TSMojoModel
from tsmojo.bundled import BUNDLED_DIR, bundled_models
from tsmojo.config import TSMojoConfig
from tsmojo.model import MIN_CONSTANT_CONTEXT, extend_short_constant_rows
from tsmojo.pipeline import TSMojoPipeline


def seasonal_walk(length: int, period: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return 100 + 10 * np.sin(2 * np.pi * t / period) + np.cumsum(rng.normal(scale=0.3, size=length))


@pytest.fixture(scope="module")
def tiny_pipeline() -> TSMojoPipeline:
    torch.manual_seed(0)
    config = TSMojoConfig.tiny(context_length=64, max_context_length=256, scale_window=32)
    return TSMojoPipeline(TSMojoModel(config), dtype="float32")


def test_context_length_is_honoured_up_to_the_maximum(tiny_pipeline):
    series = [seasonal_walk(400)]
    short, _ = tiny_pipeline.predict(series, prediction_length=8, context_length=64)
    default, _ = tiny_pipeline.predict(series, prediction_length=8)
    longer, _ = tiny_pipeline.predict(series, prediction_length=8, context_length=200)
    np.testing.assert_array_equal(short[0], default[0])  # the default is the config's context_length
    assert not np.allclose(longer[0], short[0])  # 200 points were used, not cut back to 64
    same_as_cut, _ = tiny_pipeline.predict([series[0][-200:]], prediction_length=8)
    cut, _ = tiny_pipeline.predict([series[0][-200:]], prediction_length=8, context_length=200)
    np.testing.assert_allclose(cut[0], longer[0], rtol=1e-5, atol=1e-5)
    assert same_as_cut[0].shape == cut[0].shape


def test_context_beyond_the_maximum_warns_once_and_uses_the_maximum(tiny_pipeline):
    tiny_pipeline._warned_context = False  # a fresh pipeline's state
    series = [seasonal_walk(400)]
    with pytest.warns(UserWarning, match="exceeds this model's maximum of 256 points: the last 256"):
        over, _ = tiny_pipeline.predict(series, prediction_length=8, context_length=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        tiny_pipeline.predict(series, prediction_length=8, context_length=1000)
    at_max, _ = tiny_pipeline.predict(series, prediction_length=8, context_length=256)
    np.testing.assert_array_equal(over[0], at_max[0])


def test_scale_window_sets_the_scale_on_the_recent_past():
    config = TSMojoConfig.tiny(scale_window=8)
    model = TSMojoModel(config)
    context = torch.cat([torch.full((1, 100), 1000.0), torch.arange(8.0)[None]], dim=1)
    loc, scale = model.scale_stats(context)
    assert loc.item() == pytest.approx(3.5) and scale.item() == pytest.approx(np.std(np.arange(8.0)), rel=1e-5)
    gaps = context.clone()
    gaps[:, -8:] = float("nan")  # nothing observed in the window: the whole context sets the scale
    loc, _ = model.scale_stats(gaps)
    assert loc.item() == pytest.approx(1000.0)


def longest_training_context(model_dir) -> int:
    summary = json.loads((model_dir / "training_summary.json").read_text())
    stages = summary["pretrain_config"].get("context_curriculum")
    if stages is None:  # recipes before the curriculum list stopped at 1,024 points
        return 1024
    return max(max(stage["lengths"]) for stage in stages)


@pytest.mark.parametrize("name", bundled_models())
def test_bundled_model_is_finite_and_sane_at_four_times_its_longest_training_context(name):
    model = TSMojoModel.from_pretrained(BUNDLED_DIR / name)
    length = 4 * longest_training_context(BUNDLED_DIR / name)
    model.config.max_context_length = max(length, model.config.max_context_length)  # beyond the API's cap
    period = 24
    series = seasonal_walk(length, period=period)
    quantiles = model.forecast(torch.tensor(series, dtype=torch.float32)[None], 48)[0].numpy()
    assert np.isfinite(quantiles).all()
    median = quantiles[:, len(model.config.quantiles) // 2]
    recent = series[-4 * period :]
    spread = recent.max() - recent.min()
    # Sane: the median stays within the recent range widened by its spread, and it follows the
    # daily cycle (correlates with the last observed cycle) rather than drifting off.
    assert recent.min() - spread < median.min() and median.max() < recent.max() + spread
    last_cycles = np.concatenate([series[-period:], series[-period:]])
    assert np.corrcoef(median, last_cycles)[0, 1] > 0.8


def test_short_constant_rows_are_extended_and_varying_or_long_rows_are_not():
    nan = float("nan")
    context = torch.tensor(
        [
            [nan, nan, nan, 7.0],  # one value: three steps of room, one more column needed
            [5.0, nan, 5.0, nan],  # two equal values with gaps: the gap before the last is filled first
            [nan, nan, 1.0, 2.0],  # short but varying
            [nan, nan, nan, nan],  # nothing observed: nothing to repeat
        ]
    )
    extended = extend_short_constant_rows(context, count=4)
    assert extended.shape == (4, 5)
    torch.testing.assert_close(extended[0], torch.tensor([nan, 7.0, 7.0, 7.0, 7.0]), equal_nan=True)
    torch.testing.assert_close(extended[1], torch.tensor([5.0, 5.0, 5.0, 5.0, nan]), equal_nan=True)
    torch.testing.assert_close(extended[2:, 1:], context[2:], equal_nan=True)
    assert torch.isnan(extended[2:, 0]).all()
    sparse = torch.tensor([[5.0] + [nan] * 6 + [5.0, 5.0]])
    torch.testing.assert_close(
        extend_short_constant_rows(sparse, count=4), torch.tensor([[5.0] + [nan] * 5 + [5.0] * 3]), equal_nan=True
    )
    long_constant = torch.full((2, 6), 3.0)
    assert extend_short_constant_rows(long_constant, count=4) is long_constant


@pytest.mark.parametrize("name", bundled_models())
def test_a_context_of_one_value_or_a_few_equal_ones_is_forecast_near_that_value(name):
    # Before the short rows were extended, tsmojo-mini-v8 forecast [100] as about 1,057, with a
    # 90% quantile of 322,000, and [100, 100, 100] 35% too high.
    pipeline = TSMojoPipeline.from_pretrained(BUNDLED_DIR / name, dtype="float32")
    levels = [0.1, 0.5, 0.9]
    for value in (100.0, 1.88e7, -3.0):
        contexts = [np.full(n, value) for n in range(1, MIN_CONSTANT_CONTEXT + 1)]
        quantiles, _ = pipeline.predict(contexts, prediction_length=12, quantile_levels=levels)
        for n, forecast in zip(range(1, MIN_CONSTANT_CONTEXT + 1), quantiles, strict=True):
            forecast = np.asarray(forecast).reshape(12, len(levels))
            assert np.abs(forecast[:, 1] / value - 1).max() < 0.2, (name, value, n)
            # The first tsmojo-mini spreads five equal values to 45..280: wide, but not the 3,000x of a stub.
            assert np.abs(forecast[:, [0, 2]] / value - 1).max() < 2.0, (name, value, n)
        torch.testing.assert_close(torch.tensor(np.asarray(quantiles[0])), torch.tensor(np.asarray(quantiles[-1])))
