"""Input checks for long-format data: the single place where tsmojo validates series.

Two ways to use it:

* **collect** (batch jobs, the CLI): :func:`validate_long_frame` returns the clean frame and a
  list of :class:`SeriesError`; bad series are dropped from the frame, good ones go on.
* **raise** (interactive use, :meth:`tsmojo.TSMojoPipeline.predict_df`): call
  :func:`raise_for_errors` on that list; it raises one ``ValueError`` naming every bad series.

Frequency helpers (:func:`normalize_freq`, :func:`infer_freq`, :func:`future_timestamps`,
:func:`period_freq`) live here too, so every route builds future timestamps the same way.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

__all__ = [
    "FREQ_ATTR",
    "SeriesError",
    "future_timestamps",
    "infer_freq",
    "normalize_freq",
    "period_freq",
    "raise_for_errors",
    "resolve_columns",
    "validate_future_frame",
    "validate_long_frame",
]

#: key of ``DataFrame.attrs`` where :func:`validate_long_frame` stores ``{series_id: freq}``;
#: the value is a pandas ``DateOffset`` for datetime timestamps and an ``int`` step for integer ones.
FREQ_ATTR = "tsmojo_freq"


class _SharedFrequencies(dict):
    """``{series_id: freq}`` kept in ``DataFrame.attrs``. pandas deep-copies ``attrs`` on every
    operation, which made each operation O(number of series); this read-only map is shared instead."""

    def __deepcopy__(self, memo: dict) -> _SharedFrequencies:
        return self

# Column names tried, in order, when the caller does not name them.
_COLUMN_CANDIDATES = (("unique_id", "ds", "y"), ("item_id", "timestamp", "target"), ("id", "timestamp", "target"))


class SeriesError(NamedTuple):
    """One problem with one series: ``series_id`` (the value of the id column) and a readable ``reason``."""

    series_id: object
    reason: str


# -- frequencies ---------------------------------------------------------------------------------

# Aliases renamed in pandas 2.2 (old -> new). Tried first so that pandas >= 3 (which drops the old
# names) still understands them; on pandas 2.1 the new names are unknown and the raw alias is used.
_RENAMED_ALIASES = {
    "H": "h", "BH": "bh", "CBH": "cbh", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns",
    "M": "ME", "BM": "BME", "SM": "SME", "CBM": "CBME", "Q": "QE", "BQ": "BQE",
    "A": "YE", "Y": "YE", "BA": "BYE", "BY": "BYE", "AS": "YS", "BAS": "BYS",
}  # fmt: skip
_ALIAS_PATTERN = re.compile(r"^(?P<n>[+-]?\d*)(?P<base>[A-Za-z]+)(?P<anchor>-[A-Za-z0-9]+)?$")


def normalize_freq(freq: str | pd.DateOffset | int | None) -> pd.DateOffset | int | None:
    """A pandas ``DateOffset`` for any alias pandas has ever accepted (``H``, ``h``, ``T``, ``min``,
    ``M``, ``ME``, ``MS``, ``W-SUN``, ``B``, ``QS-DEC``, ``A-DEC``, ``2H``...), without deprecation
    warnings. Integers (the step of an integer time index) and ``None`` pass through."""
    if freq is None or isinstance(freq, pd.DateOffset):
        return freq
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, bool):
        if freq < 1:
            raise ValueError(f"an integer frequency must be >= 1, got {freq}")
        return int(freq)
    if isinstance(freq, pd.Timedelta):
        return to_offset(freq)
    if not isinstance(freq, str):
        raise TypeError(f"freq must be a pandas alias, a DateOffset or an int, got {type(freq).__name__}")
    candidates = [freq.strip()]
    match = _ALIAS_PATTERN.match(candidates[0])
    if match and match["base"] in _RENAMED_ALIASES:
        renamed = f"{match['n']}{_RENAMED_ALIASES[match['base']]}{match['anchor'] or ''}"
        candidates.insert(0, renamed)
    error: Exception | None = None
    for alias in candidates:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return to_offset(alias)
        except (ValueError, TypeError) as exc:  # pragma: no cover - depends on the pandas version
            error = exc
    raise ValueError(f"unknown frequency {freq!r}: {error}")


def freq_str(freq: pd.DateOffset | int) -> str:
    """A readable name: ``'h'``, ``'MS'``, ``'W-SUN'``; an integer step as ``'1'``."""
    return str(freq) if isinstance(freq, int) else freq.freqstr


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def period_freq(freq: str | pd.DateOffset) -> str:
    """The ``pd.Period`` frequency (as GluonTS wants it) for a timestamp frequency.

    Start-anchored offsets have no period of their own: ``MS``/``BMS`` -> ``M``, ``QS-DEC`` ->
    ``Q-NOV`` (the quarter starting in December ends in November), ``YS-JAN`` -> ``Y-DEC``. The
    period's start timestamp is then the original timestamp again.
    """
    offset = normalize_freq(freq)
    if isinstance(offset, int):
        raise ValueError("an integer time index has no period frequency")
    n = offset.n if offset.n != 1 else ""
    if isinstance(offset, (pd.offsets.MonthBegin, pd.offsets.BusinessMonthBegin, pd.offsets.SemiMonthBegin)):
        return f"{n}M"
    if isinstance(offset, (pd.offsets.QuarterBegin, pd.offsets.BQuarterBegin)):
        return f"{n}Q-{_MONTHS[(offset.startingMonth - 2) % 12]}"
    if isinstance(offset, (pd.offsets.YearBegin, pd.offsets.BYearBegin)):
        return f"{n}Y-{_MONTHS[(offset.month - 2) % 12]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pd.Period("2000-01-03", freq=offset).freqstr
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"frequency {offset.freqstr!r} has no pandas Period equivalent") from exc


def _is_integer_index(values: pd.Series | pd.Index) -> bool:
    return pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)


def infer_freq(timestamps: Sequence | pd.Index | pd.Series) -> pd.DateOffset | int | None:
    """Frequency of one series' sorted, unique timestamps, or ``None`` if it cannot be told
    (fewer than 3 points with dates, or gaps). Integer indices give their smallest step."""
    index = pd.Index(timestamps)
    if _is_integer_index(index):
        steps = np.diff(index.to_numpy())
        if len(steps) == 0:
            return None
        step = int(steps.min())
        return step if step > 0 and np.all(steps % step == 0) else None
    index = pd.DatetimeIndex(index)
    if len(index) < 3:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            alias = pd.infer_freq(index)
        except (ValueError, TypeError):
            return None
    return None if alias is None else normalize_freq(alias)


def future_timestamps(last, freq: str | pd.DateOffset | int, horizon: int) -> pd.Index:
    """The ``horizon`` timestamps after ``last`` on the grid of ``freq`` (``last + step*i`` for ints)."""
    offset = normalize_freq(freq)
    if isinstance(offset, int):
        return pd.Index(int(last) + offset * np.arange(1, horizon + 1), dtype="int64")
    return pd.date_range(pd.Timestamp(last), periods=horizon + 1, freq=offset)[1:]


def _grid(first, last, freq: pd.DateOffset | int) -> pd.Index:
    if isinstance(freq, int):
        return pd.Index(np.arange(int(first), int(last) + 1, freq), dtype="int64")
    return pd.date_range(first, last, freq=freq)


def _follows_offset(stamps: pd.Series, boundaries: np.ndarray, offset: pd.DateOffset) -> np.ndarray:
    """Per series (rows ``boundaries[k]:boundaries[k+1]`` of sorted ``stamps``): True when every
    timestamp is the previous one plus ``offset`` and the first lies on the offset's grid.

    One vectorised shift of the whole column instead of a date range per series: calendar
    frequencies (months, quarters, weeks, business days) have steps of varying length, so the
    constant-step test cannot tell them."""
    index = pd.DatetimeIndex(stamps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # offsets without a vectorised form warn, and still work
        try:
            shifted = index[:-1] + offset
        except Exception:  # noqa: BLE001 - e.g. a shift onto a DST gap: the per-series checks decide
            return np.zeros(len(boundaries), dtype=bool)
    step_ok = np.r_[True, np.asarray(shifted == index[1:])]
    step_ok[boundaries] = True  # a series' first row has no predecessor
    regular = np.logical_and.reduceat(step_ok, boundaries) if len(boundaries) else np.zeros(0, bool)
    firsts = index[boundaries]
    return regular & np.array([offset.is_on_offset(first) for first in firsts], dtype=bool)


# -- columns -------------------------------------------------------------------------------------


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
    targets = [target] if isinstance(target, str) else list(target or [])
    missing = [c for c in (id_column, timestamp_column, *targets) if c is None or c not in columns]
    if missing or not targets:
        raise ValueError(
            "cannot find the id/timestamp/target columns "
            f"(have {list(df.columns)}; missing {missing or 'target'}): pass id_column=, timestamp_column= "
            "and target=, or name them unique_id/ds/y or item_id/timestamp/target"
        )
    if len(set(targets)) != len(targets) or {id_column, timestamp_column} & set(targets):
        raise ValueError(f"target columns {targets} must be distinct from each other and from id/timestamp")
    return id_column, timestamp_column, targets


# -- the frame check -----------------------------------------------------------------------------


def _to_numeric(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(float values, mask of entries that were present but not numbers)."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(float), pd.Series(False, index=values.index)
    if pd.api.types.is_numeric_dtype(values):
        return values.astype(float), pd.Series(False, index=values.index)
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return numbers, numbers.isna() & values.notna()


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
    holds +-inf, has no observed value, has missing or duplicate timestamps, has timestamps
    off its frequency grid, or has gaps while ``fill_gaps`` is False. Constant series and NaNs
    (leading, trailing or inside) are fine.

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
    frame = df.copy()
    errors: dict[object, str] = {}

    def report(series_id, reason: str) -> None:
        errors.setdefault(series_id, reason)

    if frame[id_column].isna().any():
        report(None, f"{int(frame[id_column].isna().sum())} rows have no value in the id column {id_column!r}")
        frame = frame[frame[id_column].notna()]

    # Timestamps: integers stay integers, everything else becomes datetime64.
    ts = frame[timestamp_column]
    integer_index = _is_integer_index(ts)
    if isinstance(offset, int) and not integer_index:
        raise ValueError(f"an integer freq ({offset}) needs an integer timestamp column, got {ts.dtype}")
    if not integer_index:
        if isinstance(ts.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(ts):
            parsed = ts
        else:
            parsed = pd.to_datetime(ts, errors="coerce")
        bad_ts = parsed.isna()
        for series_id in frame.loc[bad_ts, id_column].unique():
            report(series_id, f"missing or unparseable timestamps in {timestamp_column!r}")
        frame[timestamp_column] = parsed

    for column in target_columns:
        numbers, not_numbers = _to_numeric(frame[column])
        for series_id in frame.loc[not_numbers, id_column].unique():
            example = frame.loc[not_numbers & (frame[id_column] == series_id), column].iloc[0]
            report(series_id, f"target column {column!r} is not numeric (e.g. {example!r})")
        frame[column] = numbers

    frame = frame.sort_values([id_column, timestamp_column], kind="stable").reset_index(drop=True)
    order = list(pd.unique(df[id_column].dropna()))
    # Per-series statistics computed once for the whole frame (vectorised): series boundaries,
    # inf/observed flags and the smallest/largest step between consecutive timestamps.
    ids = frame[id_column].to_numpy()
    boundaries = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.zeros(0, dtype=int)
    bounds = {ids[b]: (b, e) for b, e in zip(boundaries, np.r_[boundaries[1:], len(ids)], strict=True)}
    values = frame[target_columns].to_numpy(dtype=float)
    has_inf = np.logical_or.reduceat(np.isinf(values).any(axis=1), boundaries) if len(ids) else np.zeros(0, bool)
    observed = np.logical_or.reduceat(np.isfinite(values), boundaries, axis=0) if len(ids) else np.zeros((0, 1))
    ts_values = frame[timestamp_column]
    steps_known = integer_index or ts_values.dtype.kind == "M"  # datetimes (naive or tz-aware) or integers
    if isinstance(ts_values.dtype, pd.DatetimeTZDtype):
        ts_values = ts_values.dt.tz_convert(None)  # steps in UTC nanoseconds: numpy has no time zones
    min_step = np.full(len(boundaries), -1, dtype=np.int64)
    max_step = np.full(len(boundaries), -2, dtype=np.int64)
    if steps_known and len(ids):
        stamps_int = (
            ts_values.to_numpy().astype("datetime64[ns]").astype(np.int64)
            if not integer_index
            else ts_values.to_numpy().astype(np.int64)
        )
        step = np.r_[0, np.diff(stamps_int)]
        big = np.iinfo(np.int64).max
        step_min, step_max = step.copy(), step.copy()
        step_min[boundaries] = big
        step_max[boundaries] = -big
        min_step = np.minimum.reduceat(step_min, boundaries)
        max_step = np.maximum.reduceat(step_max, boundaries)
    position = {series_id: k for k, series_id in enumerate(ids[boundaries])}

    freqs: dict[object, pd.DateOffset | int | None] = {}
    fast: set = set()  # regular series (one constant step) already checked against their frequency
    inferred_cache: dict[tuple, pd.DateOffset | int | None] = {}
    calendar = _calendar_frequencies(frame[timestamp_column], ids, boundaries, min_step, max_step, offset) if (
        steps_known and not integer_index and len(ids)
    ) else {}
    for series_id in order:
        if series_id in errors:
            continue
        b, e = bounds[series_id]
        k = position[series_id]
        part_values = values[b:e]
        if has_inf[k]:
            where = frame[timestamp_column].iloc[b + int(np.argmax(np.isinf(part_values).any(axis=1)))]
            report(series_id, f"target holds infinite values (first at {where})")
            continue
        if not observed[k].all():
            empty = [c for c, ok in zip(target_columns, observed[k], strict=True) if not ok]
            report(series_id, f"no observed value in target {empty[0]!r} (all NaN or no rows)")
            continue
        if series_id in calendar:
            freqs[series_id] = calendar[series_id]
            fast.add(series_id)
            continue
        if min_step[k] == max_step[k] and min_step[k] > 0:
            step = int(min_step[k])
            if integer_index:
                candidate = offset if offset is not None else step
                regular = candidate == step
            elif offset is not None:
                candidate = offset
                regular = isinstance(offset, pd.offsets.Tick) and offset.nanos == step
            else:
                first = int(stamps_int[b])
                key = (step, first % (7 * 86_400 * 10**9)) if step % (7 * 86_400 * 10**9) == 0 else (step,)
                if key not in inferred_cache:
                    inferred_cache[key] = infer_freq(frame[timestamp_column].iloc[b:e])
                candidate = inferred_cache[key]
                regular = candidate is not None
            if regular:
                freqs[series_id] = candidate
                fast.add(series_id)
                continue
        stamps = frame[timestamp_column].iloc[b:e]
        duplicated = stamps.duplicated()
        if duplicated.any():
            report(series_id, f"duplicate timestamps (e.g. {stamps[duplicated].iloc[0]})")
            continue
        freqs[series_id] = offset if offset is not None else infer_freq(stamps)

    # Series whose frequency could not be told borrow the most common one.
    known = Counter(f for f in freqs.values() if f is not None)
    fallback = known.most_common(1)[0][0] if known else None
    filled = {}
    for series_id in order:
        if series_id in errors or series_id in fast:
            continue
        b, e = bounds[series_id]
        part = frame.iloc[b:e]
        stamps = part[timestamp_column]
        if freqs[series_id] is not None:
            candidates = [freqs[series_id]]
        else:  # too short or too gappy to infer: the most common frequency, else its own smallest step
            candidates = [f for f in (fallback, _smallest_step(stamps)) if f is not None]
        if not candidates:
            if len(part) == 1:
                continue  # a single point has no grid to check: the caller must give freq
            report(series_id, "irregular timestamps: cannot infer the frequency; pass freq=")
            continue
        for series_freq in candidates:
            grid = _grid(stamps.iloc[0], stamps.iloc[-1], series_freq)
            on_grid = pd.Index(stamps).isin(grid)
            if on_grid.all():
                break
        if not on_grid.all():
            report(
                series_id,
                f"irregular timestamps: {stamps[~on_grid].iloc[0]} is off the {freq_str(series_freq)!r} grid "
                f"starting at {stamps.iloc[0]}",
            )
            continue
        if len(grid) != len(part):
            if not fill_gaps:
                missing_ts = grid[~grid.isin(pd.Index(stamps))]
                report(
                    series_id,
                    f"irregular timestamps: {len(missing_ts)} missing at frequency {freq_str(series_freq)!r} "
                    f"(first {missing_ts[0]}); pass fill_gaps=True to insert them as NaN",
                )
                continue
            part = part.set_index(timestamp_column).reindex(grid).rename_axis(timestamp_column).reset_index()
            part[id_column] = series_id
            filled[series_id] = part[list(frame.columns)]
        freqs[series_id] = series_freq

    dropped = set(errors) | set(filled)
    clean = frame[~frame[id_column].isin(dropped)] if dropped else frame
    if filled:
        clean = pd.concat([clean, *filled.values()], ignore_index=True)
        clean = clean.sort_values([id_column, timestamp_column], kind="stable")
    clean = clean.reset_index(drop=True)
    clean.attrs[FREQ_ATTR] = _SharedFrequencies({k: v for k, v in freqs.items() if k not in errors})
    rank = {series_id: i for i, series_id in enumerate(order)}
    ordered = sorted(errors.items(), key=lambda item: rank.get(item[0], -1))
    return clean, [SeriesError(k, v) for k, v in ordered]


# Business-day variants of calendar offsets: a short series whose dates are all weekdays fits both;
# like ``pd.infer_freq``, prefer the plain calendar one.
_PLAIN_CALENDAR = {
    pd.offsets.BusinessMonthBegin: pd.offsets.MonthBegin,
    pd.offsets.BusinessMonthEnd: pd.offsets.MonthEnd,
    pd.offsets.BQuarterBegin: pd.offsets.QuarterBegin,
    pd.offsets.BQuarterEnd: pd.offsets.QuarterEnd,
    pd.offsets.BYearBegin: pd.offsets.YearBegin,
    pd.offsets.BYearEnd: pd.offsets.YearEnd,
}


def _calendar_frequencies(
    stamps: pd.Series,
    ids: np.ndarray,
    boundaries: np.ndarray,
    min_step: np.ndarray,
    max_step: np.ndarray,
    given: pd.DateOffset | int | None,
    max_inferences: int = 32,
) -> dict[object, pd.DateOffset]:
    """``{series_id: offset}`` for the series that follow a calendar offset exactly: ``given``
    when it is one, or else offsets inferred from a few of the series whose steps vary in length.

    Series left out (irregular, too short to infer, duplicates...) take the per-series checks,
    which also word their errors."""
    if isinstance(given, (int, pd.offsets.Tick)):
        return {}  # fixed steps: the constant-step test already covers them
    ends = np.r_[boundaries[1:], len(stamps)]
    if given is None:  # too short to infer from: they borrow the most common frequency later
        selected = (min_step != max_step) & (min_step > 0) & (ends - boundaries >= 3)
    else:  # a calendar offset given: constant steps (weeks, say) are checked against it too
        selected = min_step > 0  # single points included: their sentinel min step is huge
    unresolved = np.flatnonzero(selected)
    found: dict[object, pd.DateOffset] = {}

    def take(candidate: pd.DateOffset) -> np.ndarray:
        nonlocal unresolved
        rows = np.concatenate([np.arange(boundaries[k], ends[k]) for k in unresolved])
        starts = np.r_[0, np.cumsum(ends[unresolved] - boundaries[unresolved])[:-1]]
        ok = _follows_offset(stamps.iloc[rows], starts, candidate)
        found.update((ids[boundaries[k]], candidate) for k in unresolved[ok])
        unresolved = unresolved[~ok]
        return ok

    if given is not None:
        if len(unresolved):
            take(given)
        return found
    for _ in range(max_inferences):
        if not len(unresolved):
            break
        # Infer from the first unresolved series, then test every unresolved series at once.
        first = unresolved[0]
        candidate = infer_freq(stamps.iloc[boundaries[first] : ends[first]])
        if candidate is None or isinstance(candidate, (int, pd.offsets.Tick)):
            unresolved = unresolved[1:]  # left to the per-series checks
            continue
        plain = _PLAIN_CALENDAR.get(type(candidate))
        if plain is not None:
            take(plain(n=candidate.n, **candidate.kwds))
        if len(unresolved) and unresolved[0] == first:
            ok = take(candidate)
            if not ok[0]:
                unresolved = unresolved[unresolved != first]
    return found


def _smallest_step(stamps: pd.Series) -> pd.DateOffset | int | None:
    """The smallest step between timestamps if every step is a multiple of it, else None."""
    values = stamps.to_numpy()
    if len(values) < 2:
        return None
    steps = np.diff(values)
    if _is_integer_index(stamps):
        step = int(steps.min())
        return step if step > 0 and np.all(steps % step == 0) else None
    steps = steps.astype("timedelta64[ns]").astype(np.int64)
    step = int(steps.min())
    if step <= 0 or not np.all(steps % step == 0):
        return None
    return to_offset(pd.Timedelta(step, unit="ns"))


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
    if not _is_integer_index(future[timestamp_column]) and not pd.api.types.is_datetime64_any_dtype(
        future[timestamp_column]
    ):
        future[timestamp_column] = pd.to_datetime(future[timestamp_column], errors="coerce")
    future = future.sort_values([id_column, timestamp_column], kind="stable")
    groups = {key: part for key, part in future.groupby(id_column, sort=False)}
    last = clean_df.groupby(id_column, sort=False)[timestamp_column].last()
    errors = []
    for series_id, last_ts in last.items():
        part = groups.get(series_id)
        if part is None:
            errors.append(SeriesError(series_id, "missing from future_df (its known-future covariates are needed)"))
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


def raise_for_errors(errors: Sequence[SeriesError], what: str = "input") -> None:
    """Raise one ``ValueError`` listing every bad series (the first ten spelled out); no-op if none."""
    if not errors:
        return
    lines = [f"series {e.series_id!r}: {e.reason}" for e in errors[:10]]
    more = f"\n... and {len(errors) - 10} more" if len(errors) > 10 else ""
    raise ValueError(f"{len(errors)} invalid series in the {what}:\n" + "\n".join(lines) + more)
