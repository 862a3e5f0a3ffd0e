"""The streaming engine in-process, with a stub forecaster (no model): sidecar/resume
bookkeeping, atomic output, errors file, progress."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from tests.helpers import long_frame
from tsmojo.batch import ForecastJob, Progress, nixtla_names, run_forecast
from tsmojo.frames import SeriesError
from tsmojo.io import InputError, Sidecar


def stub_forecaster(horizon: int = 3, fail: frozenset = frozenset()):
    """Forecast = last value for every quantile; ids in ``fail`` are reported as errors."""

    def forecast(chunk: pd.DataFrame, future):
        rows, errors = [], []
        for series_id, part in chunk.groupby("unique_id", sort=False):
            if series_id in fail:
                errors.append(SeriesError(series_id, "stub failure"))
                continue
            stamps = pd.date_range(pd.Timestamp(part["ds"].iloc[-1]), periods=horizon + 1, freq="D")[1:]
            last = float(part["y"].iloc[-1])
            frame = pd.DataFrame({"unique_id": series_id, "ds": stamps, "predictions": last})
            for q in (0.1, 0.5, 0.9):
                frame[f"{q:g}"] = last + q
            rows.append(frame)
        forecasts = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
        # the engine must restore input order whatever order the forecaster returns
        return forecasts.iloc[::-1].reset_index(drop=True), errors

    return forecast


def test_progress_is_silent_without_tty():
    stream = io.StringIO()
    progress = Progress(10, stream=stream)
    progress.update(5)
    progress.close()
    assert stream.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    progress = Progress(10, stream=tty)
    progress.update(10)
    progress.close()
    assert "10/10 series" in tty.getvalue() and "series/s" in tty.getvalue()
    quiet = Tty()
    Progress(10, enabled=False, stream=quiet).close()
    assert quiet.getvalue() == ""


def test_nixtla_names():
    assert nixtla_names([0.1, 0.5, 0.025]) == {
        "predictions": "tsmojo",
        "0.1": "tsmojo-q-10",
        "0.5": "tsmojo-q-50",
        "0.025": "tsmojo-q-2.5",
    }


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_run_forecast_keeps_every_series(tmp_path, suffix):
    df = long_frame({f"s{i}": 4 + i for i in range(7)})
    df.to_parquet(tmp_path / "in.parquet")
    output = tmp_path / f"out.{suffix}"
    job = ForecastJob(
        input=tmp_path / "in.parquet",
        output=output,
        prediction_length=3,
        batch_size=2,
        quantiles=(0.1, 0.5, 0.9),
        quiet=True,
    )
    summary = run_forecast(job, forecaster=stub_forecaster(fail=frozenset({"s1", "s4"})))
    assert (summary.num_series, summary.num_forecast, summary.num_errors) == (7, 5, 2)
    out = pd.read_parquet(output) if suffix == "parquet" else pd.read_csv(output)
    assert list(out.columns) == ["unique_id", "ds", "predictions", "0.1", "0.5", "0.9"]
    assert list(pd.unique(out["unique_id"])) == ["s0", "s2", "s3", "s5", "s6"]  # input order
    assert (out.groupby("unique_id")["ds"].apply(lambda s: pd.to_datetime(s).is_monotonic_increasing)).all()
    errors = pd.read_csv(job.errors_path)
    assert errors.to_dict("list") == {"unique_id": ["s1", "s4"], "reason": ["stub failure"] * 2}
    assert not job.sidecar.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.parquet", output.name, job.errors_path.name])

    # a clean rerun removes the stale errors file
    run_forecast(job, forecaster=stub_forecaster())
    assert not job.errors_path.exists()


def test_resume_skips_finished_chunks(tmp_path):
    df = long_frame({f"s{i}": 5 for i in range(6)})
    df.to_csv(tmp_path / "in.csv", index=False)
    job = ForecastJob(
        input=tmp_path / "in.csv",
        output=tmp_path / "out.csv",
        prediction_length=3,
        batch_size=2,
        quantiles=(0.1, 0.5, 0.9),
        quiet=True,
    )
    run_forecast(job, forecaster=stub_forecaster())
    reference = (tmp_path / "out.csv").read_bytes()
    (tmp_path / "out.csv").unlink()

    # simulate a run interrupted after its first chunk: the sidecar holds part 0 only
    calls = []

    def crashing(chunk, future):
        calls.append(list(pd.unique(chunk["unique_id"])))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return stub_forecaster()(chunk, future)

    with pytest.raises(KeyboardInterrupt):
        run_forecast(job, forecaster=crashing)
    assert Sidecar(job.sidecar).finished_chunks() == 1
    assert not job.output.exists()

    calls.clear()
    job.resume = True
    summary = run_forecast(job, forecaster=stub_forecaster_recording(calls))
    assert calls == [["s2", "s3"], ["s4", "s5"]]  # chunk 0 was not recomputed
    assert summary.resumed_chunks == 1
    assert (tmp_path / "out.csv").read_bytes() == reference


def stub_forecaster_recording(calls):
    inner = stub_forecaster()

    def forecast(chunk, future):
        calls.append(list(pd.unique(chunk["unique_id"])))
        return inner(chunk, future)

    return forecast


def test_resume_refuses_changed_flags(tmp_path):
    df = long_frame({"a": 5, "b": 5})
    df.to_csv(tmp_path / "in.csv", index=False)
    job = ForecastJob(
        input=tmp_path / "in.csv", output=tmp_path / "out.csv", prediction_length=3, batch_size=1, quiet=True
    )
    sidecar = Sidecar(job.sidecar)
    sidecar.directory.mkdir()
    (sidecar.manifest_path).write_text(json.dumps({"version": 1, "options": {"prediction_length": 99}}))
    job.resume = True
    with pytest.raises(InputError, match="cannot resume"):
        run_forecast(job, forecaster=stub_forecaster())


def test_non_contiguous_file_is_sorted_in_memory(tmp_path):
    df = long_frame({"a": 4, "b": 4, "c": 4})
    shuffled = df.iloc[[0, 4, 1, 8, 5, 2, 9, 6, 3, 10, 7, 11]]
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    df.to_csv(tmp_path / "sorted.csv", index=False)
    messages = []
    for name in ("shuffled", "sorted"):
        job = ForecastJob(
            input=tmp_path / f"{name}.csv",
            output=tmp_path / f"{name}_out.csv",
            prediction_length=3,
            batch_size=2,
            quantiles=(0.1, 0.5, 0.9),
            quiet=True,
        )
        run_forecast(job, forecaster=stub_forecaster(), log=messages.append)
    assert (tmp_path / "shuffled_out.csv").read_bytes() == (tmp_path / "sorted_out.csv").read_bytes()
    assert len(messages) == 1 and "not contiguous" in messages[0]
