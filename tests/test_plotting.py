"""Plotting helpers (tsmojo/plotting.py) on their own, beside the CLI's `plot` tests."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tsmojo.plotting import default_history_points, quantile_columns, safe_filename, save_fan_charts


def test_quantile_columns_read_tsmojo_and_nixtla_names():
    tsmojo = pd.DataFrame(columns=["unique_id", "ds", "predictions", "0.1", "0.5", "0.9"])
    assert quantile_columns(tsmojo) == ({0.1: "0.1", 0.5: "0.5", 0.9: "0.9"}, "predictions")
    nixtla = pd.DataFrame(columns=["unique_id", "ds", "tsmojo", "tsmojo-q-10", "tsmojo-q-90"])
    levels, median = quantile_columns(nixtla)
    assert median == "tsmojo" and levels == {0.1: "tsmojo-q-10", 0.9: "tsmojo-q-90"}
    only_levels = pd.DataFrame(columns=["0.25", "0.5", "0.75"])
    assert quantile_columns(only_levels)[1] == "0.5"  # the median level stands in for the point forecast


def test_safe_filenames_and_history_points():
    assert safe_filename("a/b c") == "a_b_c" and safe_filename("..") == "series"
    assert default_history_points(6) == 60 and default_history_points(48) == 240


def test_save_fan_charts_writes_one_png_per_id_with_unique_names(tmp_path):
    history = pd.DataFrame(
        {"id": ["a/1"] * 40 + ["a 1"] * 40, "ts": list(pd.date_range("2024-01-01", periods=40, freq="D")) * 2,
         "y": np.r_[np.arange(40.0), np.arange(40.0) * 2]}
    )  # fmt: skip
    future = pd.date_range("2024-02-10", periods=5, freq="D")
    forecasts = pd.DataFrame(
        {"id": ["a/1"] * 5 + ["a 1"] * 5, "ts": list(future) * 2, "predictions": np.arange(10.0),
         "0.1": np.arange(10.0) - 1, "0.9": np.arange(10.0) + 1}
    )  # fmt: skip
    paths = save_fan_charts(history, forecasts, tmp_path / "charts", "id", "ts", "y", ["a/1", "a 1"])
    assert [p.name for p in paths] == ["a_1.png", "a_1_2.png"]  # two ids that sanitise alike stay apart
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
