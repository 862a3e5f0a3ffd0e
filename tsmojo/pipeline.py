"""TSMojoPipeline: forecasting and fine-tuning on numpy arrays and pandas frames.

Every route (``predict``, ``predict_df``, the GluonTS predictor) turns its input into *tasks*:
one task is one group of rows forecast jointly -- its targets, its past-only covariates and its
known-future covariates. Tasks are packed into batches and handed to
:meth:`tsmojo.model.TSMojoModel.forecast`; unless ``cross_learning=True`` every task gets its own
group id, so a task's forecast never depends on the other tasks of the call.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tsmojo.model import FUTURE_COVARIATE, PAST_COVARIATE, TARGET, TSMojoModel
from tsmojo.hardware import autocast, resolve_device, resolve_dtype
from tsmojo.validation import (
    FREQ_ATTR,
    SeriesError,
    future_timestamps,
    raise_for_errors,
    resolve_columns,
    validate_future_frame,
    validate_long_frame,
)

__all__ = ["DEFAULT_QUANTILE_LEVELS", "TSMojoPipeline"]

DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BUNDLED_DIR = Path(__file__).resolve().parent / "checkpoints"


# -- tasks ---------------------------------------------------------------------------------------


@dataclass
class _Task:
    """One group. ``target`` (D, T); ``past`` (P, T); ``known`` (F, T) history of known-future
    covariates and ``known_future`` (F, H') their future values (H' may be 0 when training)."""

    target: np.ndarray
    past: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    known: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    known_future: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def length(self) -> int:
        return self.target.shape[1]

    @property
    def num_rows(self) -> int:
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
        return np.repeat(
            [TARGET, PAST_COVARIATE, FUTURE_COVARIATE], [self.target.shape[0], self.past.shape[0], self.known.shape[0]]
        )


def _as_float(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
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


def _parse_task(item, index: int, training: bool = False) -> _Task:
    """One element of ``predict``'s input list -> a task (see :meth:`TSMojoPipeline.predict`).

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
    empty_rows = ~np.isfinite(target).any(axis=1)
    if empty_rows.any():
        raise ValueError(f"{name}: target row {int(np.argmax(empty_rows))} has no observed value (all NaN)")
    length = target.shape[1]
    past_covariates = dict(item.get("past_covariates") or {})
    future_covariates = dict(item.get("future_covariates") or {})

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
    return _Task(
        target=target,
        past=np.stack(past) if past else np.zeros((0, length)),
        known=np.stack(known) if known else np.zeros((0, length)),
        known_future=np.stack(known_future) if known_future else np.zeros((0, horizon)),
    )


def _parse_inputs(inputs, training: bool = False) -> list[_Task]:
    if isinstance(inputs, (np.ndarray, torch.Tensor)):
        array = inputs
        if array.ndim == 1:
            inputs = [array]
        elif array.ndim in (2, 3):
            inputs = list(array)
        else:
            raise ValueError(f"an array input must be 1-D, 2-D (N, T) or 3-D (N, D, T), got shape {tuple(array.shape)}")
    elif isinstance(inputs, Mapping):
        inputs = [inputs]
    return [_parse_task(item, i, training) for i, item in enumerate(inputs)]


# -- quantile helpers ----------------------------------------------------------------------------


def interpolate_quantiles(values: np.ndarray, levels: Sequence[float], requested: Sequence[float]) -> np.ndarray:
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


def mean_weights(levels: Sequence[float]) -> np.ndarray:
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


# -- the pipeline --------------------------------------------------------------------------------


class TSMojoPipeline:
    """Zero-shot forecasting (and fine-tuning) with a :class:`TSMojoModel`.

    Example::

        pipeline = TSMojoPipeline.from_pretrained("tsmojo-mini")
        quantiles, mean = pipeline.predict([np.sin(np.arange(200) / 5)], prediction_length=24)
    """

    def __init__(self, model: TSMojoModel, dtype: str | torch.dtype = "auto") -> None:
        self.model = model.eval()
        self.dtype = resolve_dtype(dtype, self.device)
        self._warned_context = False

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = "tsmojo-mini",
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
    ) -> TSMojoPipeline:
        """Load a bundled model by name (``"tsmojo-mini"``) or a directory holding ``config.json``
        and ``model.safetensors``.

        ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when available).
        ``dtype``: compute precision. ``"auto"`` (default) picks bfloat16 where the device runs it
        natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16) and float32 elsewhere;
        ``torch.float32`` / ``"float32"`` or ``torch.bfloat16`` / ``"bfloat16"`` force one. Weights
        stay float32; bfloat16 runs the encoder under ``torch.autocast``
        (``tsmojo.precision``).
        """
        path = Path(name_or_path)
        if not path.is_dir():
            bundled = BUNDLED_DIR / str(name_or_path)
            if not bundled.is_dir():
                names = sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir()) if BUNDLED_DIR.is_dir() else []
                raise FileNotFoundError(f"{name_or_path!r} is neither a directory nor a bundled model {names}")
            path = bundled
        model = TSMojoModel.from_pretrained(path, device=resolve_device(device))
        return cls(model, dtype=dtype)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the model (``config.json`` + ``model.safetensors``) to ``directory``."""
        self.model.save_pretrained(directory)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def model_quantile_levels(self) -> tuple[float, ...]:
        return tuple(self.model.config.quantiles)

    def resolve_context_length(self, context_length: int | None) -> int:
        """The context, in time steps, that a call uses: ``context_length`` when given, else the
        model's default; more than the model's ``max_context_length`` is cut to it, with a
        warning (once per pipeline) that says what was used."""
        config = self.model.config
        if context_length is None:
            return config.context_length
        context_length = int(context_length)
        if context_length < 1:
            raise ValueError(f"context_length must be >= 1, got {context_length}")
        if context_length > config.max_context_length:
            if not self._warned_context:
                warnings.warn(
                    f"context_length={context_length} exceeds this model's maximum of {config.max_context_length} "
                    f"points: the last {config.max_context_length} points of each series are used",
                    stacklevel=3,
                )
                self._warned_context = True
            return config.max_context_length
        return context_length

    # -- core --------------------------------------------------------------------------------
    def _forecast_tasks(
        self,
        tasks: list[_Task],
        prediction_length: int,
        batch_size: int,
        context_length: int | None,
        cross_learning: bool,
    ) -> list[np.ndarray]:
        """Model quantiles (D, H, Q_model) of each task's targets."""
        if prediction_length < 1:
            raise ValueError(f"prediction_length must be >= 1, got {prediction_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        context_length = self.resolve_context_length(context_length)
        for i, task in enumerate(tasks):
            given = task.known_future.shape[1]
            if task.known.shape[0] and given < prediction_length:
                raise ValueError(
                    f"input {i}: known-future covariates cover {given} future steps, "
                    f"prediction_length is {prediction_length}"
                )
        if cross_learning:
            batches = [list(range(len(tasks)))] if tasks else []
        else:
            batches, current, rows = [], [], 0
            for i, task in enumerate(tasks):
                if current and rows + task.num_rows > batch_size:
                    batches.append(current)
                    current, rows = [], 0
                current.append(i)
                rows += task.num_rows
            if current:
                batches.append(current)
        results: list[np.ndarray] = [np.empty(0)] * len(tasks)
        for batch in batches:
            contexts, futures, roles, groups = [], [], [], []
            for group, i in enumerate(batch):
                task = tasks[i]
                rows = np.concatenate([task.target, task.past, task.known], axis=0)[:, -context_length:]
                future = np.full((task.num_rows, prediction_length), np.nan)
                if task.known.shape[0]:
                    future[task.num_rows - task.known.shape[0] :] = task.known_future[:, :prediction_length]
                contexts.append(rows)
                futures.append(future)
                roles.append(task.roles())
                groups.append(np.full(task.num_rows, 0 if cross_learning else group))
            width = max(c.shape[1] for c in contexts)
            context = np.concatenate(
                [np.pad(c, ((0, 0), (width - c.shape[1], 0)), constant_values=np.nan) for c in contexts]
            )
            device = self.device
            with torch.no_grad(), autocast(device, self.dtype):
                quantiles = self.model.forecast(
                    torch.as_tensor(context, dtype=torch.float32, device=device),
                    prediction_length,
                    group_ids=torch.as_tensor(np.concatenate(groups), device=device),
                    roles=torch.as_tensor(np.concatenate(roles), device=device),
                    future_covariates=torch.as_tensor(np.concatenate(futures), dtype=torch.float32, device=device),
                )
            quantiles = quantiles.float().cpu().numpy()
            offset = 0
            for i in batch:
                results[i] = quantiles[offset : offset + tasks[i].target.shape[0]]
                offset += tasks[i].num_rows
        return results

    def _summarise(
        self, model_quantiles: list[np.ndarray], quantile_levels: Sequence[float]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        levels = self.model_quantile_levels
        weights = mean_weights(levels)
        quantiles = [interpolate_quantiles(q, levels, quantile_levels) for q in model_quantiles]
        means = [q @ weights for q in model_quantiles]
        return quantiles, means

    # -- numpy route -------------------------------------------------------------------------
    def predict(
        self,
        inputs,
        prediction_length: int,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        batch_size: int = 256,
        context_length: int | None = None,
        cross_learning: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Probabilistic forecasts for a list of tasks.

        Args:
            inputs: a list whose elements are each one task:

                * a 1-D array ``(T,)``: a univariate series;
                * a 2-D array ``(D, T)``: D target series forecast jointly (one group);
                * a dict with ``"target"`` (1-D or 2-D as above) and optionally
                  ``"past_covariates"``: ``{name: (T,)}`` and ``"future_covariates"``:
                  ``{name: values}``. A name in ``future_covariates`` is a known-future
                  covariate: either its history is ``past_covariates[name]`` (T values) and
                  ``future_covariates[name]`` holds the H future values, or it is absent from
                  ``past_covariates`` and ``future_covariates[name]`` holds T + H values (history
                  then future). Names only in ``past_covariates`` are past-only covariates.
                  Covariates may be categorical (strings): they are encoded per task, by
                  target-mean encoding with one target and by ordinal codes with several.

                A single array is also accepted: 1-D is one series, 2-D ``(N, T)`` is N
                univariate series, 3-D ``(N, D, T)`` is N multivariate tasks. NaN marks missing
                values; series may have different lengths. Torch tensors work like arrays.
            prediction_length: H, any length (beyond the model's head the forecast unrolls,
                feeding its median back).
            quantile_levels: levels to return. Levels outside the model's 21 levels
                (0.01, 0.05, ..., 0.95, 0.99) are interpolated linearly in the level between the
                two neighbouring levels; levels below 0.01 / above 0.99 get the 0.01 / 0.99 values.
            batch_size: most rows (targets + covariates) per forward pass; a task is never split.
                Ignored with ``cross_learning=True`` (everything is one forward pass).
            context_length: use the last ``context_length`` points of each series (default: the
                model's ``context_length``; at most its ``max_context_length``, with a warning).
            cross_learning: False (default): every task is its own group, so a forecast never
                depends on the other tasks of the call. True: all tasks form a single group and
                share information.

        Returns:
            ``(quantiles, mean)``: per task, ``quantiles[i]`` of shape (D, H, len(quantile_levels))
            and ``mean[i]`` of shape (D, H) (D = 1 for a univariate task). The mean is the
            integral of the forecast quantile function: the model's 21 quantiles joined linearly,
            held constant below 0.01 and above 0.99 (see :func:`mean_weights`).
        """
        tasks = _parse_inputs(inputs)
        model_quantiles = self._forecast_tasks(tasks, prediction_length, batch_size, context_length, cross_learning)
        return self._summarise(model_quantiles, quantile_levels)

    # -- pandas route ------------------------------------------------------------------------
    def _frame_tasks(
        self,
        df: pd.DataFrame,
        future_df: pd.DataFrame | None,
        id_column: str | None,
        timestamp_column: str | None,
        target,
        prediction_length: int,
        freq,
        fill_gaps: bool,
        known_covariates: Sequence[str] | None = None,
    ):
        id_column, timestamp_column, targets = resolve_columns(df, id_column, timestamp_column, target)
        clean, errors = validate_long_frame(df, id_column, timestamp_column, targets, freq=freq, fill_gaps=fill_gaps)
        raise_for_errors(errors, "df")
        freqs = clean.attrs.pop(FREQ_ATTR, {})  # pandas would deep-copy attrs on every operation
        clean.attrs = {}
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
        # ``clean`` is sorted by id: slice numpy columns per series instead of grouping frames.
        clean_ids = clean[id_column].to_numpy()
        starts = np.flatnonzero(np.r_[True, clean_ids[1:] != clean_ids[:-1]]) if len(clean_ids) else np.zeros(0, int)
        ends = np.r_[starts[1:], len(clean_ids)].astype(int) if len(clean_ids) else starts
        last_stamps = clean[timestamp_column].iloc[ends - 1].tolist()
        bounds = {clean_ids[b]: (b, e, last) for b, e, last in zip(starts.tolist(), ends.tolist(), last_stamps)}
        target_values = clean[targets].to_numpy(dtype=float)
        covariate_values = {c: clean[c].to_numpy() for c in covariates}
        order = [i for i in pd.unique(df[id_column].dropna()) if i in bounds]
        ids, tasks, lasts = [], [], []
        for series_id in order:
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
                tasks.append(_parse_task(item, 0))
            except ValueError as exc:
                raise ValueError(f"series {series_id!r}: {str(exc).removeprefix('input 0: ')}") from None
            ids.append(series_id)
            lasts.append(last)
        return id_column, timestamp_column, targets, ids, tasks, lasts, freqs

    def predict_df(
        self,
        df: pd.DataFrame,
        future_df: pd.DataFrame | None = None,
        id_column: str | None = None,
        timestamp_column: str | None = None,
        target: str | Sequence[str] | None = None,
        prediction_length: int | None = None,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        freq: str | int | None = None,
        cross_learning: bool = False,
        fill_gaps: bool = False,
        batch_size: int = 256,
        context_length: int | None = None,
    ) -> pd.DataFrame:
        """Forecast every series of a long-format frame.

        Args:
            df: one row per (series, timestamp). Column names are detected among
                ``unique_id/ds/y``, ``item_id/timestamp/target`` and ``id/timestamp/target`` unless
                given. Timestamps are datetimes or integers (an integer index: the future is
                ``last + 1..H`` times the series' step). Every other column is a covariate; numeric
                columns are used as they are, categorical/object/string columns are encoded per
                series (target-mean encoding with one target, ordinal codes with several).
            future_df: known-future covariates: one row per series and future timestamp (exactly
                ``prediction_length`` rows per series, at the timestamps following its history).
                Its covariate columns are the known-future covariates; the other covariates of
                ``df`` are past-only. Every column must also be in ``df``.
            target: a column name, or a list of names forecast jointly per series (output then
                has a ``target_name`` column).
            prediction_length: H; defaults to the rows per series of ``future_df``.
            quantile_levels: output quantile levels (interpolated as in :meth:`predict`).
            freq: pandas alias in any spelling (``H``/``h``, ``T``/``min``, ``M``/``ME``, ``MS``,
                ``W-SUN``, ``B``, ``QS-DEC``...) or integer step; inferred per series when None.
            cross_learning, batch_size, context_length: as in :meth:`predict`.
            fill_gaps: insert missing timestamps as NaN instead of raising.

        Returns:
            A frame with the id column, the timestamp column (future timestamps; same names as
            ``df``), ``target_name`` when several targets are given, ``predictions`` (the median)
            and one column per quantile level, named like ``"0.1"``.

        Raises:
            ValueError: naming every invalid series and its problem (see :mod:`tsmojo.validation`).
        """
        if prediction_length is None:
            if future_df is None:
                raise ValueError("give prediction_length (or a future_df to take it from)")
            counts = future_df.groupby(id_column or resolve_columns(df, id_column, timestamp_column, target)[0]).size()
            prediction_length = int(counts.max())
        id_column, timestamp_column, targets, ids, tasks, lasts, freqs = self._frame_tasks(
            df, future_df, id_column, timestamp_column, target, prediction_length, freq, fill_gaps
        )
        # checked before the forecast (which may take long), naming every such series
        reason = "cannot infer its frequency from one timestamp; pass freq="
        raise_for_errors([SeriesError(i, reason) for i in ids if freqs.get(i) is None], "df")
        model_quantiles = self._forecast_tasks(tasks, prediction_length, batch_size, context_length, cross_learning)
        levels = list(quantile_levels)
        quantiles, _ = self._summarise(model_quantiles, [*levels, 0.5])
        names = [_level_name(q) for q in levels]
        if not ids:
            columns = [id_column, timestamp_column] + (["target_name"] if len(targets) > 1 else [])
            return pd.DataFrame(columns=[*columns, "predictions", *names])
        # Series usually share their last timestamp: build each distinct future grid once.
        grids: dict[tuple, pd.Index] = {}
        stamps = []
        for series_id, last in zip(ids, lasts, strict=True):
            key = (last, str(getattr(last, "tz", None)), freqs[series_id])
            if key not in grids:
                grid = future_timestamps(last, freqs[series_id], prediction_length)
                if isinstance(grid, pd.DatetimeIndex) and isinstance(last, pd.Timestamp) and last.unit != grid.unit:
                    grid = grid.as_unit(last.unit)
                grids[key] = grid
            stamps.extend([grids[key]] * len(targets))
        rows_per_series = len(targets) * prediction_length
        values = np.stack(quantiles).reshape(len(ids) * rows_per_series, len(levels) + 1)
        out = {
            id_column: pd.Series(ids).repeat(rows_per_series).to_numpy(),
            timestamp_column: stamps[0].append(stamps[1:]) if len(stamps) > 1 else stamps[0],
        }
        if len(targets) > 1:
            out["target_name"] = np.repeat(np.tile(np.asarray(targets, dtype=object), len(ids)), prediction_length)
        out["predictions"] = values[:, -1]
        out.update({name: values[:, k] for k, name in enumerate(names)})
        return pd.DataFrame(out)

    # -- fine-tuning -------------------------------------------------------------------------
    def fit(
        self,
        inputs,
        prediction_length: int,
        validation=None,
        num_steps: int = 500,
        learning_rate: float = 1e-4,
        batch_size: int = 32,
        trainable: str = "all",
        context_length: int | None = None,
        warmup_steps: int | None = None,
        weight_decay: float = 0.01,
        validate_every: int = 50,
        patience: int | None = None,
        seed: int = 0,
        output_dir: str | Path | None = None,
        known_covariates: Sequence[str] | None = None,
        id_column: str | None = None,
        timestamp_column: str | None = None,
        target: str | Sequence[str] | None = None,
        freq: str | int | None = None,
        fill_gaps: bool = False,
        trainer_kwargs: dict | None = None,
    ) -> TSMojoPipeline:
        """Fine-tune a copy of the model; return a new pipeline (``self`` is left untouched).

        Args:
            inputs: training data, either in :meth:`predict`'s list format (for a dict, a name in
                ``future_covariates`` marks a known-future covariate; its values over the
                target's span are used, any extra future values are ignored) or a long frame as
                in :meth:`predict_df` (``known_covariates`` names its known-future columns; the
                other extra columns are past-only covariates).
            prediction_length: H of the training windows (the head covers
                ``max_output_patches * patch_size`` steps per pass; longer H trains that part).
            validation: optional data in the same format; each series' last H points are
                scored (WQL) every ``validate_every`` steps, the best weights are kept and,
                with ``patience``, training stops after that many checks without improvement.
            num_steps: optimizer steps. Each step draws ``batch_size`` random windows (random
                task, random cut point) from ``inputs``.
            learning_rate, weight_decay, warmup_steps: AdamW with linear warm-up (default 10% of
                the steps) and cosine decay to 10%.
            trainable: ``"all"`` or ``"head"`` (quantile head + last block).
            context_length: longest context of a training window (default: the model's).
            seed: seeds window sampling and torch (the global torch RNG state is restored after).
            output_dir: where to save the fine-tuned model (``save_pretrained``) and where
                Lightning may write; by default a temporary directory that is removed.
            trainer_kwargs: extra ``lightning.pytorch.Trainer`` arguments.
        """
        import lightning.pytorch as pl

        from tsmojo.lightning_module import TSMojoLightningModule

        tasks = self._training_tasks(inputs, known_covariates, id_column, timestamp_column, target, freq, fill_gaps)
        validation_tasks = (
            None
            if validation is None
            else self._training_tasks(
                validation, known_covariates, id_column, timestamp_column, target, freq, fill_gaps
            )
        )
        model = copy.deepcopy(self.model).float().train()
        config = model.config
        context_length = min(context_length or config.context_length, config.max_context_length)
        warmup_steps = max(1, num_steps // 10) if warmup_steps is None else warmup_steps
        module = TSMojoLightningModule(
            model,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            max_steps=num_steps,
            trainable=trainable,
        )
        train_data = _WindowStream(tasks, prediction_length, context_length, batch_size, seed)
        loader_kwargs = {"batch_size": None, "num_workers": 0}
        train_loader = torch.utils.data.DataLoader(train_data, **loader_kwargs)
        callbacks: list = []
        val_loader = None
        best = _keep_best_callback()
        if validation_tasks:
            batches = list(_validation_batches(validation_tasks, prediction_length, context_length, batch_size))
            val_loader = torch.utils.data.DataLoader(_ListDataset(batches), **loader_kwargs)
            callbacks.append(best)
            if patience is not None:
                callbacks.append(pl.callbacks.EarlyStopping(monitor="val_wql", mode="min", patience=patience))
        with contextlib.ExitStack() as stack:
            root = output_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="tsmojo-fit-"))
            stack.enter_context(torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []))
            torch.manual_seed(seed)
            kwargs = {
                "max_steps": num_steps,
                "accelerator": "gpu" if self.device.type == "cuda" else "cpu",
                "devices": [self.device.index or 0] if self.device.type == "cuda" else 1,
                "logger": False,
                "enable_checkpointing": False,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "default_root_dir": str(root),
                "num_sanity_val_steps": 0,
                "check_val_every_n_epoch": None,
                "val_check_interval": min(validate_every, num_steps),
                "limit_val_batches": None if val_loader is not None else 0,
                "callbacks": callbacks,
            }
            kwargs.update(trainer_kwargs or {})
            trainer = pl.Trainer(**kwargs)
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
        if best.state is not None:
            model.load_state_dict(best.state)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        tuned = TSMojoPipeline(model.to(self.device).eval(), dtype=self.dtype)
        tuned.fit_history = {"best_val_wql": best.score, "val_wql": best.history, "steps": trainer.global_step}
        if output_dir is not None:
            tuned.save_pretrained(output_dir)
        return tuned

    def _training_tasks(self, data, known_covariates, id_column, timestamp_column, target, freq, fill_gaps):
        if isinstance(data, pd.DataFrame):
            *_, tasks, _, _ = self._frame_tasks(
                data, None, id_column, timestamp_column, target, 1, freq, fill_gaps, known_covariates
            )
            return tasks
        return _parse_inputs(data, training=True)


def _level_name(level: float) -> str:
    """Column name of a quantile level: 0.1 -> "0.1", 0.05 -> "0.05"."""
    return f"{float(level):.6g}"


# -- training data -------------------------------------------------------------------------------


def _collate(windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    width = max(1, max(c.shape[1] for c, _, _ in windows))
    context = np.concatenate(
        [np.pad(c, ((0, 0), (width - c.shape[1], 0)), constant_values=np.nan) for c, _, _ in windows]
    )
    groups = np.concatenate([np.full(len(r), g) for g, (_, _, r) in enumerate(windows)])
    return {
        "context": torch.as_tensor(context, dtype=torch.float32),
        "future": torch.as_tensor(np.concatenate([f for _, f, _ in windows]), dtype=torch.float32),
        "roles": torch.as_tensor(np.concatenate([r for _, _, r in windows]), dtype=torch.long),
        "group_ids": torch.as_tensor(groups, dtype=torch.long),
    }


class _WindowStream(torch.utils.data.IterableDataset):
    """Endless batches of random training windows: a random task, a random cut point that leaves
    at least one context point and (when the series is long enough) a full horizon after it."""

    def __init__(self, tasks: list[_Task], horizon: int, context_length: int, batch_size: int, seed: int) -> None:
        usable = [t for t in tasks if t.length >= 2]
        if not usable:
            raise ValueError("fit needs at least one series with 2 or more points")
        if len(usable) < len(tasks):
            dropped = len(tasks) - len(usable)
            warnings.warn(f"fit: {dropped} training series with a single point are not used", stacklevel=3)
        self.tasks, self.horizon, self.context_length = usable, horizon, context_length
        self.batch_size, self.seed = batch_size, seed
        lengths = np.array([t.length for t in usable], dtype=float)
        self.weights = np.sqrt(lengths) / np.sqrt(lengths).sum()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.seed)
        while True:
            windows = []
            for index in rng.choice(len(self.tasks), size=self.batch_size, p=self.weights):
                task = self.tasks[index]
                low = min(task.length - 1, 16)
                high = max(low, task.length - self.horizon)
                end = int(rng.integers(low, high + 1))
                windows.append(task.window(end, self.horizon, self.context_length))
            yield _collate(windows)


def _validation_batches(tasks: list[_Task], horizon: int, context_length: int, batch_size: int):
    windows = [t.window(t.length - horizon, horizon, context_length) for t in tasks if t.length > horizon]
    if not windows:
        raise ValueError(f"validation series must be longer than prediction_length={horizon}")
    if len(windows) < len(tasks):
        warnings.warn(
            f"fit: {len(tasks) - len(windows)} validation series not longer than prediction_length={horizon} "
            "are not scored",
            stacklevel=3,
        )
    for start in range(0, len(windows), batch_size):
        yield _collate(windows[start : start + batch_size])


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        return self.items[index]


def _keep_best_callback():
    """A Lightning callback keeping (in memory) the weights with the lowest ``val_wql`` seen so far.
    Built lazily so that importing the pipeline does not import Lightning."""
    import lightning.pytorch as pl

    class KeepBest(pl.Callback):
        def __init__(self) -> None:
            self.state: dict | None = None
            self.score = math.inf
            self.history: list[float] = []

        def on_validation_end(self, trainer, pl_module) -> None:
            value = trainer.callback_metrics.get("val_wql")
            if value is None or trainer.sanity_checking:
                return
            value = float(value)
            self.history.append(value)
            if value < self.score:
                self.score = value
                self.state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}

    return KeepBest()
