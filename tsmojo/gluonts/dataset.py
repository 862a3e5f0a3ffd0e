"""Conversions between GluonTS data entries and the pipeline's task format."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from gluonts.dataset.field_names import FieldName

from tsmojo.frames import FREQ_ATTR, raise_for_errors, resolve_columns, validate_future_frame, validate_long_frame
from tsmojo.frequency import period_freq

__all__ = ["entry_to_input", "frame_to_entries", "to_period"]


def to_period(timestamp, freq) -> pd.Period:
    """``pd.Period`` of ``timestamp`` at any timestamp frequency (``MS``, ``QS-DEC``, ``B``...),
    without pandas' deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pd.Period(pd.Timestamp(timestamp), freq=period_freq(freq))


def entry_to_input(entry: dict, prediction_length: int | None = None, training: bool = False) -> dict:
    """A GluonTS data entry as one :meth:`tsmojo.TSMojoPipeline.predict` input (one group).

    * ``target`` (T,) or (D, T): the target row(s); (D, T) is forecast jointly as one group.
    * ``feat_dynamic_real`` (K, >= T + H): known-future covariates (their first T values are the
      history, the next H the future). With ``training`` only the first T values are needed.
    * ``past_feat_dynamic_real`` (K, >= T): past-only covariates (the first T values are used).

    Other fields (static features, categorical dynamic features) are ignored.
    """
    target = np.asarray(entry[FieldName.TARGET], dtype=float)
    length = target.shape[-1]
    item: dict = {"target": target, "past_covariates": {}, "future_covariates": {}}
    needed = length if training else length + (prediction_length or 0)
    known = _dynamic_rows(
        entry, FieldName.FEAT_DYNAMIC_REAL, needed, f"needs {needed} (the target's {length} plus prediction_length)"
    )
    for k, row in enumerate(known):
        item["past_covariates"][f"feat_dynamic_real_{k}"] = row[:length]
        item["future_covariates"][f"feat_dynamic_real_{k}"] = row[length:needed]
    past = _dynamic_rows(entry, FieldName.PAST_FEAT_DYNAMIC_REAL, length, f"the target {length}")
    for k, row in enumerate(past):
        item["past_covariates"][f"past_feat_dynamic_real_{k}"] = row[:length]
    return item


def _dynamic_rows(entry: dict, name: str, needed: int, requirement: str) -> np.ndarray:
    """The rows (K, steps) of a dynamic-feature field of ``entry`` (none when absent), checked to
    span at least ``needed`` steps; ``requirement`` words the need in the error."""
    values = entry.get(name)
    if values is None:
        return np.zeros((0, needed))
    rows = np.asarray(values, dtype=float).reshape(-1, np.shape(values)[-1])
    if rows.shape[1] < needed:
        raise ValueError(f"item {entry.get(FieldName.ITEM_ID)!r}: {name} has {rows.shape[1]} steps, {requirement}")
    return rows


def frame_to_entries(
    df: pd.DataFrame,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: str | Sequence[str] | None = None,
    freq: str | None = None,
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    future_df: pd.DataFrame | None = None,
    fill_gaps: bool = False,
) -> list[dict]:
    """Long frame -> list of GluonTS entries (``start`` as ``pd.Period``), validated like
    :meth:`tsmojo.TSMojoPipeline.predict_df`. Several targets give a 2-D (D, T) target.
    ``known_covariates`` become ``feat_dynamic_real`` (extended with ``future_df`` rows when given;
    every series needs the same number of them, at the timestamps following its history),
    ``past_covariates`` become ``past_feat_dynamic_real``. Numeric covariates only."""
    id_column, timestamp_column, targets = resolve_columns(df, id_column, timestamp_column, target)
    clean, errors = validate_long_frame(df, id_column, timestamp_column, targets, freq=freq, fill_gaps=fill_gaps)
    raise_for_errors(errors, "df")
    freqs = clean.attrs.pop(FREQ_ATTR)
    clean.attrs = {}
    futures = {}
    if future_df is not None and known_covariates:
        # The same checks as predict_df: every series needs the same number of future rows, at the
        # timestamps following its history -- otherwise the covariates would silently misalign.
        future_df = future_df[[id_column, timestamp_column, *known_covariates]]
        horizon = int(future_df.groupby(id_column).size().max()) if len(future_df) else 0
        future, future_errors = validate_future_frame(
            future_df, clean, id_column, timestamp_column, horizon, known_covariates, freqs=freqs
        )
        raise_for_errors(future_errors, "future_df")
        futures = dict(iter(future.groupby(id_column, sort=False)))
    groups = dict(iter(clean.groupby(id_column, sort=False)))
    entries = []
    for series_id in [i for i in pd.unique(df[id_column]) if i in groups]:
        part = groups[series_id]
        values = part[targets].to_numpy(dtype=float).T
        if freqs.get(series_id) is None or isinstance(freqs[series_id], int):
            raise ValueError(f"series {series_id!r}: GluonTS needs a date frequency; pass freq=")
        entry = {
            FieldName.ITEM_ID: series_id,
            FieldName.START: to_period(part[timestamp_column].iloc[0], freqs[series_id]),
            FieldName.TARGET: values[0] if len(targets) == 1 else values,
        }
        if known_covariates:
            known = part[list(known_covariates)].to_numpy(dtype=float).T
            if series_id in futures:
                known = np.concatenate([known, futures[series_id][list(known_covariates)].to_numpy(dtype=float).T], 1)
            entry[FieldName.FEAT_DYNAMIC_REAL] = known
        if past_covariates:
            entry[FieldName.PAST_FEAT_DYNAMIC_REAL] = part[list(past_covariates)].to_numpy(dtype=float).T
        entries.append(entry)
    return entries
