"""Long-format frames: the single place where tsmojo validates series and turns frames into tasks.

Two ways to validate:

* **collect** (batch jobs, the CLI): :func:`validate_long_frame` returns the clean frame and a
  list of :class:`SeriesError`; bad series are dropped from the frame, good ones go on.
* **raise** (interactive use, :meth:`tsmojo.TSMojoPipeline.predict_df`): call
  :func:`raise_for_errors` on that list; it raises one ``ValueError`` naming every bad series.

:func:`prepare_frame` validates a frame (raise mode) and turns it into a :class:`PreparedFrame`:
one task per series plus what is needed to name and time-stamp the forecasts
(:func:`forecasts_to_frame`). A frame validated already (collect mode) is turned into one by
:func:`tasks_from_clean_frame`, without a second validation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from tsmojo.frequency import (
    calendar_frequencies,
    freq_str,
    future_timestamps,
    infer_freq,
    is_integer_index,
    normalize_freq,
    smallest_step,
    timestamp_grid,
)
from tsmojo.tasks import Task, parse_task

__all__ = [
    "FLOAT32_MAX",
    "FREQ_ATTR",
    "PreparedFrame",
    "SeriesError",
    "forecasts_to_frame",
    "parse_timestamps",
    "prepare_frame",
    "raise_for_errors",
    "resolve_columns",
    "series_starts",
    "tasks_from_clean_frame",
    "validate_future_frame",
    "validate_long_frame",
]

#: key of ``DataFrame.attrs`` where :func:`validate_long_frame` stores ``{series_id: freq}``;
#: the value is a pandas ``DateOffset`` for datetime timestamps and an ``int`` step for integer ones.
FREQ_ATTR = "tsmojo_freq"

#: Largest magnitude a forecast can have: outputs are float32. Larger target values are reported.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# A UTC offset (or Z) at the end of a text timestamp: "2020-01-01T00:00:00+01:00", "...Z".
_OFFSET_PATTERN = r"(?:[zZ]|[+-]\d{2}:?\d{2})$"

# Column names tried, in order, when the caller does not name them.
_COLUMN_CANDIDATES = (("unique_id", "ds", "y"), ("item_id", "timestamp", "target"), ("id", "timestamp", "target"))


class SeriesError(NamedTuple):
    """One problem with one series: ``series_id`` (the value of the id column) and a readable ``reason``."""

    series_id: object
    reason: str


class _SharedFrequencies(dict):
    """``{series_id: freq}`` kept in ``DataFrame.attrs``. pandas deep-copies ``attrs`` on every
    operation, which made each operation O(number of series); this read-only map is shared instead."""

    def __deepcopy__(self, memo: dict) -> _SharedFrequencies:
        return self


def series_starts(ids: np.ndarray) -> np.ndarray:
    """Row positions where a new series begins in a column of ids whose series are contiguous."""
    ids = np.asarray(ids)
    if len(ids) == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])


def resolve_columns(
    df: pd.DataFrame,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: str | Sequence[str] | None = None,
) -> tuple[str, str, list[str]]:
    """Fill in the id, timestamp and target column names that were not given.

    Tries ``unique_id/ds/y``, then ``item_id/timestamp/target``, then ``id/timestamp/target``.
    """
    columns = set(df.columns)
    for ids, ts, tgt in _COLUMN_CANDIDATES:
        chosen = (id_column or ids, timestamp_column or ts, target if target is not None else tgt)
        if chosen[0] in columns and chosen[1] in columns and (target is not None or tgt in columns):
            id_column, timestamp_column, target = chosen
            break
    else:  # no convention fits whole: take the one whose id and timestamp columns are there
        for ids, ts, tgt in _COLUMN_CANDIDATES:
            if (id_column or ids) in columns and (timestamp_column or ts) in columns:
                id_column, timestamp_column = id_column or ids, timestamp_column or ts
                target = target if target is not None else tgt
                break
    targets = [target] if isinstance(target, str) else list(target or [])
    roles: list[tuple[str, str | None]] = [("id", id_column), ("timestamp", timestamp_column)]
    roles += [("target", t) for t in targets] if targets else [("target", None)]
    missing = [
        f"{role} column {name!r}" if name is not None else f"{role} column"
        for role, name in roles
        if name is None or name not in columns
    ]
    if missing or id_column is None or timestamp_column is None:
        raise ValueError(
            f"cannot find the id/timestamp/target columns: no {', '.join(missing)} (the frame has columns "
            f"{list(df.columns)}): pass id_column=, "
            "timestamp_column= and target=, or name them unique_id/ds/y or item_id/timestamp/target"
        )
    if len(set(targets)) != len(targets) or {id_column, timestamp_column} & set(targets):
        raise ValueError(f"target columns {targets} must be distinct from each other and from id/timestamp")
    return id_column, timestamp_column, targets


def raise_for_errors(errors: Sequence[SeriesError], what: str = "input") -> None:
    """Raise one ``ValueError`` listing every bad series (the first ten spelled out); no-op if none."""
    if not errors:
        return
    lines = [f"series {e.series_id!r}: {e.reason}" for e in errors[:10]]
    more = f"\n... and {len(errors) - 10} more" if len(errors) > 10 else ""
    raise ValueError(f"{len(errors)} invalid series in the {what}:\n" + "\n".join(lines) + more)


# -- the long-frame check ------------------------------------------------------------------------


def validate_long_frame(
    df: pd.DataFrame,
    id_column: str,
    timestamp_column: str,
    target_columns: Sequence[str],
    freq: str | pd.DateOffset | int | None = None,
    fill_gaps: bool = False,
) -> tuple[pd.DataFrame, list[SeriesError]]:
    """Check every series of a long-format frame; return ``(clean frame, errors)``.

    Args:
        df: one row per (series, timestamp); other columns (covariates) are kept as they are.
        id_column, timestamp_column: names of the series id and time columns. Timestamps are
            datetimes (or strings pandas can parse) or integers (an integer time index).
        target_columns: the columns to forecast; converted to float in the clean frame.
        freq: pandas alias (any spelling: ``H``/``h``, ``T``/``min``, ``M``/``ME``, ``MS``, ``W-SUN``,
            ``B``, ``QS-DEC``...) or integer step. ``None``: inferred per series; a series too
            short or too gappy to tell takes the most common frequency of the other series.
        fill_gaps: insert missing timestamps (as NaN rows) instead of reporting them.

    A series is reported (and dropped from the clean frame) when its target is not numeric,
    holds +-inf or values beyond the float32 range (3.4e38), has no observed value, has missing
    or duplicate timestamps, has timestamps off its frequency grid, or has gaps while
    ``fill_gaps`` is False. Constant series and NaNs (leading, trailing or inside) are fine.

    Returns:
        The clean frame sorted by id then time, with a fresh ``RangeIndex``; ``clean.attrs[FREQ_ATTR]``
        maps each kept id to its frequency (``DateOffset`` or ``int`` step, ``None`` for a
        single-point series without ``freq``). pandas deep-copies ``attrs`` on every operation, so
        with many series take the dict out (``freqs = clean.attrs.pop(FREQ_ATTR)``) before further
        work. And the list of :class:`SeriesError`, in order of first appearance of the series in ``df``.

    Raises:
        ValueError: only for frame-wide problems (a named column is missing, an unknown ``freq``).
    """
    target_columns = list(target_columns)
    missing = [c for c in (id_column, timestamp_column, *target_columns) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not found in the frame (have {list(df.columns)})")
    offset = normalize_freq(freq)
    problems = _Problems()
    frame = _drop_rows_without_id(df.copy(), id_column, problems)
    frame, integer_index = _parse_timestamp_column(frame, id_column, timestamp_column, offset, problems)
    frame = _parse_target_columns(frame, id_column, target_columns, problems)
    frame = frame.sort_values([id_column, timestamp_column], kind="stable").reset_index(drop=True)
    order = list(pd.unique(df[id_column].dropna()))
    table = _SeriesTable.of(frame, id_column, timestamp_column, target_columns, integer_index)
    _check_target_values(frame, timestamp_column, target_columns, table, order, problems)
    freqs, regular = _series_frequencies(frame, timestamp_column, table, order, offset, integer_index, problems)
    filled = _check_grids(frame, id_column, timestamp_column, table, order, freqs, regular, fill_gaps, problems)
    clean = _clean_frame(frame, id_column, timestamp_column, problems, filled)
    clean.attrs[FREQ_ATTR] = _SharedFrequencies({k: v for k, v in freqs.items() if k not in problems})
    return clean, problems.in_order(order)


class _Problems(dict):
    """``{series_id: reason}``: the first reason reported for each bad series."""

    def report(self, series_id, reason: str) -> None:
        self.setdefault(series_id, reason)

    def in_order(self, order: Sequence) -> list[SeriesError]:
        """The errors in ``order`` (of first appearance); errors of ids outside it come first."""
        rank = {series_id: i for i, series_id in enumerate(order)}
        ordered = sorted(self.items(), key=lambda item: rank.get(item[0], -1))
        return [SeriesError(k, v) for k, v in ordered]


def _drop_rows_without_id(frame: pd.DataFrame, id_column: str, problems: _Problems) -> pd.DataFrame:
    if frame[id_column].isna().any():
        problems.report(None, f"{int(frame[id_column].isna().sum())} rows have no value in the id column {id_column!r}")
        frame = frame[frame[id_column].notna()]
    return frame


def _parse_timestamp_column(
    frame: pd.DataFrame, id_column: str, timestamp_column: str, offset, problems: _Problems
) -> tuple[pd.DataFrame, bool]:
    """Integers stay integers (an integer time index), everything else becomes datetime64;
    series with unparseable timestamps are reported. Returns (frame, integer index?)."""
    ts = frame[timestamp_column]
    integer_index = is_integer_index(ts)
    if isinstance(offset, int) and not integer_index:
        raise ValueError(f"an integer freq ({offset}) needs an integer timestamp column, got {ts.dtype}")
    if not integer_index:
        if isinstance(ts.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(ts):
            parsed = ts
        else:
            parsed = parse_timestamps(ts)
        for series_id in frame.loc[parsed.isna(), id_column].unique():
            problems.report(series_id, f"missing or unparseable timestamps in {timestamp_column!r}")
        frame[timestamp_column] = parsed
    return frame, integer_index


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Timestamps given as text (or Python objects) -> datetime64, the one way every route parses them.

    * Each value is parsed on its own terms: ``2020-01-01`` next to ``2020-01-01 07:00:00`` or
      ``2020/01/01`` is fine (pandas would infer one format from the first value and turn the
      others into NaT).
    * Values with a UTC offset (``2020-01-01T00:00:00+01:00``, ``...Z``) are converted to UTC and
      stored without a zone (naive UTC), so offsets that change across DST, or series with and
      without offsets in one file, parse the same whichever series they are read with.
    * What cannot be parsed becomes NaT (validation then names the series).

    Integers and datetime columns are returned unchanged."""
    if values.dtype != object and not pd.api.types.is_string_dtype(values):
        return values
    present = values.notna()
    try:
        as_text = values.str.strip().where(values.map(type) == str, values)  # noqa: E721
        with_offset = as_text.str.contains(_OFFSET_PATTERN, regex=True, na=False).astype(bool)
    except AttributeError:  # no strings at all (e.g. datetime objects)
        as_text, with_offset = values, pd.Series(False, index=values.index)
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    naive = present & ~with_offset
    if naive.any():
        parsed[naive] = _to_naive_datetimes(as_text[naive])
    if with_offset.any():
        aware = pd.to_datetime(as_text[with_offset], errors="coerce", utc=True, format="mixed")
        parsed[with_offset] = aware.dt.tz_convert(None).astype("datetime64[ns]")
    return parsed


def _to_naive_datetimes(values: pd.Series) -> pd.Series:
    """Text without UTC offsets -> naive datetime64[ns]: one inferred format first (fast), each
    value on its own where that failed; tz-aware Python objects are converted to naive UTC."""
    try:
        parsed = pd.to_datetime(values, errors="coerce")
    except (TypeError, ValueError):  # e.g. tz-aware and naive datetime objects mixed
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        parsed = parsed.dt.tz_convert(None)
    parsed = parsed.astype("datetime64[ns]")
    failed = parsed.isna() & values.notna()
    if failed.any():
        retry = pd.to_datetime(values[failed], errors="coerce", utc=True, format="mixed")
        parsed[failed] = retry.dt.tz_convert(None).astype("datetime64[ns]")
    return parsed


def _to_numeric(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(float values, mask of entries that were present but not numbers)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype(float), pd.Series(False, index=values.index)
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return numbers, numbers.isna() & values.notna()


def _parse_target_columns(
    frame: pd.DataFrame, id_column: str, target_columns: list[str], problems: _Problems
) -> pd.DataFrame:
    for column in target_columns:
        numbers, not_numbers = _to_numeric(frame[column])
        for series_id in frame.loc[not_numbers, id_column].unique():
            example = frame.loc[not_numbers & (frame[id_column] == series_id), column].iloc[0]
            problems.report(series_id, f"target column {column!r} is not numeric (e.g. {example!r})")
        frame[column] = numbers
    return frame


@dataclass
class _SeriesTable:
    """Per-series statistics of a frame sorted by id then time, computed once for the whole frame
    (vectorised): series boundaries, inf/observed flags and the smallest/largest step between
    consecutive timestamps (-1/-2 where steps cannot be told)."""

    ids: np.ndarray
    boundaries: np.ndarray
    bounds: dict  # series id -> (first row, end row)
    position: dict  # series id -> index into the per-series arrays
    values: np.ndarray  # the target columns, float
    has_inf: np.ndarray
    observed: np.ndarray  # (series, targets): any finite value
    steps_known: bool
    stamps_int: np.ndarray | None  # timestamps as int64 (UTC nanoseconds for datetimes)
    min_step: np.ndarray
    max_step: np.ndarray

    @classmethod
    def of(
        cls, frame: pd.DataFrame, id_column: str, timestamp_column: str, target_columns: list[str], integer_index: bool
    ) -> _SeriesTable:
        ids = frame[id_column].to_numpy()
        boundaries = series_starts(ids)
        ends = np.r_[boundaries[1:], len(ids)] if len(ids) else np.zeros(0, dtype=np.intp)
        values = frame[target_columns].to_numpy(dtype=float)
        has_inf = np.logical_or.reduceat(np.isinf(values).any(axis=1), boundaries) if len(ids) else np.zeros(0, bool)
        observed = np.logical_or.reduceat(np.isfinite(values), boundaries, axis=0) if len(ids) else np.zeros((0, 1))
        ts_values = frame[timestamp_column]
        steps_known = integer_index or ts_values.dtype.kind == "M"  # datetimes (naive or tz-aware) or integers
        if isinstance(ts_values.dtype, pd.DatetimeTZDtype):
            ts_values = ts_values.dt.tz_convert(None)  # steps in UTC nanoseconds: numpy has no time zones
        min_step = np.full(len(boundaries), -1, dtype=np.int64)
        max_step = np.full(len(boundaries), -2, dtype=np.int64)
        stamps_int = None
        if steps_known and len(ids):
            raw = ts_values.to_numpy()
            stamps_int = raw.astype(np.int64) if integer_index else raw.astype("datetime64[ns]").astype(np.int64)
            step = np.r_[0, np.diff(stamps_int)]
            big = np.iinfo(np.int64).max
            step_min, step_max = step.copy(), step.copy()
            step_min[boundaries] = big  # a series' first row has no step
            step_max[boundaries] = -big
            min_step = np.minimum.reduceat(step_min, boundaries)
            max_step = np.maximum.reduceat(step_max, boundaries)
        return cls(
            ids=ids,
            boundaries=boundaries,
            bounds={ids[b]: (b, e) for b, e in zip(boundaries, ends, strict=True)},
            position={series_id: k for k, series_id in enumerate(ids[boundaries])},
            values=values,
            has_inf=has_inf,
            observed=observed,
            steps_known=steps_known,
            stamps_int=stamps_int,
            min_step=min_step,
            max_step=max_step,
        )


def _check_target_values(
    frame: pd.DataFrame,
    timestamp_column: str,
    target_columns: list[str],
    table: _SeriesTable,
    order: list,
    problems: _Problems,
) -> None:
    """Report series whose target holds +-inf, has no observed value, or exceeds the float32 range."""
    for series_id in order:
        if series_id in problems:
            continue
        b, e = table.bounds[series_id]
        k = table.position[series_id]
        if table.has_inf[k]:
            first_inf = b + int(np.argmax(np.isinf(table.values[b:e]).any(axis=1)))
            problems.report(
                series_id, f"target holds infinite values (first at {frame[timestamp_column].iloc[first_inf]})"
            )
        elif not table.observed[k].all():
            empty = [c for c, ok in zip(target_columns, table.observed[k], strict=True) if not ok]
            problems.report(series_id, f"no observed value in target {empty[0]!r} (all NaN or no rows)")
        elif (biggest := float(np.nanmax(np.abs(table.values[b:e])))) > FLOAT32_MAX:
            problems.report(
                series_id, f"target values beyond the float32 range (|y| up to {biggest:.3g}): forecasts are float32"
            )


# A week in nanoseconds: weekly steps infer differently for each weekday the series starts on.
_WEEK_NS = 7 * 86_400 * 10**9


def _series_frequencies(
    frame: pd.DataFrame,
    timestamp_column: str,
    table: _SeriesTable,
    order: list,
    offset,
    integer_index: bool,
    problems: _Problems,
) -> tuple[dict, set]:
    """Each good series' frequency: ``offset`` when given, else inferred (``None`` when it cannot
    be told). Returns ``(freqs, regular)``, ``regular`` the series already known to lie on their
    frequency's grid without gaps (a calendar offset followed exactly, or one constant step); the
    others are checked against their grid by :func:`_check_grids`. Reports duplicate timestamps."""
    stamps = frame[timestamp_column]
    calendar = {}
    if table.steps_known and not integer_index and len(table.ids):
        calendar = calendar_frequencies(stamps, table.ids, table.boundaries, table.min_step, table.max_step, offset)
    freqs: dict[object, pd.DateOffset | int | None] = {}
    regular: set = set()
    inferred: dict[tuple, pd.DateOffset | int | None] = {}  # the inference of one constant step
    for series_id in order:
        if series_id in problems:
            continue
        b, e = table.bounds[series_id]
        k = table.position[series_id]
        if series_id in calendar:
            freqs[series_id] = calendar[series_id]
            regular.add(series_id)
            continue
        if table.min_step[k] == table.max_step[k] and table.min_step[k] > 0:
            step = int(table.min_step[k])
            if integer_index:
                candidate = offset if offset is not None else step
                on_grid = candidate == step
            elif offset is not None:
                candidate = offset
                on_grid = isinstance(offset, pd.offsets.Tick) and offset.nanos == step
            else:
                assert table.stamps_int is not None  # equal positive steps were measured on the stamps
                first = int(table.stamps_int[b])
                key = (step, first % _WEEK_NS) if step % _WEEK_NS == 0 else (step,)
                if key not in inferred:
                    inferred[key] = infer_freq(stamps.iloc[b:e])
                candidate = inferred[key]
                on_grid = candidate is not None
            if on_grid:
                freqs[series_id] = candidate
                regular.add(series_id)
                continue
        series_stamps = stamps.iloc[b:e]
        duplicated = series_stamps.duplicated()
        if duplicated.any():
            problems.report(series_id, f"duplicate timestamps (e.g. {series_stamps[duplicated].iloc[0]})")
            continue
        freqs[series_id] = offset if offset is not None else infer_freq(series_stamps)
    return freqs, regular


def _check_grids(
    frame: pd.DataFrame,
    id_column: str,
    timestamp_column: str,
    table: _SeriesTable,
    order: list,
    freqs: dict,
    regular: set,
    fill_gaps: bool,
    problems: _Problems,
) -> dict[object, pd.DataFrame]:
    """Check the series not known to be regular against the grid of their frequency (series
    whose frequency could not be told borrow the most common one, else their smallest step);
    report off-grid timestamps and gaps, or fill the gaps with NaN rows. Sets the frequency of
    every series checked in ``freqs``; returns ``{series_id: gap-filled rows}``."""
    known = Counter(f for f in freqs.values() if f is not None)
    fallback = known.most_common(1)[0][0] if known else None
    filled = {}
    for series_id in order:
        if series_id in problems or series_id in regular:
            continue
        b, e = table.bounds[series_id]
        part = frame.iloc[b:e]
        stamps = part[timestamp_column]
        if freqs[series_id] is not None:
            candidates = [freqs[series_id]]
        else:  # too short or too gappy to infer: the most common frequency, else its own smallest step
            candidates = [f for f in (fallback, smallest_step(stamps)) if f is not None]
        if not candidates:
            if len(part) == 1:
                continue  # a single point has no grid to check: the caller must give freq
            problems.report(series_id, "irregular timestamps: cannot infer the frequency; pass freq=")
            continue
        for series_freq in candidates:
            grid = timestamp_grid(stamps.iloc[0], stamps.iloc[-1], series_freq)
            on_grid = pd.Index(stamps).isin(grid)
            if on_grid.all():
                break
        if not on_grid.all():
            problems.report(
                series_id,
                f"irregular timestamps: {stamps[~on_grid].iloc[0]} is off the {freq_str(series_freq)!r} grid "
                f"starting at {stamps.iloc[0]}",
            )
            continue
        if len(grid) != len(part):
            if not fill_gaps:
                missing_ts = grid[~grid.isin(pd.Index(stamps))]
                problems.report(
                    series_id,
                    f"irregular timestamps: {len(missing_ts)} missing at frequency {freq_str(series_freq)!r} "
                    f"(first {missing_ts[0]}); pass fill_gaps=True to insert them as NaN",
                )
                continue
            part = part.set_index(timestamp_column).reindex(grid).rename_axis(timestamp_column).reset_index()
            part[id_column] = series_id
            filled[series_id] = part[list(frame.columns)]
        freqs[series_id] = series_freq
    return filled


def _clean_frame(
    frame: pd.DataFrame, id_column: str, timestamp_column: str, problems: _Problems, filled: dict
) -> pd.DataFrame:
    """The frame without the bad series, gap-filled series replaced, sorted by id then time."""
    dropped = set(problems) | set(filled)
    clean = frame[~frame[id_column].isin(dropped)] if dropped else frame
    if filled:
        clean = pd.concat([clean, *filled.values()], ignore_index=True)
        clean = clean.sort_values([id_column, timestamp_column], kind="stable")
    return clean.reset_index(drop=True)


# -- the future-frame check ----------------------------------------------------------------------


def validate_future_frame(
    future_df: pd.DataFrame,
    clean_df: pd.DataFrame,
    id_column: str,
    timestamp_column: str,
    prediction_length: int,
    covariate_columns: Iterable[str] | None = None,
    freqs: dict | None = None,
) -> tuple[pd.DataFrame, list[SeriesError]]:
    """Check the known-future covariates of a forecast request against the clean history.

    Every id of ``clean_df`` must have exactly ``prediction_length`` rows in ``future_df``, at the
    timestamps that follow its history on the grid of its frequency (``freqs``, default
    ``clean_df.attrs[FREQ_ATTR]``; timestamps are not checked for ids without one). Ids of
    ``future_df`` without history are ignored.

    Returns ``(future frame sorted by id then time, errors)``.

    Raises:
        ValueError: a column of ``future_df`` (other than id/timestamp) is not a column of the
            history, or the id/timestamp columns are missing.
    """
    for column in (id_column, timestamp_column):
        if column not in future_df.columns:
            raise ValueError(f"future_df has no column {column!r} (have {list(future_df.columns)})")
    extra = [c for c in future_df.columns if c not in (id_column, timestamp_column)]
    unknown = [c for c in extra if c not in clean_df.columns]
    if unknown:
        raise ValueError(
            f"covariates {unknown} are in future_df but not in df: a known-future covariate needs its history too"
        )
    if covariate_columns is not None:
        allowed = set(covariate_columns)
        targets = [c for c in extra if c not in allowed]
        if targets:
            raise ValueError(f"future_df must not hold target columns or unknown columns: {targets}")
    freqs = clean_df.attrs.get(FREQ_ATTR, {}) if freqs is None else freqs
    future = future_df.copy()
    if not is_integer_index(future[timestamp_column]) and not pd.api.types.is_datetime64_any_dtype(
        future[timestamp_column]
    ):
        future[timestamp_column] = parse_timestamps(future[timestamp_column])
    future = future.sort_values([id_column, timestamp_column], kind="stable")
    # A covariate numeric in the history stays numeric: a stray text cell ("abc") names its series
    # instead of turning the column categorical for every series of the frame.
    bad_cells: dict = {}
    for column in extra:
        if pd.api.types.is_numeric_dtype(clean_df[column]) and not pd.api.types.is_numeric_dtype(future[column]):
            numbers, not_numbers = _to_numeric(future[column])
            for series_id in future.loc[not_numbers, id_column].unique():
                example = future.loc[not_numbers & (future[id_column] == series_id), column].iloc[0]
                bad_cells.setdefault(series_id, f"future_df covariate {column!r} is not numeric (e.g. {example!r})")
            future[column] = numbers
    groups = {key: part for key, part in future.groupby(id_column, sort=False)}
    last = clean_df.groupby(id_column, sort=False)[timestamp_column].last()
    errors = []
    for series_id, last_ts in last.items():
        part = groups.get(series_id)
        if part is None:
            errors.append(SeriesError(series_id, "missing from future_df (its known-future covariates are needed)"))
            continue
        if series_id in bad_cells:
            errors.append(SeriesError(series_id, bad_cells[series_id]))
            continue
        if len(part) != prediction_length:
            errors.append(
                SeriesError(
                    series_id, f"future_df has {len(part)} rows for it, expected prediction_length={prediction_length}"
                )
            )
            continue
        series_freq = freqs.get(series_id)
        if series_freq is not None:
            expected = future_timestamps(last_ts, series_freq, prediction_length)
            got = pd.Index(part[timestamp_column])
            # Index comparison handles time zones and units (numpy's astype cannot take a tz dtype)
            if len(got) != len(expected) or not bool((got == expected).all()):
                errors.append(
                    SeriesError(
                        series_id,
                        f"future_df timestamps {got[0]}..{got[-1]} do not follow the history "
                        f"(expected {expected[0]}..{expected[-1]} at {freq_str(series_freq)!r})",
                    )
                )
                continue
        values = part[extra].select_dtypes("number").to_numpy(dtype=float)
        if np.isinf(values).any():
            errors.append(SeriesError(series_id, "future_df covariates hold infinite values"))
    return future.reset_index(drop=True), errors


# -- frames to tasks and back --------------------------------------------------------------------


@dataclass
class PreparedFrame:
    """A validated long frame as tasks (one per series, in order of first appearance), with what
    naming and time-stamping their forecasts needs."""

    id_column: str
    timestamp_column: str
    targets: list[str]
    series_ids: list = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    last_timestamps: list = field(default_factory=list)
    freqs: dict = field(default_factory=dict)  # series id -> DateOffset, int step or None


def prepare_frame(
    df: pd.DataFrame,
    future_df: pd.DataFrame | None = None,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: str | Sequence[str] | None = None,
    prediction_length: int = 1,
    freq: str | int | None = None,
    fill_gaps: bool = False,
    known_covariates: Sequence[str] | None = None,
) -> PreparedFrame:
    """Validate ``df`` (and ``future_df``), raising one ``ValueError`` naming every bad series,
    and turn it into tasks; see :meth:`tsmojo.TSMojoPipeline.predict_df` for the arguments."""
    id_column, timestamp_column, targets = resolve_columns(df, id_column, timestamp_column, target)
    clean, errors = validate_long_frame(df, id_column, timestamp_column, targets, freq=freq, fill_gaps=fill_gaps)
    raise_for_errors(errors, "df")
    if future_df is not None and id_column in future_df.columns:
        extra_ids = pd.Index(pd.unique(future_df[id_column])).difference(pd.Index(pd.unique(clean[id_column])))
        if len(extra_ids):
            shown = ", ".join(repr(v) for v in extra_ids[:10]) + (" ..." if len(extra_ids) > 10 else "")
            raise ValueError(f"future_df has {len(extra_ids)} id(s) that are not in df: {shown}")
    freqs = clean.attrs.pop(FREQ_ATTR, {})  # pandas would deep-copy attrs on every operation
    clean.attrs = {}
    order = pd.unique(df[id_column].dropna())
    return tasks_from_clean_frame(
        clean, freqs, id_column, timestamp_column, targets, future_df, prediction_length, known_covariates, order
    )


def tasks_from_clean_frame(
    clean: pd.DataFrame,
    freqs: dict,
    id_column: str,
    timestamp_column: str,
    targets: Sequence[str],
    future_df: pd.DataFrame | None = None,
    prediction_length: int = 1,
    known_covariates: Sequence[str] | None = None,
    order: Iterable | None = None,
) -> PreparedFrame:
    """Tasks of a frame :func:`validate_long_frame` has cleaned (or slices of one: the rows of each
    series contiguous and in time order), with the frequencies it reported.

    Columns other than id, timestamp and targets are covariates: those of ``future_df`` (validated
    here against ``clean``, raising on bad series) or named in ``known_covariates`` are
    known-future, the others past-only. ``order``: series order (default: as in ``clean``)."""
    targets = list(targets)
    covariates = [c for c in clean.columns if c not in (id_column, timestamp_column, *targets)]
    future_groups = {}
    if future_df is not None:
        future, future_errors = validate_future_frame(
            future_df, clean, id_column, timestamp_column, prediction_length, covariates, freqs=freqs
        )
        raise_for_errors(future_errors, "future_df")
        known_covariates = [c for c in future.columns if c not in (id_column, timestamp_column)]
        future_groups = dict(iter(future.groupby(id_column, sort=False)))
    known_covariates = list(known_covariates or [])
    missing = [c for c in known_covariates if c not in covariates]
    if missing:
        raise ValueError(f"known-future covariates {missing} are not columns of df")
    # Slice numpy columns per series instead of grouping frames: much faster with many series.
    clean_ids = clean[id_column].to_numpy()
    starts = series_starts(clean_ids)
    ends = np.r_[starts[1:], len(clean_ids)].astype(int) if len(clean_ids) else np.zeros(0, dtype=int)
    last_stamps = clean[timestamp_column].iloc[ends - 1].tolist()
    bounds = {clean_ids[b]: (b, e, last) for b, e, last in zip(starts.tolist(), ends.tolist(), last_stamps)}
    target_values = clean[targets].to_numpy(dtype=float)
    covariate_values = {c: clean[c].to_numpy() for c in covariates}
    order = pd.unique(clean_ids) if order is None else order
    prepared = PreparedFrame(id_column, timestamp_column, targets, freqs=freqs)
    for series_id in [i for i in order if i in bounds]:
        b, e, last = bounds[series_id]
        item = {
            "target": target_values[b:e].T,
            "past_covariates": {c: values[b:e] for c, values in covariate_values.items()},
        }
        if series_id in future_groups:
            item["future_covariates"] = {c: future_groups[series_id][c].to_numpy() for c in known_covariates}
        elif known_covariates:  # training: the history of the known-future covariates is all there is
            item["future_covariates"] = {c: covariate_values[c][b:b] for c in known_covariates}
        try:
            prepared.tasks.append(parse_task(item, 0))
        except ValueError as exc:
            raise ValueError(f"series {series_id!r}: {str(exc).removeprefix('input 0: ')}") from None
        prepared.series_ids.append(series_id)
        prepared.last_timestamps.append(last)
    return prepared


def forecasts_to_frame(
    prepared: PreparedFrame, quantiles: list[np.ndarray], column_names: Sequence[str], prediction_length: int
) -> pd.DataFrame:
    """The forecast frame of :meth:`tsmojo.TSMojoPipeline.predict_df`: the id and timestamp
    columns (future timestamps), ``target_name`` with several targets, then one column per name.

    ``quantiles[i]``: (targets, prediction_length, len(column_names)) of series ``i``."""
    id_column, timestamp_column, targets = prepared.id_column, prepared.timestamp_column, prepared.targets
    ids, freqs = prepared.series_ids, prepared.freqs
    if not ids:
        columns = [id_column, timestamp_column] + (["target_name"] if len(targets) > 1 else [])
        return pd.DataFrame(columns=[*columns, *column_names])
    # Series usually share their last timestamp: build each distinct future grid once.
    grids: dict[tuple, pd.Index] = {}
    stamps = []
    for series_id, last in zip(ids, prepared.last_timestamps, strict=True):
        key = (last, str(getattr(last, "tz", None)), freqs[series_id])
        if key not in grids:
            grid = future_timestamps(last, freqs[series_id], prediction_length)
            if isinstance(grid, pd.DatetimeIndex) and isinstance(last, pd.Timestamp) and last.unit != grid.unit:
                grid = grid.as_unit(last.unit)
            grids[key] = grid
        stamps.extend([grids[key]] * len(targets))
    rows_per_series = len(targets) * prediction_length
    values = np.stack(quantiles).reshape(len(ids) * rows_per_series, len(column_names))
    out = {
        id_column: pd.Series(ids).repeat(rows_per_series).to_numpy(),
        timestamp_column: stamps[0].append(stamps[1:]) if len(stamps) > 1 else stamps[0],
    }
    if len(targets) > 1:
        out["target_name"] = np.repeat(np.tile(np.asarray(targets, dtype=object), len(ids)), prediction_length)
    out.update({name: values[:, k] for k, name in enumerate(column_names)})
    return pd.DataFrame(out)
