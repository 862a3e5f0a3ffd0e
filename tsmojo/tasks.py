"""Tasks: what the model forecasts, and the parsing of ``predict``'s numpy/dict inputs into them.

One task is one group of rows forecast jointly -- its targets, its past-only covariates and its
known-future covariates (see :meth:`tsmojo.TSMojoPipeline.predict` for the input format). Long
frames become tasks in :mod:`tsmojo.frames`. The model forecasts its own quantile levels;
:func:`interpolate_quantiles` and :func:`mean_weights` turn them into the requested levels and
the mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from tsmojo.model import FUTURE_COVARIATE, PAST_COVARIATE, TARGET

_FLOAT32_MAX = float(np.finfo(np.float32).max)

__all__ = ["Task", "interpolate_quantiles", "mean_weights", "parse_inputs", "parse_task"]


@dataclass
class Task:
    """One group. ``target`` (D, T); ``past`` (P, T); ``known`` (F, T) history of known-future
    covariates and ``known_future`` (F, H') their future values (H' may be 0 when training)."""

    target: np.ndarray
    past: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    known: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    known_future: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def length(self) -> int:
        """Time steps of the history (T)."""
        return self.target.shape[1]

    @property
    def num_rows(self) -> int:
        """Rows the task puts in a batch: targets, past-only and known-future covariates."""
        return self.target.shape[0] + self.past.shape[0] + self.known.shape[0]

    def window(self, end: int, horizon: int, context_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training/validation window: (context (R, <=context_length), future (R, horizon), roles (R,)).

        The history up to ``end`` is context; the ``horizon`` points after it are the truth of the
        targets and the known values of known-future covariates (NaN-padded past the end)."""
        full_known = np.concatenate([self.known, self.known_future], axis=1)[:, : self.length]
        rows = np.concatenate([self.target, self.past, full_known], axis=0)
        start = max(0, end - context_length)
        context = rows[:, start:end]
        future = np.full((rows.shape[0], horizon), np.nan)
        span = rows[:, end : end + horizon]
        future[:, : span.shape[1]] = span
        future[self.target.shape[0] : self.target.shape[0] + self.past.shape[0]] = np.nan
        return context, future, self.roles()

    def roles(self) -> np.ndarray:
        """The role of each row (``TARGET``, ``PAST_COVARIATE``, ``FUTURE_COVARIATE``), in row order."""
        return np.repeat(
            [TARGET, PAST_COVARIATE, FUTURE_COVARIATE], [self.target.shape[0], self.past.shape[0], self.known.shape[0]]
        )


def _as_float(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.dtype.kind == "c":
        raise ValueError(f"{what} is complex: give real numbers")
    if array.dtype == object or array.dtype.kind in "USO":
        converted = pd.to_numeric(pd.Series(array.ravel()), errors="coerce").to_numpy(dtype=float)
        if np.isnan(converted).sum() > pd.isna(pd.Series(array.ravel())).sum():
            raise ValueError(f"{what} is not numeric")
        array = converted.reshape(array.shape)
    return array.astype(float)


def _is_categorical(values) -> bool:
    if isinstance(values, torch.Tensor):
        return False
    if isinstance(values, pd.Series):
        return not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values))
    array = np.asarray(values)
    return array.dtype == object or array.dtype.kind in "USO"


def _encode_categorical(history, future, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numbers for a categorical covariate of one task (history (T,), future (H,) or empty).

    With one target row: target-mean encoding -- each category becomes the mean of the target
    over the history points where it occurs (NaN for a category never seen with an observed
    target). With several targets: ordinal codes of the task's sorted categories (0, 1, ...).
    Missing values stay NaN."""
    history = pd.Series(np.asarray(history, dtype=object))
    future = pd.Series(np.asarray(future, dtype=object))
    if target.shape[0] == 1:
        frame = pd.DataFrame({"c": history.astype(str).where(history.notna()), "y": target[0]})
        means = frame.dropna().groupby("c")["y"].mean()
        encode = lambda s: s.astype(str).where(s.notna()).map(means).to_numpy(dtype=float)  # noqa: E731
    else:
        categories = sorted(set(history.dropna().astype(str)) | set(future.dropna().astype(str)))
        codes = {c: float(i) for i, c in enumerate(categories)}
        encode = lambda s: s.astype(str).where(s.notna()).map(codes).to_numpy(dtype=float)  # noqa: E731
    return encode(history), encode(future)


def _covariate_dict(value: object, what: str) -> dict:
    """A ``{name: values}`` mapping of covariates (None: none)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            f"{what} must be a dict of name to array, e.g. {{'price': prices}}; got {type(value).__name__}"
        )
    return dict(value)


def parse_task(item, index: int, training: bool = False) -> Task:
    """One element of ``predict``'s input list -> a task (see :meth:`tsmojo.TSMojoPipeline.predict`);
    errors name it ``input {index}``.

    With ``training`` a known-future covariate only needs values over the target's span; any
    future values are dropped."""
    name = f"input {index}"
    if not isinstance(item, Mapping):
        item = {"target": item}
    unknown = set(item) - {"target", "past_covariates", "future_covariates"}
    if unknown:
        raise ValueError(f"{name}: unknown keys {sorted(unknown)} (use target, past_covariates, future_covariates)")
    if "target" not in item:
        raise ValueError(f"{name}: a dict input needs a 'target'")
    target = _as_float(item["target"], f"{name}: target")
    if target.ndim == 1:
        target = target[None]
    if target.ndim != 2 or target.shape[1] == 0 or target.shape[0] == 0:
        raise ValueError(f"{name}: target must be 1-D (T,) or 2-D (D, T) and non-empty, got shape {target.shape}")
    if np.isinf(target).any():
        raise ValueError(f"{name}: target holds infinite values")
    if np.nanmax(np.abs(target), initial=0.0) > _FLOAT32_MAX:
        raise ValueError(f"{name}: target values beyond the float32 range (3.4e38): forecasts are float32")
    empty_rows = ~np.isfinite(target).any(axis=1)
    if empty_rows.any():
        raise ValueError(f"{name}: target row {int(np.argmax(empty_rows))} has no observed value (all NaN)")
    length = target.shape[1]
    past_covariates = _covariate_dict(item.get("past_covariates"), f"{name}: past_covariates")
    future_covariates = _covariate_dict(item.get("future_covariates"), f"{name}: future_covariates")

    past, known, known_future, future_lengths = [], [], [], set()
    for key, values in future_covariates.items():
        size = len(values)
        if key in past_covariates:
            history = past_covariates[key]
            if len(history) != length:
                raise ValueError(f"{name}: past covariate {key!r} has length {len(history)}, target has {length}")
            future = values[:0] if training else values
        elif training and size >= length:
            history, future = values[:length], values[:0]
        elif size > length:
            history, future = values[:length], values[length:]
        else:
            raise ValueError(
                f"{name}: future covariate {key!r} has length {size}; give T+H values (history then future) "
                f"with T={length}, or its history in past_covariates and H future values here"
            )
        if _is_categorical(history) or _is_categorical(future):
            history_f, future_f = _encode_categorical(history, future, target)
        else:
            history_f = _as_float(history, f"{name}: covariate {key!r}")
            future_f = _as_float(future, f"{name}: future covariate {key!r}")
        if history_f.ndim != 1 or future_f.ndim != 1:
            raise ValueError(f"{name}: covariate {key!r} must be 1-D")
        if np.isinf(history_f).any() or np.isinf(future_f).any():
            raise ValueError(f"{name}: covariate {key!r} holds infinite values")
        known.append(history_f)
        known_future.append(future_f)
        future_lengths.add(len(future_f))
    if len(future_lengths) > 1:
        raise ValueError(f"{name}: future covariates have different lengths {sorted(future_lengths)}")
    for key, values in past_covariates.items():
        if key in future_covariates:
            continue
        if len(values) != length:
            raise ValueError(f"{name}: past covariate {key!r} has length {len(values)}, target has {length}")
        if _is_categorical(values):
            values_f, _ = _encode_categorical(values, [], target)
        else:
            values_f = _as_float(values, f"{name}: covariate {key!r}")
        if np.isinf(values_f).any():
            raise ValueError(f"{name}: covariate {key!r} holds infinite values")
        past.append(values_f)
    horizon = future_lengths.pop() if future_lengths else 0
    return Task(
        target=target,
        past=np.stack(past) if past else np.zeros((0, length)),
        known=np.stack(known) if known else np.zeros((0, length)),
        known_future=np.stack(known_future) if known_future else np.zeros((0, horizon)),
    )


def parse_inputs(inputs, training: bool = False) -> list[Task]:
    """``predict``'s whole input (a list of tasks, one dict, or a 1-D/2-D/3-D array) -> tasks."""
    if isinstance(inputs, pd.DataFrame):
        raise ValueError("predict takes arrays or a list of tasks; for a long-format DataFrame use predict_df")
    if isinstance(inputs, pd.Series):
        inputs = [inputs.to_numpy()]  # one series
    if isinstance(inputs, np.ndarray | torch.Tensor):
        array = inputs
        if array.ndim == 1:
            inputs = [array]
        elif array.ndim in (2, 3):
            inputs = list(array)
        else:
            raise ValueError(f"an array input must be 1-D, 2-D (N, T) or 3-D (N, D, T), got shape {tuple(array.shape)}")
    elif isinstance(inputs, Mapping):
        inputs = [inputs]
    return [parse_task(item, i, training) for i, item in enumerate(inputs)]


# -- from the model's quantiles to the requested ones --------------------------------------------


def interpolate_quantiles(
    values: np.ndarray, levels: Sequence[float] | np.ndarray, requested: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Quantiles at ``requested`` levels from quantiles at sorted ``levels`` (last axis).

    Linear in the level between neighbours; levels outside ``[levels[0], levels[-1]]`` are
    clamped to the end values. Levels in ``levels`` are returned exactly."""
    levels = np.asarray(levels, dtype=float)
    requested = np.clip(np.asarray(requested, dtype=float), levels[0], levels[-1])
    low = np.clip(np.searchsorted(levels, requested, side="right") - 1, 0, len(levels) - 2)
    weight = (requested - levels[low]) / (levels[low + 1] - levels[low])
    exact = np.isclose(requested, levels[low], rtol=0, atol=1e-12)
    out = values[..., low] * (1 - weight) + values[..., low + 1] * weight
    return np.where(exact, values[..., low], out)


def mean_weights(levels: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weights w (summing to 1) with ``mean = sum_i w_i q_i``: the integral over u in (0, 1) of the
    quantile function, taken piecewise linear between the model's levels (trapezoid rule) and
    constant beyond the outermost levels."""
    levels = np.asarray(levels, dtype=float)
    weights = np.zeros_like(levels)
    gaps = np.diff(levels)
    weights[:-1] += gaps / 2
    weights[1:] += gaps / 2
    weights[0] += levels[0]
    weights[-1] += 1 - levels[-1]
    return weights
