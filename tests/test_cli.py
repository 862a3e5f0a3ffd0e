"""The ``tsmojo`` command line, driven as a subprocess (``python -m tsmojo.cli``).

A tiny random model (saved to a tmp dir, passed with --model) keeps each run to a few seconds;
one test runs the bundled default model on the README example. The tests check behaviour, never
accuracy.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tsmojo.io import Sidecar

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "datasets" / "examples"
H = 6


def run_cli(*args, cwd=None, env=None, check_rc: int | None = 0) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "tsmojo.cli", *map(str, args)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check_rc is not None:
        assert (
            result.returncode == check_rc
        ), f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A tiny model and input files: 7 good daily series of different lengths (CSV and Parquet)."""
    import torch

    from tsmojo import TSMojoConfig, TSMojoModel

    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    TSMojoModel(TSMojoConfig.tiny()).save_pretrained(root / "tiny")
    rng = np.random.default_rng(0)
    parts = []
    for k, n in enumerate([40, 23, 57, 31, 12, 44, 36]):
        parts.append(
            pd.DataFrame(
                {
                    "item": f"item_{k}",
                    "date": pd.date_range("2022-03-01", periods=n, freq="D"),
                    "sales": np.round(50 + 10 * np.sin(np.arange(n) / 3) + rng.normal(size=n).cumsum(), 3),
                }
            )
        )
    good = pd.concat(parts, ignore_index=True)
    good.to_csv(root / "good.csv", index=False, date_format="%Y-%m-%d")
    good.to_parquet(root / "good.parquet", index=False)
    return root


def base_args(work: Path, *extra):
    return [
        "--model",
        work / "tiny",
        "--id-column",
        "item",
        "--timestamp-column",
        "date",
        "--target",
        "sales",
        "-H",
        H,
        "--batch-size",
        2,
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def forecasts(work) -> dict:
    """The reference runs: CSV -> CSV and Parquet -> Parquet."""
    result = run_cli("forecast", work / "good.csv", "-o", work / "ref.csv", *base_args(work))
    run_cli("forecast", work / "good.parquet", "-o", work / "ref.parquet", *base_args(work), "--no-plot")
    return {"csv": work / "ref.csv", "parquet": work / "ref.parquet", "csv_result": result}


def test_forecast_csv_and_parquet(work, forecasts):
    from_csv = pd.read_csv(forecasts["csv"], parse_dates=["date"])
    from_parquet = pd.read_parquet(forecasts["parquet"])
    quantile_columns = [f"0.{i}" for i in range(1, 10)]
    assert list(from_csv.columns) == ["item", "date", "predictions", *quantile_columns]
    assert list(from_parquet.columns) == list(from_csv.columns)
    assert list(pd.unique(from_csv["item"])) == [f"item_{k}" for k in range(7)]  # input order
    assert from_csv.groupby("item").size().eq(H).all()
    good = pd.read_csv(work / "good.csv", parse_dates=["date"])
    last = good.groupby("item")["date"].max()
    first_future = from_csv.groupby("item")["date"].min()
    assert (first_future - last).eq(pd.Timedelta(days=1)).all()
    values = from_csv[quantile_columns].to_numpy()
    assert np.isfinite(values).all() and (np.diff(values, axis=1) >= 0).all()
    np.testing.assert_allclose(from_csv["predictions"], from_csv["0.5"])
    np.testing.assert_allclose(from_csv[quantile_columns], from_parquet[quantile_columns], rtol=1e-6)
    assert (work / "ref.png").is_file() and not (work / "ref.csv.errors.csv").exists()


def test_rerun_is_byte_identical(work, forecasts):
    run_cli("forecast", work / "good.csv", "-o", work / "again.csv", *base_args(work), "--no-plot")
    assert (work / "again.csv").read_bytes() == forecasts["csv"].read_bytes()
    run_cli("forecast", work / "good.parquet", "-o", work / "again.parquet", *base_args(work), "--no-plot")
    assert (work / "again.parquet").read_bytes() == forecasts["parquet"].read_bytes()


def test_stdout_says_where_things_went(work, forecasts):
    result = forecasts["csv_result"]
    assert str(work / "ref.csv") in result.stdout and str(work / "ref.png") in result.stdout
    assert "Forecasts for 7 of 7 series" in result.stdout
    assert result.stderr == ""  # no progress bar: stderr is not a TTY


def make_mixed(work: Path) -> tuple[Path, dict[str, str]]:
    """Good series from good.csv interleaved with one bad series of each kind; returns the
    file and {bad id: expected words of its reason}."""
    good = pd.read_csv(work / "good.csv", dtype={"sales": object})
    days = pd.date_range("2022-01-01", periods=30, freq="D").strftime("%Y-%m-%d").tolist()
    values = [str(v) for v in np.linspace(1, 30, 30)]

    def series(name, dates=days, sales=values):
        return pd.DataFrame({"item": name, "date": dates, "sales": sales})

    irregular = list(days)
    irregular[10] = "2022-01-11 07:00:00"
    bad = {
        "bad_short": (series("bad_short", days[:2], values[:2]), "too short"),
        "bad_nan": (series("bad_nan", sales=[""] * 30), "no observed value"),
        "bad_text": (series("bad_text", sales=["twelve", *values[1:]]), "not numeric"),
        "bad_dups": (series("bad_dups", dates=[*days[:5], days[4], *days[6:]]), "duplicate timestamps"),
        "bad_irregular": (series("bad_irregular", dates=irregular), "irregular timestamps"),
        "bad_inf": (series("bad_inf", sales=[*values[:3], "inf", *values[4:]]), "infinite"),
    }
    pieces = []
    good_groups = [g for _, g in good.groupby("item", sort=False)]
    for k, (frame, _) in enumerate(bad.values()):
        pieces += [good_groups[k], frame]
    pieces += good_groups[len(bad) :]
    path = work / "mixed.csv"
    pd.concat(pieces, ignore_index=True).to_csv(path, index=False)
    return path, {name: reason for name, (_, reason) in bad.items()}


def test_bad_series_land_in_errors_file(work, forecasts):
    path, expected = make_mixed(work)
    f32 = ("--dtype", "float32")  # exact batch independence holds in float32 (bf16: README, batch-size dependence)
    result = run_cli("forecast", path, "-o", work / "mixed_out.csv", *base_args(work), *f32, check_rc=1)
    assert "could not be forecast" in result.stderr and "mixed_out.csv.errors.csv" in result.stderr
    errors = pd.read_csv(work / "mixed_out.csv.errors.csv")
    assert list(errors.columns) == ["item", "reason"]
    assert errors["item"].tolist() == list(expected)  # input order
    for name, words in expected.items():
        reason = errors.loc[errors["item"] == name, "reason"].item()
        assert words in reason, (name, reason)
    out = pd.read_csv(work / "mixed_out.csv")
    all_ids = set(pd.read_csv(path)["item"])
    assert set(out["item"]) | set(errors["item"]) == all_ids and not set(out["item"]) & set(errors["item"])

    # --allow-errors: same files, exit code 0
    run_cli("forecast", path, "-o", work / "mixed_allowed.csv", *base_args(work), *f32, "--allow-errors", "--no-plot")
    assert (work / "mixed_allowed.csv").read_bytes() == (work / "mixed_out.csv").read_bytes()

    # every good series is forecast as when forecast on its own (batch size 1) or with only good
    # neighbours (the reference run). Batched float32 matmuls differ in the last bit with the batch
    # padding, hence the few-ulp tolerance; ids, timestamps and row order are exact.
    run_cli(
        "forecast", work / "good.csv", "-o", work / "alone.csv", *base_args(work), *f32, "--batch-size", 1, "--no-plot"
    )
    assert_same_forecasts(out, pd.read_csv(work / "alone.csv"))
    run_cli("forecast", work / "good.csv", "-o", work / "good32.csv", *base_args(work), *f32, "--no-plot")
    assert_same_forecasts(out, pd.read_csv(work / "good32.csv"))


def assert_same_forecasts(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a.iloc[:, :2], b.iloc[:, :2])
    np.testing.assert_allclose(a.iloc[:, 2:].to_numpy(), b.iloc[:, 2:].to_numpy(), rtol=2e-6, atol=0)


def test_killed_run_resumes_to_the_same_bytes(work):
    # 70 series in chunks of 2: the run is still going when the first part is finished
    good = pd.read_csv(work / "good.csv")
    many = pd.concat([good.assign(item=good["item"] + f"_{copy}") for copy in range(10)], ignore_index=True)
    many.to_csv(work / "many.csv", index=False)
    run_cli("forecast", work / "many.csv", "-o", work / "many_reference.csv", *base_args(work), "--no-plot")
    output = work / "resumed.csv"
    sidecar = work / "resumed.csv.tsmojo-parts"
    command = [sys.executable, "-m", "tsmojo.cli", "forecast", work / "many.csv", "-o", output, *base_args(work)]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*map(str, command), "--no-plot"], env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while not list(sidecar.glob("part-*.json")):  # a part is finished once its marker exists
            assert process.poll() is None, "the run ended before a part was finished"
            assert time.monotonic() < deadline, "no part was finished in time"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not output.exists() and (sidecar / "manifest.json").is_file()
    finished = Sidecar(sidecar).finished_chunks()
    assert finished >= 1

    changed = run_cli(
        "forecast", work / "many.csv", "-o", output, *base_args(work), "-H", H + 1, "--resume", check_rc=2
    )
    assert "cannot resume" in changed.stderr and sidecar.is_dir()

    resumed = run_cli("forecast", work / "many.csv", "-o", output, *base_args(work), "--no-plot", "--resume")
    assert f"resuming: {finished} finished chunk(s)" in resumed.stderr
    assert output.read_bytes() == (work / "many_reference.csv").read_bytes()
    assert not sidecar.exists()
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".resumed")]
    assert leftovers == []


def test_nixtla_names_quantiles_and_quiet(work):
    quiet = run_cli(
        "forecast",
        work / "good.parquet",
        "-o",
        work / "nixtla.parquet",
        *base_args(work),
        "--quiet",
        "--nixtla-names",
        "--quantiles",
        "0.01,0.25,0.5,0.75,0.99",
    )
    assert quiet.stdout == "" and quiet.stderr == ""
    assert (work / "nixtla.png").is_file()
    out = pd.read_parquet(work / "nixtla.parquet")
    assert list(out.columns) == [
        "item",
        "date",
        "tsmojo",
        "tsmojo-q-1",
        "tsmojo-q-25",
        "tsmojo-q-50",
        "tsmojo-q-75",
        "tsmojo-q-99",
    ]


def test_future_covariates_example(work):
    result = run_cli(
        "forecast",
        EXAMPLES / "energy_history.csv",
        "--future-covariates",
        EXAMPLES / "energy_future.csv",
        "--id-column",
        "region",
        "--timestamp-column",
        "time",
        "--target",
        "demand",
        "-H",
        48,
        "--model",
        work / "tiny",
        "-o",
        work / "energy.csv",
    )
    out = pd.read_csv(work / "energy.csv", parse_dates=["time"])
    future = pd.read_csv(EXAMPLES / "energy_future.csv", parse_dates=["time"])
    assert out["time"].tolist() == future["time"].tolist()
    assert str(work / "energy.png") in result.stdout


def test_bundled_model_on_the_readme_example(tmp_path):
    """The README command, as a user types it (console script, default model)."""
    shutil.copy(EXAMPLES / "monthly_sales.csv", tmp_path)
    tsmojo = shutil.which("tsmojo") or str(Path(sys.executable).parent / "tsmojo")
    result = subprocess.run(
        [tsmojo, "forecast", "monthly_sales.csv", "-o", "forecasts.csv", "-H", "18"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "forecasts.csv" in result.stdout and "forecasts.png" in result.stdout
    out = pd.read_csv(tmp_path / "forecasts.csv", parse_dates=["ds"])
    assert out.groupby("unique_id").size().eq(18).all() and out["unique_id"].nunique() == 5
    assert (tmp_path / "forecasts.png").stat().st_size > 10_000


def test_plot_writes_pngs(work, forecasts):
    result = run_cli(
        "plot",
        work / "good.csv",
        "--id-column",
        "item",
        "--timestamp-column",
        "date",
        "--target",
        "sales",
        "-f",
        forecasts["csv"],
        "--ids",
        "item_1,item_3",
        "-o",
        work / "plots",
    )
    assert sorted(p.name for p in (work / "plots").iterdir()) == ["item_1.png", "item_3.png"]
    assert "2 plot(s)" in result.stdout
    run_cli(
        "plot",
        work / "good.parquet",
        "--id-column",
        "item",
        "--timestamp-column",
        "date",
        "--target",
        "sales",
        "--model",
        work / "tiny",
        "-H",
        5,
        "--sample",
        3,
        "-o",
        work / "sampled",
    )
    pngs = list((work / "sampled").glob("*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 5_000 for p in pngs)


def test_evaluate_writes_tables(work):
    result = run_cli(
        "evaluate",
        work / "good.csv",
        "--id-column",
        "item",
        "--timestamp-column",
        "date",
        "--target",
        "sales",
        "--model",
        work / "tiny",
        "-H",
        4,
        "--windows",
        3,
        "--step",
        2,
        "--seasonality",
        7,
        "-o",
        work / "backtest.csv",
    )
    per_series = pd.read_csv(work / "backtest.csv")
    aggregate = pd.read_csv(work / "backtest_aggregate.csv")
    assert list(per_series.columns) == ["item", "windows", "MASE", "WQL", "SQL"]
    assert len(per_series) == 7 and per_series["windows"].eq(3).all()
    assert aggregate["window"].astype(str).tolist() == ["all", "0", "1", "2"]
    assert np.isfinite(aggregate[["MASE", "WQL", "SQL"]].to_numpy()).all()
    assert "MASE" in result.stdout and str(work / "backtest_aggregate.csv") in result.stdout


def test_help_lists_examples(capsys):
    from tsmojo.cli import main

    for command in ("forecast", "evaluate", "plot"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"tsmojo {command}" in text


def test_usage_errors_exit_2(work, tmp_path, capsys):
    from tsmojo.cli import main

    assert main(["forecast", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "x.csv"), "-H", "3"]) == 2
    assert "does not exist" in capsys.readouterr().err
    args = ["forecast", str(work / "good.csv"), "-o", str(tmp_path / "x.csv"), "-H", "3", "--model", str(work / "tiny")]
    assert main(args) == 2
    assert "cannot find the id/timestamp/target columns" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_pretrain_is_dispatched(monkeypatch):
    import types

    import tsmojo
    from tsmojo.cli import main

    seen = []
    fake = types.ModuleType("tsmojo.pretrain")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "tsmojo.pretrain", fake)
    monkeypatch.setattr(tsmojo, "pretrain", fake, raising=False)
    assert main(["pretrain", "--tiny", "--max-steps", "1"]) == 0
    assert seen == [["--tiny", "--max-steps", "1"]]
