"""tsmojo.frames: the series checks shared by predict_df, the GluonTS helpers and the CLI."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from tsmojo.frames import (
    FREQ_ATTR,
    SeriesError,
    raise_for_errors,
    resolve_columns,
    series_starts,
    validate_future_frame,
    validate_long_frame,
)


def _series(series_id, values, start="2021-01-01", freq="D"):
    return pd.DataFrame(
        {"unique_id": series_id, "ds": pd.date_range(start, periods=len(values), freq=freq), "y": values}
    )


def _frame():
    good = _series("good", np.arange(10.0))
    nan_only = _series("all_nan", [np.nan] * 5)
    inf = _series("has_inf", [1.0, np.inf, 2.0, 3.0])
    duplicated = _series("dup", [1.0, 2.0, 3.0, 4.0])
    duplicated.loc[2, "ds"] = duplicated.loc[1, "ds"]
    gappy = _series("gap", np.arange(6.0)).drop(index=3)
    text = _series("text", np.arange(4.0)).astype({"y": object})
    text.loc[2, "y"] = "n/a"
    off_grid = _series("off_grid", np.arange(5.0))
    off_grid.loc[4, "ds"] = off_grid.loc[3, "ds"] + pd.Timedelta(hours=5)
    leading = _series("leading_nan", [np.nan, np.nan, 3.0, 3.0, 3.0])
    return pd.concat([good, nan_only, inf, duplicated, gappy, text, off_grid, leading], ignore_index=True)


def test_collect_mode_reports_each_bad_series_and_keeps_good_ones():
    clean, errors = validate_long_frame(_frame(), "unique_id", "ds", ["y"])
    assert all(isinstance(e, SeriesError) for e in errors)
    reasons = {e.series_id: e.reason for e in errors}
    assert list(reasons) == ["all_nan", "has_inf", "dup", "gap", "text", "off_grid"]  # order of appearance
    assert "no observed value" in reasons["all_nan"]
    assert "infinite" in reasons["has_inf"]
    assert "duplicate timestamps" in reasons["dup"]
    assert "missing" in reasons["gap"] and "fill_gaps" in reasons["gap"]
    assert "not numeric" in reasons["text"]
    assert "off the" in reasons["off_grid"]
    assert set(clean["unique_id"]) == {"good", "leading_nan"}  # leading NaNs and constant values are fine
    assert clean["y"].dtype == float
    assert clean.attrs[FREQ_ATTR]["good"] == pd.offsets.Day()


def test_fill_gaps_inserts_missing_timestamps_as_nan():
    clean, errors = validate_long_frame(_frame(), "unique_id", "ds", ["y"], fill_gaps=True)
    assert "gap" not in {e.series_id for e in errors}
    gap = clean[clean["unique_id"] == "gap"]
    assert len(gap) == 6 and np.isnan(gap["y"].iloc[3])
    assert (gap["ds"].diff().dropna() == pd.Timedelta(days=1)).all()


def test_raise_mode_names_every_bad_series():
    _, errors = validate_long_frame(_frame(), "unique_id", "ds", ["y"])
    with pytest.raises(ValueError, match="6 invalid series") as info:
        raise_for_errors(errors)
    for name in ("all_nan", "has_inf", "dup", "gap", "text", "off_grid"):
        assert repr(name) in str(info.value)
    raise_for_errors([])  # no error, no exception


def test_integer_index_and_short_series_borrow_frequency():
    df = pd.DataFrame({"id": ["a"] * 5 + ["b"] * 2, "t": [0, 2, 4, 6, 8, 10, 12], "v": np.arange(7.0)})
    clean, errors = validate_long_frame(df, "id", "t", ["v"])
    assert errors == []
    assert clean.attrs[FREQ_ATTR] == {"a": 2, "b": 2}
    df.loc[2, "t"] = 5
    _, errors = validate_long_frame(df, "id", "t", ["v"], freq=2)
    assert [e.series_id for e in errors] == ["a"]


def test_missing_column_is_a_frame_error():
    with pytest.raises(ValueError, match="not found"):
        validate_long_frame(_frame(), "unique_id", "ds", ["target"])


def test_resolve_columns_detects_conventions():
    assert resolve_columns(pd.DataFrame(columns=["unique_id", "ds", "y", "x"])) == ("unique_id", "ds", ["y"])
    assert resolve_columns(pd.DataFrame(columns=["item_id", "timestamp", "target"])) == (
        "item_id",
        "timestamp",
        ["target"],
    )
    assert resolve_columns(pd.DataFrame(columns=["id", "timestamp", "a", "b"]), target=["a", "b"]) == (
        "id",
        "timestamp",
        ["a", "b"],
    )
    with pytest.raises(ValueError, match="cannot find"):
        resolve_columns(pd.DataFrame(columns=["key", "when", "value"]))


def test_future_frame_checks():
    history = pd.concat([_series("a", np.arange(5.0)), _series("b", np.arange(5.0))], ignore_index=True)
    history["x"] = 1.0
    clean, _ = validate_long_frame(history, "unique_id", "ds", ["y"])
    future = pd.DataFrame(
        {"unique_id": ["a"] * 3 + ["b"] * 3, "ds": list(pd.date_range("2021-01-06", periods=3)) * 2, "x": 0.0}
    )
    _, errors = validate_future_frame(future, clean, "unique_id", "ds", 3, ["x"])
    assert errors == []
    _, errors = validate_future_frame(future.iloc[:5], clean, "unique_id", "ds", 3, ["x"])
    assert errors[0].series_id == "b" and "2 rows" in errors[0].reason
    _, errors = validate_future_frame(future.iloc[:3], clean, "unique_id", "ds", 3, ["x"])
    assert errors[0].series_id == "b" and "missing" in errors[0].reason
    shifted = future.assign(ds=future["ds"] + pd.Timedelta(days=1))
    _, errors = validate_future_frame(shifted, clean, "unique_id", "ds", 3, ["x"])
    assert {e.series_id for e in errors} == {"a", "b"} and "do not follow" in errors[0].reason
    with pytest.raises(ValueError, match="not in df"):
        validate_future_frame(future.assign(z=1.0), clean, "unique_id", "ds", 3, ["x"])


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_time_zone_aware_timestamps(tz):
    """Hourly data over a DST change: regular in UTC, so no gap; future_df checked in the same zone."""
    history = _series("a", np.arange(48.0), start=pd.Timestamp("2024-03-30", tz=tz), freq="h")
    history["x"] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy has no time zones: no lossy datetime64 conversion
        clean, errors = validate_long_frame(history, "unique_id", "ds", ["y"])
    assert errors == [] and clean.attrs[FREQ_ATTR]["a"] == pd.offsets.Hour()
    stamps = pd.date_range(history["ds"].iloc[-1], periods=4, freq="h")[1:]
    assert str(stamps.tz) == tz
    future = pd.DataFrame({"unique_id": "a", "ds": stamps, "x": 0.0})
    _, errors = validate_future_frame(future, clean, "unique_id", "ds", 3, ["x"])
    assert errors == []
    _, errors = validate_future_frame(future.assign(ds=stamps + pd.Timedelta(hours=1)), clean, "unique_id", "ds", 3)
    assert [e.series_id for e in errors] == ["a"] and "do not follow" in errors[0].reason


def test_calendar_frequencies_are_inferred_and_checked_exactly():
    """Months, quarters and business days have steps of varying length: checked by one shift
    of the whole column, with the same verdicts as the per-series grid check."""
    duplicated = _series("month_dup", np.arange(6.0), freq="MS")
    duplicated.loc[3, "ds"] = duplicated.loc[2, "ds"]
    # 2020-01-15 + MonthEnd is 2020-01-31: every step looks fine, but the first point is off the grid.
    off_anchor = pd.concat(
        [_series("month_off", [0.0], start="2020-01-15"), _series("month_off", np.arange(6.0), "2020-01-31", "ME")]
    )
    frame = pd.concat(
        [
            _series("month_start", np.arange(12.0), start="2020-01-01", freq="MS"),
            _series("month_end", np.arange(12.0), start="2020-01-31", freq="ME"),
            _series("quarter", np.arange(8.0), start="2020-03-01", freq="QS-DEC"),
            _series("business", np.arange(15.0), start="2021-01-04", freq="B"),
            _series("month_gap", np.arange(12.0), start="2020-01-01", freq="MS").drop(index=5),
            duplicated,
        ],
        ignore_index=True,
    )
    clean, errors = validate_long_frame(frame, "unique_id", "ds", ["y"])
    freqs = clean.attrs[FREQ_ATTR]
    assert freqs["month_start"] == pd.offsets.MonthBegin()
    assert freqs["month_end"] == pd.offsets.MonthEnd()
    assert freqs["quarter"] == pd.offsets.QuarterBegin(startingMonth=12)
    assert freqs["business"] == pd.offsets.BusinessDay()
    reasons = {e.series_id: e.reason for e in errors}
    assert list(reasons) == ["month_gap", "month_dup"]
    assert "missing" in reasons["month_gap"] and "duplicate" in reasons["month_dup"]

    monthly = pd.concat([_series("ok", np.arange(6.0), start="2020-01-31", freq="ME"), off_anchor])
    _, errors = validate_long_frame(monthly, "unique_id", "ds", ["y"], freq="ME")
    assert [e.series_id for e in errors] == ["month_off"] and "off the" in errors[0].reason

    weekly = pd.concat(
        [
            _series("sundays", np.arange(6.0), start="2024-01-07", freq="W-SUN"),
            _series("mondays", np.arange(6.0), start="2024-01-08", freq="W-MON"),
        ]
    )
    clean, errors = validate_long_frame(weekly, "unique_id", "ds", ["y"], freq="W-SUN")
    assert [e.series_id for e in errors] == ["mondays"]
    assert clean.attrs[FREQ_ATTR]["sundays"] == pd.offsets.Week(weekday=6)


def test_calendar_check_prefers_plain_offsets_survives_dst_and_infers_little(monkeypatch):
    import tsmojo.frames as frames
    import tsmojo.frequency as frequency

    def series(series_id, stamps):
        stamps = pd.DatetimeIndex(stamps)
        return pd.DataFrame({"unique_id": series_id, "ds": stamps, "y": np.arange(len(stamps), dtype=float)})

    # Three month starts on weekdays fit business-month-start too; alone they infer as MS.
    business = series("business", pd.date_range("2020-01-01", periods=12, freq="BMS"))
    short = series("short", ["2020-04-01", "2020-05-01", "2020-06-01"])
    clean, _ = validate_long_frame(pd.concat([business, short]), "unique_id", "ds", ["y"])
    assert clean.attrs[FREQ_ATTR] == {"business": pd.offsets.BusinessMonthBegin(), "short": pd.offsets.MonthBegin()}

    # Shifting the whole column lands on an ambiguous local time (2021-10-31 02:30, Berlin).
    late = series("late", pd.date_range("2021-09-26 02:30", periods=5, freq="W-SUN", tz="Europe/Berlin"))
    early = series("early", pd.date_range("2021-01-03 02:30", periods=5, freq="W-SUN", tz="Europe/Berlin"))
    for freq in (None, "W-SUN"):
        _, errors = validate_long_frame(pd.concat([late, early]), "unique_id", "ds", ["y"], freq=freq)
        assert errors == []

    # One gappy series among many monthly ones: a handful of inferences, not one per series.
    calls = []
    counting = frequency.infer_freq
    for module in (frames, frequency):  # inferred per series, and over the whole frame
        monkeypatch.setattr(module, "infer_freq", lambda stamps: calls.append(1) or counting(stamps))
    months = [series(f"m{i}", pd.date_range("2019-01-31", periods=24, freq="ME")) for i in range(200)]
    gappy = series("gappy", pd.date_range("2019-01-31", periods=24, freq="ME").delete(7))
    _, errors = validate_long_frame(pd.concat([gappy, *months]), "unique_id", "ds", ["y"])
    assert [e.series_id for e in errors] == ["gappy"] and len(calls) <= 5


def test_series_starts():
    assert series_starts(np.array(["a", "a", "b", "c", "c", "c"])).tolist() == [0, 2, 3]
    assert series_starts(np.array([7])).tolist() == [0]
    assert series_starts(np.array([], dtype=object)).tolist() == []
