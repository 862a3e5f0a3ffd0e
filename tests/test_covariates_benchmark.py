"""Fast checks of benchmarks/covariates.py: a full run on tiny synthetic task folders (random tiny
model, a two-step fine-tuning), a second run that reads the statistical rows from the cache, the
fine-tuning frames, fev's metrics on a hand-computed case, and (where the shared data is present)
the seasonal naive against the published fev-bench score."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("fev")
pytest.importorskip("statsforecast")

from benchmarks import covariates  # noqa: E402
from tsmojo import TSMojoConfig, TSMojoModel  # noqa: E402

LEVELS = [round(0.1 * i, 1) for i in range(1, 10)]


def write_task(root: Path, name: str, frame: pd.DataFrame, **meta) -> Path:
    """A task folder in the format of shared/datasets/covariates."""
    folder = root / name
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "data.parquet", index=False)
    defaults = {"seasonality": 4, "quantile_levels": LEVELS, "eval_metric": "SQL",
                "extra_metrics": ["MASE", "WAPE(eps=1)", "WQL(eps=1)"], "target": "y"}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps({**defaults, **meta}))
    return folder


def synthetic_frame(ids: list[str], length: int = 96, seed: int = 0) -> pd.DataFrame:
    """Hourly series driven by a known covariate ``load``, shared by every id (as in uci_air_quality_1H)."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2024-01-01", periods=length, freq="h")
    load = 10 + 3 * np.sin(np.arange(length) * 2 * np.pi / 4) + rng.normal(0, 0.5, length)
    parts = []
    for k, series_id in enumerate(ids):
        y = (k + 1) * load + rng.normal(0, 0.3, length)
        parts.append(pd.DataFrame({"unique_id": series_id, "ds": stamps, "y": y, "load": load}))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    directory = tmp_path / "tiny-model"
    TSMojoModel(TSMojoConfig.tiny()).eval().save_pretrained(directory)
    return directory


def test_main_on_synthetic_folders(tmp_path, tiny_model_dir, capsys, monkeypatch):
    data = tmp_path / "data"
    window = dict(prediction_length=4, windows=2, window_step=4, initial_cutoff=-8, known_covariates=["load"])
    write_task(data, "toy", synthetic_frame(["A"]), **window)
    frame = synthetic_frame(["gas1", "gas2"])
    frame.loc[frame.index[[5, 40]], ["y", "load"]] = np.nan  # missing values, as in uci_air_quality_1H
    write_task(data, "toy_mv", frame, fev_multivariate_targets=True, **window)
    published = tmp_path / "published.csv"
    pd.DataFrame(
        {"task": ["toy", "toy"], "model": ["Seasonal Naive", "Chronos-2"], "SQL": [2.0, 1.0], "MASE": [2.0, 1.0],
         "WAPE": [0.2, 0.1], "WQL": [0.2, 0.1], "uses_covariates": [False, True]}
    ).to_csv(published, index=False)  # fmt: skip
    out, cache = tmp_path / "results", tmp_path / "cache"
    models = "tsmojo,tsmojo_target_only,tsmojo_univariate,tsmojo_finetuned,seasonal_naive,mstl_arima_x"
    common = ["--data-dir", str(data), "--published", str(published), "--model", str(tiny_model_dir), "--dtype",
              "float32", "--output-dir", str(out), "--cache-dir", str(cache), "--quiet"]  # fmt: skip
    finetune = ["--finetune-steps", "2", "--finetune-batch-size", "4", "--finetune-val-windows", "2",
                "--finetune-validate-every", "1", "--finetune-patience", "-1"]  # fmt: skip
    result = covariates.main([*common, *finetune, "--models", models, "--output-name", "toy"])

    table = pd.read_csv(out / "toy.csv")
    measured = table[table["source"] == "measured"]
    assert len(measured) == 2 * 6  # every task x model
    assert set(measured["task"]) == {"toy", "toy_mv"}
    assert measured.groupby("task").size().eq(6).all()
    assert np.isfinite(measured[list(covariates.METRICS)].to_numpy()).all()
    assert (measured["seconds"] > 0).all()
    assert not measured["cached"].any()
    by_model = measured[measured["task"] == "toy"].set_index("model")
    assert by_model.loc["tiny-model", "uses_covariates"]
    assert not by_model.loc["tiny-model (target only)", "uses_covariates"]
    assert by_model.loc["Seasonal Naive", "rel_SQL"] == pytest.approx(1.0)
    # On a univariate task the target-only and univariate routes are the same forecast.
    target_only = by_model.loc["tiny-model (target only)", "SQL"]
    assert by_model.loc["tiny-model (univariate)", "SQL"] == pytest.approx(target_only)
    # The fine-tuned row: its own fit (seconds recorded), then forecasts that differ from the zero-shot ones.
    tuned = measured[measured["model"] == "tiny-model fine-tuned"]
    assert len(tuned) == 2 and tuned["uses_covariates"].all() and (tuned["fit_seconds"] > 0).all()
    assert measured.loc[measured["model"] != "tiny-model fine-tuned", "fit_seconds"].isna().all()
    assert by_model.loc["tiny-model fine-tuned", "SQL"] != pytest.approx(by_model.loc["tiny-model", "SQL"], rel=1e-9)
    rows = table[table["source"] == "published"].set_index("model")
    assert list(rows.index) == ["Seasonal Naive", "Chronos-2"]
    assert rows.loc["Chronos-2", "rel_SQL"] == pytest.approx(0.5)
    assert len(result) == len(table)
    report = (out / "toy.md").read_text()
    assert "## SQL relative to seasonal naive" in report and "Covariate effect" in report
    assert "Fine-tuning effect: fine-tuned / zero-shot" in report and "## Fine-tuning runs" in report
    assert "Cache: no row read" in report
    printed = capsys.readouterr().out
    assert "seasonal naive toy:" in printed and "README row" in printed and "fine-tuned" in printed

    # The statistical rows went to the cache, one small file per (task, model, context) ...
    files = sorted(p.name for p in cache.iterdir())
    assert files == [f"{t}__{m}_ctx1000.json" for t in ("toy", "toy_mv") for m in ("mstl_arima_x", "seasonal_naive")]

    # ... and a second run reads them instead of forecasting.
    def refuse(*args, **kwargs):
        raise AssertionError("a cached row was recomputed")

    monkeypatch.setattr(covariates, "seasonal_naive_forecast", refuse)
    monkeypatch.setattr(covariates, "stats_exogenous_forecast", refuse)
    again = covariates.main([*common, "--models", "tsmojo,seasonal_naive,mstl_arima_x", "--output-name", "again"])
    second = again[again["source"] == "measured"].set_index(["task", "model"])
    first = result[result["source"] == "measured"].set_index(["task", "model"])
    for key in [(t, m) for t in ("toy", "toy_mv") for m in ("Seasonal Naive", "MSTL + AutoARIMA-X (last 1000)")]:
        assert second.loc[key, "cached"] and second.loc[key, "SQL"] == pytest.approx(first.loc[key, "SQL"], rel=1e-12)
        assert second.loc[key, "seconds"] == pytest.approx(first.loc[key, "seconds"], abs=0.01)
    assert not second.loc[("toy", "tiny-model"), "cached"]
    assert second.loc[("toy", "tiny-model"), "SQL"] == pytest.approx(first.loc[("toy", "tiny-model"), "SQL"])
    report = (out / "again.md").read_text()
    assert "Cache: rows read from" in report and "MSTL + AutoARIMA-X (last 1000) (toy, toy_mv)" in report
    assert pd.read_csv(out / "again.csv").query("source == 'measured'")["cached"].sum() == 4
    # A cached row is only valid for the same data: a changed folder is recomputed (here: refused).
    (data / "toy" / "meta.json").write_text((data / "toy" / "meta.json").read_text().replace("SQL", "SQL "))
    with pytest.raises(AssertionError, match="recomputed"):
        covariates.main([*common, "--tasks", "toy", "--models", "seasonal_naive", "--output-name", "changed"])
    with pytest.raises(AssertionError, match="recomputed"):
        covariates.main([*common, "--tasks", "toy_mv", "--models", "seasonal_naive", "--no-cache"])


def test_finetune_frames_stop_before_the_first_window():
    """Training and validation frames come from the history alone; the validation windows are its last V * H
    points, the training frame ends before them; a validation series keeps context + H points."""
    stamps = pd.date_range("2024-01-01", periods=100, freq="h")
    past = pd.DataFrame({"unique_id": "A", "ds": stamps[:80], "y": np.arange(80.0), "load": np.arange(80.0)})
    future = pd.DataFrame({"unique_id": "A", "ds": stamps[80:84], "load": np.arange(80.0, 84.0)})
    data = covariates.WindowInput(past, future, past, future, ["y"], 4, 1, [0.5], "h")
    train, validation, known = covariates.finetune_frames(data, validation_windows=3, context_length=10)
    assert known == ["load"] and train["y"].max() == 80 - 3 * 4 - 1
    ends = validation.groupby("unique_id")["y"].agg(["min", "max", "size"])
    assert list(ends.index) == ["A__val0", "A__val1", "A__val2"]
    assert list(ends["max"]) == [71, 75, 79] and (ends["size"] == 14).all()
    assert validation["ds"].max() < future["ds"].min()
    train, validation, _ = covariates.finetune_frames(data, validation_windows=0, context_length=10)
    assert validation is None and len(train) == 80
    with pytest.raises(ValueError, match="too short"):
        covariates.finetune_frames(data, validation_windows=16, context_length=10)


def test_metrics_by_hand(tmp_path):
    """fev's SQL, MASE, WAPE and WQL through the script's scoring, on a forecast that is the truth + 1."""
    y = np.array([1, 2, 4, 3, 5, 6, 8, 7, 9, 10], dtype=float)
    frame = pd.DataFrame({"unique_id": "A", "ds": pd.date_range("2024-01-01", periods=10, freq="h"), "y": y})
    spec = covariates.CovariateTask.from_folder(
        write_task(tmp_path, "hand", frame, prediction_length=2, windows=1, initial_cutoff=-2, seasonality=2)
    )
    truth = y[-2:]
    forecast = np.repeat((truth + 1.0)[None, :, None], 1 + len(LEVELS), axis=-1)  # point and every quantile
    predictions = covariates.fev_predictions({"y": forecast}, LEVELS)
    run = covariates.ModelRun("plus_one", "plus one", False, lambda data: predictions)
    (row,) = covariates.evaluate_task(spec, [run], tmp_path / "work", verbose=False)
    # Seasonal (m=2) error of the past 1 2 4 3 5 6 8 7: |3|, |1|, |1|, |3|, |3|, |1| -> mean 2.
    # Absolute error 1 at both steps: MASE 1/2. Quantile loss 2 * (1 - q) per point, mean over q = 1: SQL 1/2.
    assert row["MASE"] == pytest.approx(0.5)
    assert row["SQL"] == pytest.approx(0.5)
    # WAPE, WQL (epsilon 1): mean error 1 over the mean |y| of the window, (9 + 10) / 2.
    assert row["WAPE"] == pytest.approx(1 / 9.5)
    assert row["WQL"] == pytest.approx(1 / 9.5)


def test_parse_metric():
    assert covariates.parse_metric("MASE") == "MASE"
    assert covariates.parse_metric("WQL(eps=1)") == {"name": "WQL", "epsilon": 1.0}
    with pytest.raises(ValueError):
        covariates.parse_metric("WQL[1]")


def test_seasonal_naive_reproduces_published_epf_pjm(tmp_path):
    data_dir, published = covariates.default_data_dir(), covariates.default_published_path()
    if not (data_dir / "epf_pjm" / "meta.json").is_file() or not published.is_file():
        pytest.skip(f"shared covariate data not found ({data_dir}, {published})")
    spec = covariates.CovariateTask.from_folder(data_dir / "epf_pjm")
    run = covariates.ModelRun("seasonal_naive", covariates.SEASONAL_NAIVE, False, covariates.seasonal_naive_forecast)
    (row,) = covariates.evaluate_task(spec, [run], tmp_path, verbose=False)
    anchor = covariates.published_rows(published, ["epf_pjm"]).set_index("model").loc[covariates.SEASONAL_NAIVE]
    for metric in covariates.METRICS:
        assert row[metric] == pytest.approx(anchor[metric], abs=covariates.SEASONAL_NAIVE_TOLERANCE), metric
