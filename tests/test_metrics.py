"""tsmojo.metrics: quantile column names and the metric definitions, on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tsmojo.metrics import (
    DEFAULT_QUANTILE_LEVELS,
    columns_by_level,
    mase,
    parse_quantile_column,
    pinball,
    pinball_loss,
    quantile_column,
    quantile_loss,
    quantile_loss_sums,
    scaled_quantile_loss,
    seasonal_error,
    weighted_quantile_loss,
    wql_from_sums,
)


def test_default_levels():
    assert DEFAULT_QUANTILE_LEVELS == tuple(round(0.1 * i, 1) for i in range(1, 10))


@pytest.mark.parametrize(("level", "name"), [(0.1, "0.1"), (0.5, "0.5"), (0.025, "0.025"), (0.99, "0.99")])
def test_quantile_column_names_round_trip(level, name):
    assert quantile_column(level) == name
    assert quantile_column(np.float64(level)) == name
    assert parse_quantile_column(name) == level


def test_other_columns_are_not_levels():
    for name in ("predictions", "unique_id", "1.5", "0", "1", "nan", 3):
        assert parse_quantile_column(name) is None, name
    columns = ["unique_id", "ds", "predictions", "0.1", "0.5", "0.9"]
    assert columns_by_level(columns) == {0.1: "0.1", 0.5: "0.5", 0.9: "0.9"}


def test_pinball_and_quantile_loss_by_hand():
    levels = [0.1, 0.5, 0.9]
    # y = 10, f = 8: error +2 -> q * 2; f = 12: error -2 -> (1 - q) * 2
    under = pinball(np.array([10.0]), np.array([[8.0, 8.0, 8.0]]), levels)
    over = pinball(np.array([10.0]), np.array([[12.0, 12.0, 12.0]]), levels)
    np.testing.assert_allclose(under, [[0.2, 1.0, 1.8]])
    np.testing.assert_allclose(over, [[1.8, 1.0, 0.2]])
    np.testing.assert_allclose(quantile_loss(np.array([10.0]), np.array([[8.0, 8.0, 8.0]]), levels), 2 * under)


def test_training_loss_is_a_weighted_mean_of_the_pinball_loss():
    levels = torch.tensor([0.1, 0.5, 0.9])
    target = torch.tensor([[10.0, 10.0]])
    prediction = torch.tensor([[[8.0, 8.0, 8.0], [12.0, 12.0, 12.0]]])
    # mean over levels: 1.0 at both steps; weights 1 and 0 keep the first step only
    assert float(pinball_loss(prediction, target, levels, torch.tensor([[1.0, 0.0]]))) == pytest.approx(1.0)
    # no weight at all: divided by 1, not by 0
    assert float(pinball_loss(prediction, target, levels, torch.zeros(1, 2))) == 0.0


def test_wql_is_a_ratio_of_sums_with_missing_labels_masked():
    levels = (0.1, 0.5, 0.9)
    target = np.array([[1.0, 2.0], [10.0, np.nan]])
    forecast = (target + 1.0)[..., None].repeat(3, -1)  # NaN where the label is missing: masked too
    # every observed point is over-forecast by 1: QL_q = 2 (1 - q), 3 points, sum |y| = 13
    expected = np.mean([3 * 2 * (1 - q) / 13 for q in levels])
    assert weighted_quantile_loss(target, forecast, levels) == pytest.approx(expected)
    assert expected == pytest.approx(3 / 13)
    # not the mean of per-series ratios (2/3 and 1/10)
    per_series = np.mean([weighted_quantile_loss(target[i], forecast[i], levels) for i in range(2)])
    assert per_series == pytest.approx((2 / 3 + 1 / 10) / 2)
    assert weighted_quantile_loss(target, target[..., None].repeat(3, -1), levels) == 0.0


def test_wql_sums_add_up_across_batches_and_backends():
    rng = np.random.default_rng(0)
    target = rng.gamma(2.0, size=(6, 5))
    target[1, 2] = np.nan
    forecast = np.sort(target[..., None] + rng.normal(size=(6, 5, 9)), axis=-1)
    levels = DEFAULT_QUANTILE_LEVELS
    whole = weighted_quantile_loss(target, forecast, levels)
    first = quantile_loss_sums(target[:2], forecast[:2], levels)
    second = quantile_loss_sums(target[2:], forecast[2:], levels)
    assert float(wql_from_sums(first[0] + second[0], first[1] + second[1])) == pytest.approx(whole, rel=1e-12)
    levels_tensor = torch.tensor(levels, dtype=torch.float64)
    sums = quantile_loss_sums(torch.as_tensor(target), torch.as_tensor(forecast), levels_tensor)
    assert float(wql_from_sums(*sums)) == pytest.approx(whole, rel=1e-12)
    assert math.isnan(weighted_quantile_loss(np.zeros(3), np.zeros((3, 9)), levels))  # no |y| at all: 0 / 0


def test_seasonal_error_by_hand():
    assert seasonal_error(np.array([1.0, 2.0, 4.0, 3.0, 5.0]), 2) == pytest.approx(5 / 3)  # |4-1|, |3-2|, |5-4|
    assert seasonal_error(np.array([5.0, np.nan, 7.0, 8.0]), 2) == pytest.approx(2.0)  # the NaN difference is skipped
    assert seasonal_error(np.array([1.0, 3.0, 6.0]), 12) == pytest.approx(2.5)  # m >= length: m = 1
    assert math.isnan(seasonal_error(np.array([1.0]), 1))


def test_mase_and_scaled_quantile_loss_by_hand():
    assert mase(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])) == pytest.approx((0.5 + 1.0 + 3.0) / 3)
    losses = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert scaled_quantile_loss(losses, np.array([1.0, 2.0])) == pytest.approx(np.mean([1.0, 2.0, 1.5, 2.0]))


def test_metrics_match_gluonts():
    from gluonts.ev.metrics import MASE, MeanWeightedSumQuantileLoss
    from gluonts.ev.ts_stats import seasonal_error as gluonts_seasonal_error

    rng = np.random.default_rng(1)
    levels = list(DEFAULT_QUANTILE_LEVELS)
    contexts = rng.gamma(2.0, size=(4, 30)) * 10
    labels = rng.gamma(2.0, size=(4, 6)) * 10
    forecasts = np.sort(labels[..., None] * rng.uniform(0.5, 1.5, size=(4, 6, 9)), axis=-1)
    scales = np.array([seasonal_error(c, 7) for c in contexts])
    np.testing.assert_allclose(scales, [float(np.ravel(gluonts_seasonal_error(c, 7))[0]) for c in contexts], rtol=1e-12)
    data = {"label": labels, "seasonal_error": scales[:, None], "0.5": forecasts[..., 4]}
    data.update({str(q): forecasts[..., k] for k, q in enumerate(levels)})
    expected = {}
    for name, metric in (("MASE", MASE()), ("WQL", MeanWeightedSumQuantileLoss(quantile_levels=levels))):
        evaluator = metric(axis=None)
        evaluator.update(data)
        expected[name] = float(evaluator.get())
    errors = np.abs(labels - forecasts[..., 4])
    assert mase(errors.ravel(), np.repeat(scales, 6)) == pytest.approx(expected["MASE"], rel=1e-12)
    assert weighted_quantile_loss(labels, forecasts, levels) == pytest.approx(expected["WQL"], rel=1e-12)


def test_the_model_trains_on_this_loss():
    """The model's quantile loss is metrics.pinball_loss in scaled units, on target rows only."""
    from tsmojo import TSMojoModel
    from tsmojo.config import TSMojoConfig

    torch.manual_seed(0)
    model = TSMojoModel(TSMojoConfig.tiny())
    context, future = torch.randn(3, 40).cumsum(-1), torch.randn(3, 8)
    roles = torch.tensor([0, 0, 1])
    output = model(context, roles=roles, num_output_patches=2, future_target=future)
    loc, scale = model.scale_stats(context)
    scaled_prediction = model.to_model_space(output.quantiles, loc[..., None], scale[..., None])
    target = model.to_model_space(future, loc, scale)
    weight = (roles == 0)[:, None].float().expand(-1, 8)
    expected = pinball_loss(scaled_prediction, target, model.quantile_levels, weight)
    torch.testing.assert_close(output.quantile_loss, expected, rtol=1e-4, atol=1e-5)
