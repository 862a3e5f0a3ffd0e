"""``tsmojo forecast --engine ray`` on a local 2-CPU Ray cluster equals the local engine row for row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed: pip install "tsmojo[ray]" to run the Ray engine tests')
pytest.importorskip("ray.data", reason="Ray Data is not installed")

from tsmojo.batch import ForecastJob, run_forecast  # noqa: E402
from tsmojo.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    import torch

    from tsmojo import TSMojoConfig, TSMojoModel

    root = tmp_path_factory.mktemp("ray")
    torch.manual_seed(0)
    TSMojoModel(TSMojoConfig.tiny()).save_pretrained(root / "tiny")
    rng = np.random.default_rng(3)
    parts = []
    for k, n in enumerate([30, 17, 45, 2, 26, 38, 21, 33]):
        values = 20 + rng.normal(size=n).cumsum()
        if k == 5:
            values[4] = np.inf
        parts.append(
            pd.DataFrame({"sku": f"sku{k:02d}", "day": pd.date_range("2023-01-01", periods=n, freq="D"), "qty": values})
        )
    pd.concat(parts, ignore_index=True).to_parquet(root / "input.parquet", index=False)
    return root


def test_ray_engine_equals_local_engine(cluster, data):
    common = [
        "--id-column",
        "sku",
        "--timestamp-column",
        "day",
        "--target",
        "qty",
        "-H",
        "5",
        "--batch-size",
        "3",
        "--model",
        str(data / "tiny"),
        "--device",
        "cpu",
        "--dtype",
        "float32",  # exact batch independence holds in float32 (bf16: see README, batch-size dependence)
        "--quiet",
        "--allow-errors",
        "--no-plot",
    ]
    assert main(["forecast", str(data / "input.parquet"), "-o", str(data / "local.parquet"), *common]) == 0
    assert (
        main(["forecast", str(data / "input.parquet"), "-o", str(data / "ray.parquet"), *common, "--engine", "ray"])
        == 0
    )
    local, distributed = pd.read_parquet(data / "local.parquet"), pd.read_parquet(data / "ray.parquet")
    assert list(distributed.columns) == list(local.columns)
    pd.testing.assert_frame_equal(distributed.iloc[:, :2], local.iloc[:, :2])  # same ids, timestamps, row order
    # float32 forecasts; the Ray buckets batch series differently, which moves the last bit at most
    np.testing.assert_allclose(distributed.iloc[:, 2:].to_numpy(), local.iloc[:, 2:].to_numpy(), rtol=2e-6)
    local_errors = pd.read_csv(data / "local.parquet.errors.csv")
    assert local_errors["sku"].tolist() == ["sku03", "sku05"]
    pd.testing.assert_frame_equal(pd.read_csv(data / "ray.parquet.errors.csv"), local_errors)


def forecast_job(data, input_path, output) -> ForecastJob:
    """The job of the API tests: the tiny model, 5 steps, float32 (exact batch independence)."""
    return ForecastJob(
        input=input_path,
        output=output,
        prediction_length=5,
        id_column="sku",
        timestamp_column="day",
        target=["qty"],
        model=str(data / "tiny"),
        batch_size=3,
        device="cpu",
        dtype="float32",
        quiet=True,
    )


def test_ray_engine_writes_a_parquet_dataset(cluster, data):
    from tsmojo.ray_engine import run_forecast_ray

    job = forecast_job(data, data / "input.parquet", data / "dataset")
    summary = run_forecast_ray(job)
    assert summary.num_series == 8 and summary.num_errors == 2
    assert (data / "dataset").is_dir() and list((data / "dataset").glob("*.parquet"))
    written = pd.read_parquet(data / "dataset").sort_values(["sku", "day"]).reset_index(drop=True)
    run_forecast(forecast_job(data, data / "input.parquet", data / "reference.parquet"))  # the local engine
    reference = pd.read_parquet(data / "reference.parquet")
    assert written["sku"].astype(str).tolist() == reference["sku"].tolist()
    np.testing.assert_allclose(
        written["predictions"].to_numpy(float), reference["predictions"].to_numpy(float), rtol=2e-6
    )
    assert pd.read_csv(data / "dataset.errors.csv")["sku"].tolist() == ["sku03", "sku05"]


def test_ray_engine_to_a_directory_without_failures(cluster, data, tmp_path):
    """-o DIR when no series fails (used to raise KeyError in _write_dataset)."""
    from tsmojo.ray_engine import run_forecast_ray

    good = pd.read_parquet(data / "input.parquet")
    good = good[~good["sku"].isin(["sku03", "sku05"])]
    good.to_parquet(tmp_path / "good.parquet", index=False)
    job = forecast_job(data, tmp_path / "good.parquet", tmp_path / "dataset")
    summary = run_forecast_ray(job)
    assert summary.num_series == 6 and summary.num_errors == 0 and summary.errors_path is None
    written = pd.read_parquet(tmp_path / "dataset")
    assert sorted(written["sku"].astype(str).unique()) == sorted(good["sku"].unique())
