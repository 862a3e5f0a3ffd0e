"""Fast checks of the benchmark metric code (benchmarks/common.py, benchmarks/zero_shot.py).

The seasonal-naive scores reproduce the published Chronos Benchmark II values; the published
aggregate reproduces the anchors' table. Skipped where the shared datasets are absent.
"""

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.common import (
    AGGREGATE_DATASETS,
    EVAL_QUANTILES,
    DatasetSpec,
    EvalDataset,
    earlier_window,
    geometric_mean,
    load_dataset,
    published_results_path,
    quantile_forecasts,
    score_forecasts,
    seasonal_naive_values,
)
from tsmojo.data.real import shared_datasets_dir

needs_data = pytest.mark.skipif(
    not (shared_datasets_dir() / "eval" / "hospital" / "data.parquet").is_file()
    or not published_results_path().is_file(),
    reason="shared eval datasets / published results not available",
)


@needs_data
@pytest.mark.parametrize(
    ("name", "mase", "wql"),
    [
        ("hospital", 0.920528, 0.072626),
        ("m1_quarterly", 2.077537, 0.149502),
        ("car_parts", 1.201464, 1.599952),  # missing values in context and labels
    ],
)
def test_seasonal_naive_reproduces_published(name, mase, wql):
    dataset = load_dataset(name)
    scores = score_forecasts(dataset, quantile_forecasts(dataset, seasonal_naive_values(dataset), EVAL_QUANTILES))
    assert scores["MASE"] == pytest.approx(mase, abs=1e-3)
    assert scores["WQL"] == pytest.approx(wql, abs=1e-3)


@needs_data
def test_published_aggregate_matches_anchor_table():
    from benchmarks.zero_shot import add_relative, published_rows, summarize

    frame = add_relative(published_rows(AGGREGATE_DATASETS))
    agg = summarize(frame).set_index("model")
    assert agg.loc["tirex", "gmean_rel_MASE"] == pytest.approx(0.782, abs=5e-4)
    assert agg.loc["tirex", "gmean_rel_WQL"] == pytest.approx(0.615, abs=5e-4)
    assert agg.loc["auto_ets", "gmean_rel_MASE"] == pytest.approx(0.844, abs=5e-4)
    assert agg.loc["seasonal_naive", "gmean_rel_MASE"] == pytest.approx(1.0)


def _toy_dataset(h: int = 3, m: int = 2) -> EvalDataset:
    targets = [np.array([1, 2, 4, 3, 5, 6, 8, 7], np.float32), np.array([5, np.nan, 7, 8, 9, 10, 11], np.float32)]
    return EvalDataset(
        name="toy",
        freq="D",
        prediction_length=h,
        seasonality=m,
        item_ids=["a", "b"],
        starts=[pd.Period("2020-01-01", freq="D")] * 2,
        targets=targets,
    )


def test_seasonal_naive_values():
    naive = seasonal_naive_values(_toy_dataset())
    assert naive.shape == (2, 3, len(EVAL_QUANTILES))
    np.testing.assert_allclose(naive[0, :, 0], [3, 5, 3])  # context 1 2 4 3 5: last season 3 5
    np.testing.assert_allclose(naive[1, :, 4], [7, 8, 7])  # context 5 nan 7 8: last season 7 8


def test_metrics_by_hand():
    dataset = _toy_dataset()
    labels = np.stack(dataset.labels)[..., None].repeat(len(EVAL_QUANTILES), -1).astype(float)
    assert score_forecasts(dataset, quantile_forecasts(dataset, labels, EVAL_QUANTILES)) == {"MASE": 0.0, "WQL": 0.0}
    # Every quantile 1 above the label. Seasonal (m=2) scales: series a (|4-1|+|3-2|+|5-4|)/3 = 5/3;
    # series b |7-5| = 2 (the difference with the missing value is masked).
    scores = score_forecasts(dataset, quantile_forecasts(dataset, labels + 1.0, EVAL_QUANTILES))
    assert scores["MASE"] == pytest.approx((3 * 3 / 5 + 3 * 1 / 2) / 6)
    # Quantile loss 2 * (1 - q) per point, 6 points, sum |y| = 51, mean of (1 - q) over 0.1..0.9 = 0.5.
    assert scores["WQL"] == pytest.approx(6 / 51)


def test_geometric_mean_and_spec():
    assert geometric_mean([0.5, 2.0]) == pytest.approx(1.0)
    assert math.isnan(geometric_mean([1.0, float("nan")]))
    assert DatasetSpec("x", ("x",), None, 1, 1).prediction_length == 1


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_kernel_benchmark_runs_every_implementation_on_cpu(tmp_path, capsys):
    """benchmarks/kernel_speed.py on CPU, tiny shapes: the torch, short-sequence and naive paths, and the Triton
    kernels (the CUDA case's code) under the interpreter, forward and backward, with positive times."""
    from benchmarks import kernel_speed

    out = tmp_path / "kernels.csv"
    tiny = "--batch 2 --heads 1 --head-dim 4 --state 2 --window 2 --chunk 4 --memory 2 --repeats 1"
    kernel_speed.main(["--device", "cpu", "--lengths", "5,9", "--naive-max-length", "5", "--triton-interpret",
                  "--out", str(out), *tiny.split()])  # fmt: skip
    assert "CPU case" in capsys.readouterr().out
    rows = pd.read_csv(out)
    for op in ("ssd", "attention"):
        impls = [("torch", {5, 9}), ("naive", {5}), ("triton-interpret", {5})]
        if op == "attention":
            impls.append(("fused-chunked", {5, 9}))
        short_paths = ["dense", "fused"] if op == "attention" else ["one-chunk"]
        for impl, lengths in impls + [(name, {5}) for name in short_paths]:
            chosen = rows[(rows["op"] == op) & (rows["impl"] == impl)]
            assert set(chosen["T"]) == lengths, (op, impl)
            assert set(chosen["mode"]) == {"fwd", "fwd+bwd"}, (op, impl)
    assert (rows["ms_median"] > 0).all() and (rows["device"] == "cpu").all()


def test_speed_targets_compare_only_measured_pairs():
    from benchmarks.speed import targets_summary

    def row(model: str, seconds: float, rss: float) -> dict:
        return dict(model=model, context=32768, seconds_per_batch=seconds, peak_rss_mib=rss, activation_mib=rss / 4)

    frame = pd.DataFrame([row("tsmojo", 2.0, 400), row("chronos2_unlimited", 7.0, 900)]).assign(status="ok")
    lines = targets_summary(frame, {})
    assert any("tsmojo is 3.50x faster than chronos2_unlimited (target >= 3x): met" in line for line in lines)
    assert not any("unavailable" in line or "bf16" in line for line in lines)
    alone = targets_summary(frame[frame["model"] == "tsmojo"], {})
    assert alone[-1] == "32,768-point comparison with Chronos-2 unavailable (not run or failed)"


def test_series_wql_parts_add_up_to_the_dataset_wql_and_the_gap_table_ranks_the_series():
    from benchmarks.wql_gap import gap_table, series_wql_parts
    from tsmojo.metrics import weighted_quantile_loss

    rng = np.random.default_rng(0)
    levels = [0.1, 0.5, 0.9]
    labels = [rng.normal(loc, 1.0, size=6) for loc in (1.0, 100.0, 5.0)]
    labels[2][[1, 4]] = np.nan  # missing labels count neither loss nor |y|
    forecasts = [np.sort(rng.normal(y[:, None], 2.0, size=(6, 3)), axis=1) for y in labels]
    parts = series_wql_parts(labels, forecasts, levels)
    stacked = weighted_quantile_loss(np.concatenate(labels), np.concatenate(forecasts), levels)
    assert parts.sum() == pytest.approx(stacked, rel=1e-12)

    worse = [f.copy() for f in forecasts]
    worse[1] = worse[1] + 30.0  # the large series moves most of the gap
    dataset = EvalDataset(
        name="toy", freq="D", prediction_length=6, seasonality=1, item_ids=["a", "b", "c"],
        starts=[pd.Period("2020-01-01", "D")] * 3,
        targets=[np.concatenate([np.arange(10.0), y]) for y in labels],
    )  # fmt: skip
    table = gap_table(dataset, parts, series_wql_parts(labels, worse, levels), top=2)
    assert len(table) == 2 and table["item_id"].iloc[0] == "b"
    assert table["share_of_gap"].iloc[0] == pytest.approx(1.0)
    assert table["last_value"].iloc[0] == 9.0


def test_worst_series_swapped_gives_each_model_the_other_models_loss_on_its_worst_series():
    from benchmarks.wql_gap import worst_series_swapped

    baseline, candidate = np.array([1.0, 5.0, 2.0]), np.array([4.0, 1.0, 2.5])
    swapped_baseline, swapped_candidate = worst_series_swapped(baseline, candidate)
    np.testing.assert_array_equal(swapped_baseline, [1.0, 1.0, 2.0])  # its worst: series 1 (5 against 1)
    np.testing.assert_array_equal(swapped_candidate, [1.0, 1.0, 2.5])  # its worst: series 0 (4 against 1)


def test_an_earlier_window_moves_every_label_back_one_horizon_and_names_the_series_it_leaves_out():
    dataset = EvalDataset(
        name="toy", freq="D", prediction_length=3, seasonality=1, item_ids=["long", "short"],
        starts=[pd.Period("2020-01-01", "D")] * 2, targets=[np.arange(10.0), np.arange(6.0)],
        published_name="toy_published",
    )  # fmt: skip
    same, left_out = earlier_window(dataset, 0)
    assert left_out == [] and same.labels[1].tolist() == [3.0, 4.0, 5.0] and same.published_name == "toy_published"

    moved, left_out = earlier_window(dataset, 1)
    assert moved.item_ids == ["long"] and left_out == ["short"]  # 6 - 3 points leave no context
    assert moved.labels[0].tolist() == [4.0, 5.0, 6.0] and moved.contexts[0].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert moved.starts == [pd.Period("2020-01-01", "D")] and moved.published_name is None
    with pytest.raises(ValueError, match="windows_back"):
        earlier_window(dataset, -1)


def test_the_windows_aggregate_takes_geometric_means_per_window_and_over_every_pair():
    from benchmarks.earlier_windows import aggregate

    scores = pd.DataFrame(
        dict(model="m", dataset=["a", "b", "a", "b"], window=[0, 0, 1, 1], rel_MASE=[0.5, 2.0, 1.0, 4.0],
             rel_WQL=[1.0, 1.0, 0.25, 1.0])
    )  # fmt: skip
    summary = aggregate(scores).set_index("window")
    assert summary.loc["0", "MASE"] == pytest.approx(1.0) and summary.loc["1", "MASE"] == pytest.approx(2.0)
    assert summary.loc["all", "MASE"] == pytest.approx(2**0.5)
    assert summary.loc["all", "WQL"] == pytest.approx(0.25**0.25)


@needs_data
def test_window_scores_forecasts_each_window_with_one_loaded_model(tmp_path):
    from benchmarks.earlier_windows import window_scores
    from tests.helpers import tiny_model

    model_dir = tmp_path / "tiny"
    tiny_model().save_pretrained(model_dir)
    scores = window_scores([str(model_dir)], ["hospital"], windows=2, verbose=False)
    assert scores["window"].tolist() == [0, 1] and (scores["left_out"] == 0).all()
    assert np.isfinite(scores[["rel_MASE", "rel_WQL"]].to_numpy()).all()
    # The two windows are different data, so a model's scores on them differ.
    assert scores["rel_MASE"].iloc[0] != scores["rel_MASE"].iloc[1]


@needs_data
def test_an_ensemble_scores_its_members_mean_forecast(tmp_path):
    from benchmarks.earlier_windows import ENSEMBLE_SEPARATOR, mean_forecast, window_scores
    from benchmarks.zero_shot import tsmojo_forecasts
    from tests.helpers import tiny_model

    first, second = tmp_path / "first", tmp_path / "second"
    tiny_model(seed=0).save_pretrained(first)
    tiny_model(seed=1).save_pretrained(second)
    ensemble = f"{first}{ENSEMBLE_SEPARATOR}{second}"
    scores = window_scores([str(first), str(second), ensemble], ["hospital"], windows=1, verbose=False)
    assert scores["model"].tolist() == [str(first), str(second), ensemble]
    assert scores["rel_MASE"].nunique() == 3  # the ensemble is neither member

    # Its forecast is the members' mean at every level, series by series.
    dataset = load_dataset("hospital")
    members = [tsmojo_forecasts(dataset, str(path))[0] for path in (first, second)]
    mean = mean_forecast([members[0][0], members[1][0]])
    np.testing.assert_allclose(mean.forecast_array, (members[0][0].forecast_array + members[1][0].forecast_array) / 2)
    assert mean.item_id == members[0][0].item_id and mean.start_date == members[0][0].start_date


def test_trend_probe_prints_a_ratio_per_model_and_length(tmp_path, capsys):
    from benchmarks.trend_probe import main, noisy_lines
    from tests.helpers import tiny_model

    history, future = noisy_lines(5, 40, 8)
    assert history.shape == (5, 40) and future.shape == (5, 8)
    model_dir = tmp_path / "tiny"
    tiny_model().save_pretrained(model_dir)
    main([str(model_dir), "--lengths", "39,40", "--horizon", "8", "--series", "5"])
    row = capsys.readouterr().out.strip().splitlines()[-1]
    cells = row.strip("|").split("|")[1:]
    assert len(cells) == 2 and all(0.0 <= float(cell.split("/")[1]) <= 1.0 for cell in cells)
    with pytest.raises(SystemExit):
        main([str(model_dir), "--lengths", "1,40"])


def test_seasonal_probe_measures_full_gain_for_the_average_cycle_and_prints_every_model(tmp_path, capsys):
    from benchmarks.seasonal_probe import (
        average_cycle_forecast,
        context_profile,
        main,
        seasonal_gains,
        seasonal_series,
    )
    from tests.helpers import tiny_model

    history, future, seasonal = seasonal_series(40, period=12, cycles=10, horizon=24, noise=0.3)
    assert history.shape == (40, 120) and future.shape == seasonal.shape == (40, 24)
    np.testing.assert_allclose(seasonal_gains(seasonal + 5.0, seasonal), 1.0, atol=1e-9)
    assert abs(np.median(seasonal_gains(average_cycle_forecast(history, 12, 24), seasonal)) - 1.0) < 0.05
    flat = np.repeat(history[:, -1:], 24, axis=1)
    assert np.all(np.abs(seasonal_gains(flat, seasonal)) < 1e-6)
    # The profile of a clean cycle is the cycle, strong; a gap keeps the phases aligned.
    clean = 5.0 + np.tile([1.0, -1.0, 2.0, -2.0], 10)
    profile, strength = context_profile(clean, 4, 8)
    np.testing.assert_allclose(profile, np.tile([1.0, -1.0, 2.0, -2.0], 2), atol=1e-9)
    assert strength > 0.99
    gapped = np.concatenate([[np.nan, np.nan], clean])
    gapped[20] = np.nan  # carried forward: one phase off by one step, the others in place
    assert context_profile(gapped[:4], 4, 8) is None
    filled = context_profile(gapped, 4, 8)[0]
    np.testing.assert_allclose(filled, profile, atol=0.3)
    assert np.argmax(filled[:4]) == 2 and np.argmin(filled[:4]) == 3
    model_dir = tmp_path / "tiny"
    tiny_model().save_pretrained(model_dir)
    main([str(model_dir), "--periods", "4", "--cycles", "3,5", "--series", "4"])
    rows = capsys.readouterr().out.strip().splitlines()
    assert rows[-2].startswith("| average cycle (oracle) | 4 |") and rows[-1].startswith(f"| {model_dir} | 4 |")
    assert len(rows[-1].strip("|").split("|")) == 4
    with pytest.raises(SystemExit):
        main([str(model_dir), "--periods", "1"])


def test_gate_scale_multiplies_the_seasonal_gate_alone_and_moves_forecasts_toward_the_hint():
    from benchmarks.gate_scale import SeasonalGateScale
    from tests.helpers import tiny_model
    from tsmojo import TSMojoPipeline

    model = tiny_model(seasonal_hint=True, covariate_hint=True, hint_shortcut=True)
    torch.nn.init.constant_(model.hint_gate.bias, 0.3)  # a zero gate (the initial one) would scale to zero
    pipeline = TSMojoPipeline(model, dtype=torch.float32, max_batch_workers=1)
    steps = np.arange(96)
    series = [10 + np.sin(2 * np.pi * steps / 8) + 0.3 * np.cos(steps * 0.37)]
    hook = SeasonalGateScale(pipeline)
    base = pipeline.predict(series, 8, quantile_levels=[0.5])[0][0]
    assert abs(hook.mean_gate() - 0.3) < 1e-6
    hook.scale = 0.0
    unmoved = pipeline.predict(series, 8, quantile_levels=[0.5])[0][0]
    hook.scale = 2.0
    doubled = pipeline.predict(series, 8, quantile_levels=[0.5])[0][0]
    # The shift toward the hint grows with the gate (linearly in model space, monotonically in
    # data units): the forecast at scale 1 lies between those at 0 and 2 at every step.
    low, high = np.minimum(unmoved, doubled), np.maximum(unmoved, doubled)
    assert np.all(base >= low - 1e-5) and np.all(base <= high + 1e-5)
    assert np.abs(doubled - unmoved).max() > 0.1


def test_gate_scale_refuses_a_model_without_the_seasonal_shortcut():
    from benchmarks.gate_scale import SeasonalGateScale
    from tests.helpers import tiny_model
    from tsmojo import TSMojoPipeline

    with pytest.raises(SystemExit, match="no seasonal hint shortcut"):
        SeasonalGateScale(TSMojoPipeline(tiny_model(seasonal_hint=False, hint_shortcut=False)))
