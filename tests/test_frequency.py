"""tsmojo.frequency: frequency aliases in any pandas spelling, future timestamps, period aliases."""

from __future__ import annotations

import pandas as pd
import pytest

from tsmojo.frequency import future_timestamps, normalize_freq, period_freq


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("H", "h"), ("h", "h"), ("T", "min"), ("15T", "15min"), ("min", "min"), ("MS", "MS"), ("W-SUN", "W-SUN"),
     ("W", "W-SUN"), ("B", "B"), ("QS-DEC", "QS-DEC"), ("M", "ME"), ("A-DEC", "YE-DEC"), ("D", "D")],
)  # fmt: skip
def test_normalize_freq_accepts_old_and_new_aliases(alias, expected):
    assert normalize_freq(alias).freqstr == expected


@pytest.mark.parametrize(
    ("freq", "last", "expected"),
    [
        ("MS", "2020-11-01", ["2020-12-01", "2021-01-01", "2021-02-01"]),
        ("W-SUN", "2021-01-03", ["2021-01-10", "2021-01-17", "2021-01-24"]),
        ("B", "2021-01-08", ["2021-01-11", "2021-01-12", "2021-01-13"]),  # Friday -> Monday
        ("QS-DEC", "2020-12-01", ["2021-03-01", "2021-06-01", "2021-09-01"]),
        ("H", "2021-01-01 22:00", ["2021-01-01 23:00", "2021-01-02 00:00", "2021-01-02 01:00"]),
    ],
)
def test_future_timestamps(freq, last, expected):
    got = future_timestamps(pd.Timestamp(last), freq, 3)
    assert list(got) == [pd.Timestamp(x) for x in expected]


def test_future_timestamps_integer_index():
    assert list(future_timestamps(9, 1, 3)) == [10, 11, 12]


def test_period_freq_for_start_anchored_offsets():
    assert period_freq("MS") == "M"
    assert period_freq("QS-DEC") == "Q-NOV"
    assert period_freq("YS") == "Y-DEC"
    assert period_freq("W-SUN") == "W-SUN"
    assert period_freq("H") == "h"
    stamp = pd.Timestamp("2020-12-01")
    assert pd.Period(stamp, freq=period_freq("QS-DEC")).to_timestamp() == stamp
