"""The streaming engine in-process, with a stub forecaster (no model): chunking, contiguity,
sidecar/resume bookkeeping, atomic output, errors file."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from tsmojo.batch import (
    ForecastJob,
    InputError,
    Progress,
    Sidecar,
    iter_frames,
    iter_series_chunks,
    nixtla_names,
    run_forecast,
    scan_ids,
)
from tsmojo.frames import SeriesError


def long_frame(lengths: dict, start="2021-01-01", freq="D") -> pd.DataFrame:
    parts = []
    for k, (series_id, n) in enumerate(lengths.items()):
        parts.append(
            pd.DataFrame(
                {
                    "unique_id": series_id,
                    "ds": pd.date_range(start, periods=n, freq=freq),
                    "y": np.arange(n, dtype=float) + 10 * k,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


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


def frames_of(df: pd.DataFrame, rows: int):
    return (df.iloc[i : i + rows] for i in range(0, len(df), rows))


@pytest.mark.parametrize("rows", [1, 3, 7, 1000])
@pytest.mark.parametrize("per_chunk", [1, 2, 5])
def test_chunks_hold_whole_series_across_read_boundaries(rows, per_chunk):
    df = long_frame({f"s{i}": n for i, n in enumerate([5, 1, 8, 3, 3, 9, 2])})
    chunks = list(iter_series_chunks(frames_of(df, rows), "unique_id", per_chunk))
    assert all(c["unique_id"].nunique() == per_chunk for c in chunks[:-1])
    assert 1 <= chunks[-1]["unique_id"].nunique() <= per_chunk
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), df)


def test_non_contiguous_ids_are_detected():
    df = long_frame({"a": 3, "b": 3})
    shuffled = pd.concat([df.iloc[:2], df.iloc[3:], df.iloc[2:3]], ignore_index=True)
    with pytest.raises(InputError, match="not grouped by 'unique_id'.*'a'"):
        list(iter_series_chunks(frames_of(shuffled, 2), "unique_id", 10))


def test_scan_ids(tmp_path):
    df = long_frame({"a": 3, "b": 4, "c": 1})
    df.to_parquet(tmp_path / "in.parquet")
    scan = scan_ids(tmp_path / "in.parquet", "unique_id")
    assert (scan.num_series, scan.num_rows, scan.contiguous) == (3, 8, True)
    pd.concat([df, df.iloc[:1]]).to_csv(tmp_path / "bad.csv", index=False)
    scan = scan_ids(tmp_path / "bad.csv", "unique_id")
    assert not scan.contiguous and scan.repeated_id == "a" and scan.num_rows == 9


def test_csv_ids_stay_strings(tmp_path):
    pd.DataFrame({"unique_id": ["007", "007", "010"], "ds": ["2020-01-01"] * 3, "y": [1, 2, 3]}).to_csv(
        tmp_path / "x.csv", index=False
    )
    frame = next(iter_frames(tmp_path / "x.csv", id_column="unique_id"))
    assert frame["unique_id"].tolist() == ["007", "007", "010"]


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
