"""tsmojo.io: reading inputs in chunks of whole series, id scans, contiguity."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import long_frame
from tsmojo.io import InputError, iter_frames, iter_series_chunks, scan_ids


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
