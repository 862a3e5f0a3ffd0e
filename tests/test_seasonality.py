"""Seasonal period detection and the seasonal-naive hint (tsmojo/seasonality.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsmojo import TSMojoModel
from tsmojo.config import TSMojoConfig
from tsmojo.layers import GroupLayout
from tsmojo.model import GATE_FEATURES, hint_fit_features, values_and_presence
from tsmojo.seasonality import detect_period, mean_lag_error, seasonal_drift, seasonal_gain, seasonal_hint


def rows(length: int = 1000, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    cases = [
        np.sin(2 * np.pi * t / 24) + 0.05 * rng.normal(size=length),  # a daily cycle
        rng.normal(size=length),  # white noise: no period
        np.cumsum(rng.normal(size=length)),  # a random walk: no period
        np.sin(2 * np.pi * t / 7) + 0.01 * t,  # a weekly cycle on a trend
        np.sin(2 * np.pi * t / 24) + 2 * np.sin(2 * np.pi * t / 168) + 0.1 * rng.normal(size=length),
    ]
    return torch.tensor(np.stack(cases), dtype=torch.float32)


def test_detects_the_cycle_and_nothing_in_noise_or_walks():
    periods = detect_period(rows(), max_period=1024, window=4096, min_correlation=0.2)
    assert periods.tolist() == [24, 0, 0, 7, 24]


def test_detection_ignores_left_padding_and_missing_values():
    x = rows()
    padded = torch.cat([torch.full((x.shape[0], 333), float("nan")), x], dim=1)
    holes = x.clone()
    holes[:, 100:110] = float("nan")
    expected = detect_period(x, 1024, 4096, 0.2)
    assert torch.equal(detect_period(padded, 1024, 4096, 0.2), expected)
    assert torch.equal(detect_period(holes, 1024, 4096, 0.2), expected)


def test_short_series_find_no_spurious_cycle():
    rng = np.random.default_rng(1)
    short = torch.tensor(np.cumsum(rng.normal(size=(200, 30)), axis=1), dtype=torch.float32)
    assert (detect_period(short, 1024, 4096, 0.2) == 0).float().mean() > 0.95


def test_hint_is_the_value_one_period_back_then_the_last_cycle_repeated():
    scaled = torch.arange(10.0)[None]
    hint = seasonal_hint(scaled, torch.tensor([3]), horizon=5)
    expected = [float("nan")] * 3 + list(range(7)) + [7.0, 8.0, 9.0, 7.0, 8.0]
    torch.testing.assert_close(hint[0], torch.tensor(expected), equal_nan=True)
    none = seasonal_hint(scaled, torch.tensor([0]), horizon=5)
    assert torch.isnan(none).all()


def test_a_zero_initialised_hint_leaves_the_forecast_unchanged():
    torch.manual_seed(0)
    without = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=False)).eval()
    with_hint = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True)).eval()
    missing, unexpected = with_hint.load_state_dict(without.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("hint_embed.") for k in missing)
    context = rows(300)
    torch.testing.assert_close(with_hint.forecast(context, 12), without.forecast(context, 12))


@pytest.mark.parametrize("period", [12, 24])
def test_the_hint_carries_the_cycle_into_the_forecast_tokens(period):
    # With a hint embedding that passes its input through, the future tokens differ between two
    # series that differ only in their last cycle: the hint reaches the horizon.
    torch.manual_seed(0)
    model = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True)).eval()
    t = torch.arange(400.0)
    base = torch.sin(2 * torch.pi * t / period)
    other = base.clone()
    other[-period:] += 0.5
    patch = model.config.patch_size
    patches = torch.stack([base, other]).view(2, -1, patch)
    future = torch.full((2, 1, patch), float("nan"))
    layout = GroupLayout.from_group_ids(torch.arange(2))
    hints = model.hints(torch.cat([patches, future], dim=1), torch.zeros(2), layout, num_future=1)

    def future_hint_tokens() -> tuple[torch.Tensor, torch.Tensor]:
        return model.hint_embed(values_and_presence(hints.seasonal))[:, -2:].unbind(0)

    a, b = future_hint_tokens()
    assert torch.equal(a, b)  # zero-initialised: nothing passes yet
    torch.nn.init.normal_(model.hint_embed.skip.weight)
    a, b = future_hint_tokens()
    assert not torch.allclose(a, b)


def test_an_open_shortcut_centres_the_forecast_on_the_seasonal_naive_and_keeps_the_spread():
    # A gate of 1 moves every quantile by the distance from the head's median to the hint: the
    # median becomes the last cycle repeated, exactly, whatever the (random, untrained) head
    # draws, and the distances between quantiles stay the head's.
    torch.manual_seed(0)
    model = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=True)).eval()
    period, t = 24, torch.arange(480.0)
    context = (10 + 3 * torch.sin(2 * torch.pi * t / period) + torch.cos(4 * torch.pi * t / period))[None]
    closed = model(context).quantiles  # (1, horizon, levels), before forecast() sorts the levels
    torch.nn.init.ones_(model.hint_gate.bias)
    opened = model(context).quantiles
    seasonal_naive = context[0, -period:][torch.arange(opened.shape[1]) % period]
    median = model.median_index
    assert not torch.allclose(closed[0, :, median], seasonal_naive, atol=0.1)
    torch.testing.assert_close(opened[0, :, median], seasonal_naive, rtol=1e-4, atol=1e-4)
    loc, scale = model.scale_stats(context)  # the spread is kept where the head draws it: in model space
    spreads = [model.to_model_space(q, loc[..., None], scale[..., None]) for q in (closed, opened)]
    spreads = [z - z[..., median : median + 1] for z in spreads]
    torch.testing.assert_close(*spreads, rtol=1e-4, atol=1e-4)


def test_a_closed_shortcut_leaves_the_forecast_unchanged_and_learns():
    torch.manual_seed(0)
    without = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True)).eval()
    with_shortcut = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=True)).eval()
    missing, unexpected = with_shortcut.load_state_dict(without.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("hint_gate.") for k in missing)
    context = rows(300)
    torch.testing.assert_close(with_shortcut.forecast(context, 12), without.forecast(context, 12))
    future = torch.sin(2 * torch.pi * torch.arange(300.0, 316.0) / 24).expand(len(context), -1)
    with_shortcut.train()(context, future_target=future).loss.backward()
    assert with_shortcut.hint_gate.weight.grad.abs().sum() > 0


def test_a_shortcut_needs_a_hint():
    with pytest.raises(ValueError, match="hint_shortcut"):
        TSMojoConfig.tiny(seasonal_hint=False, covariate_hint=False, hint_shortcut=True)


def test_seasonal_gain_tells_a_clean_cycle_from_one_a_second_cycle_spoils():
    x = rows()
    period = detect_period(x, 1024, 4096, 0.2)
    gain = seasonal_gain(x, period)
    # a daily cycle with little noise: copying yesterday beats copying the last hour 3x
    assert gain[0] > 2 and mean_lag_error(x, period.clamp(min=1))[0] < 0.1
    # the weekly cycle under the daily one makes copying yesterday worse than the last hour
    assert gain[4] < 1
    assert torch.isnan(gain[1:3]).all()  # no period
    features = hint_fit_features(x, period)
    assert features.shape == (5, GATE_FEATURES) and torch.isfinite(features).all()
    assert (features[1:3] == 0).all() and features[0, 0] > 0 > features[4, 0]
    torch.testing.assert_close(features[:, 0], torch.nan_to_num(gain.log(), nan=0.0))


def test_a_gain_damped_gate_stays_shut_where_copying_the_cycle_lost_and_opens_where_it_won():
    # Rows 0 (a clean daily cycle, gain > 2) and 4 (a daily cycle under a weekly one, gain < 1)
    # of rows(), with the gate's bias fully open: the damping passes the shortcut on row 0 and
    # holds it back on row 4.
    torch.manual_seed(0)
    undamped = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=True)).eval()
    damped = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=True, hint_gate_gain_slope=8.0)).eval()
    damped.load_state_dict(undamped.state_dict())
    context = rows()[[0, 4]]
    closed = undamped(context).quantiles
    for model in (undamped, damped):
        torch.nn.init.ones_(model.hint_gate.bias)
    shift_undamped = (undamped(context).quantiles - closed).abs().mean(dim=(1, 2))
    shift_damped = (damped(context).quantiles - closed).abs().mean(dim=(1, 2))
    assert (shift_undamped > 0.1).all()
    assert shift_damped[0] > 0.9 * shift_undamped[0]
    assert shift_damped[1] < 0.2 * shift_undamped[1]


def test_gain_damping_needs_the_seasonal_shortcut():
    with pytest.raises(ValueError, match="hint_gate_gain_slope"):
        TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=False, hint_gate_gain_slope=4.0)


def test_the_drift_continues_a_trending_cycle_and_leaves_a_steady_one_alone():
    t = torch.arange(60.0)
    cycle = torch.tensor([0.0, 1.0, 3.0, 1.0, -1.0, 0.0]).repeat(10)
    trending = (0.25 * t + cycle)[None]
    period = torch.tensor([6])
    forecast = seasonal_hint(trending, period, horizon=15, drift=True)[0, 60:]
    torch.testing.assert_close(forecast, 0.25 * torch.arange(60.0, 75.0) + cycle[:15])
    # Without the drift the forecast repeats the last cycle at its level: the trend is lost.
    plain = seasonal_hint(trending, period, horizon=15)[0, 60:]
    torch.testing.assert_close(plain, trending[0, 54:60].repeat(3)[:15])
    steady = cycle[None]
    torch.testing.assert_close(
        seasonal_hint(steady, period, horizon=15, drift=True),
        seasonal_hint(steady, period, horizon=15),
        equal_nan=True,  # the first cycle has no earlier value
    )
    # Missing values drop out of the average; a row without a period gets no hint at all.
    gappy = trending.clone()
    gappy[0, [50, 57]] = float("nan")
    torch.testing.assert_close(seasonal_drift(gappy, period), torch.tensor([[0.25]]))
    assert seasonal_hint(trending, torch.tensor([0]), horizon=6, drift=True)[0, 60:].isnan().all()


def test_an_open_shortcut_with_drift_follows_a_trend_that_the_plain_one_damps():
    torch.manual_seed(0)
    period, t = 24, torch.arange(504.0)
    series = 10 + 0.01 * t + 0.5 * torch.sin(2 * torch.pi * t / period)
    context, future = series[None, :480], series[480:]
    errors = {}
    for drift in (False, True):
        model = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=True, seasonal_hint_drift=drift))
        torch.nn.init.ones_(model.eval().hint_gate.bias)
        median = model(context).quantiles[0, :, model.median_index]
        errors[drift] = (median - future[: median.shape[0]]).abs().mean()
    # The drift is a straight line in model space (arcsinh of the standardised values), which bends
    # it as the trend leaves the scale window's range: closer than the plain copy, not exact.
    assert errors[True] < 0.35 * errors[False]


def test_the_drift_needs_the_seasonal_hint():
    with pytest.raises(ValueError, match="seasonal_hint_drift"):
        TSMojoConfig.tiny(seasonal_hint=False, seasonal_hint_drift=True)
