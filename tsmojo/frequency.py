"""Frequencies of time series: aliases in any pandas spelling, inference, period aliases, grids.

Every route builds future timestamps with :func:`future_timestamps` and names GluonTS periods
with :func:`period_freq`, so they agree with each other. :func:`calendar_frequencies` is the fast,
vectorised inference over a whole long frame that :func:`tsmojo.frames.validate_long_frame` uses.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import overload

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

__all__ = [
    "calendar_frequencies",
    "freq_str",
    "future_timestamps",
    "infer_freq",
    "is_integer_index",
    "normalize_freq",
    "period_freq",
    "smallest_step",
    "timestamp_grid",
]

# Aliases renamed in pandas 2.2 (old -> new). Tried first so that pandas >= 3 (which drops the old
# names) still understands them; on pandas 2.1 the new names are unknown and the raw alias is used.
_RENAMED_ALIASES = {
    "H": "h", "BH": "bh", "CBH": "cbh", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns",
    "M": "ME", "BM": "BME", "SM": "SME", "CBM": "CBME", "Q": "QE", "BQ": "BQE",
    "A": "YE", "Y": "YE", "BA": "BYE", "BY": "BYE", "AS": "YS", "BAS": "BYS",
}  # fmt: skip
_ALIAS_PATTERN = re.compile(r"^(?P<n>[+-]?\d*)(?P<base>[A-Za-z]+)(?P<anchor>-[A-Za-z0-9]+)?$")


@overload
def normalize_freq(freq: None) -> None: ...
@overload
def normalize_freq(freq: str | pd.DateOffset | int) -> pd.DateOffset | int: ...
def normalize_freq(freq: str | pd.DateOffset | int | None) -> pd.DateOffset | int | None:
    """A pandas ``DateOffset`` for any alias pandas has ever accepted (``H``, ``h``, ``T``, ``min``,
    ``M``, ``ME``, ``MS``, ``W-SUN``, ``B``, ``QS-DEC``, ``A-DEC``, ``2H``...), without deprecation
    warnings. Integers (the step of an integer time index) and ``None`` pass through."""
    if freq is None or isinstance(freq, pd.DateOffset):
        return freq
    if isinstance(freq, int | np.integer) and not isinstance(freq, bool):
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
    if isinstance(offset, pd.offsets.MonthBegin | pd.offsets.BusinessMonthBegin | pd.offsets.SemiMonthBegin):
        return f"{n}M"
    if isinstance(offset, pd.offsets.QuarterBegin | pd.offsets.BQuarterBegin):
        return f"{n}Q-{_MONTHS[(offset.startingMonth - 2) % 12]}"
    if isinstance(offset, pd.offsets.YearBegin | pd.offsets.BYearBegin):
        return f"{n}Y-{_MONTHS[(offset.month - 2) % 12]}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pd.Period("2000-01-03", freq=offset).freqstr
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"frequency {offset.freqstr!r} has no pandas Period equivalent") from exc


def is_integer_index(values: pd.Series | pd.Index) -> bool:
    """True for an integer time index (integers, not booleans)."""
    return pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)


def infer_freq(timestamps: Sequence | pd.Index | pd.Series) -> pd.DateOffset | int | None:
    """Frequency of one series' sorted, unique timestamps, or ``None`` if it cannot be told
    (fewer than 3 points with dates, or gaps). Integer indices give their smallest step."""
    index = pd.Index(timestamps)
    if is_integer_index(index):
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


def timestamp_grid(first, last, freq: pd.DateOffset | int) -> pd.Index:
    """Every timestamp from ``first`` to ``last`` on the grid of ``freq`` (a step for integers)."""
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


def calendar_frequencies(
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
    if isinstance(given, int | pd.offsets.Tick):
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
        if candidate is None or isinstance(candidate, int | pd.offsets.Tick):
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


def smallest_step(stamps: pd.Series) -> pd.DateOffset | int | None:
    """The smallest step between timestamps if every step is a multiple of it, else None."""
    values = stamps.to_numpy()
    if len(values) < 2:
        return None
    steps = np.diff(values)
    if is_integer_index(stamps):
        step = int(steps.min())
        return step if step > 0 and np.all(steps % step == 0) else None
    steps = steps.astype("timedelta64[ns]").astype(np.int64)
    step = int(steps.min())
    if step <= 0 or not np.all(steps % step == 0):
        return None
    return to_offset(pd.Timedelta(step, unit="ns"))
