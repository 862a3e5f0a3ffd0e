"""TSMojoPipeline: forecasting and fine-tuning on numpy arrays and pandas frames.

Every route (``predict``, ``predict_df``, the GluonTS predictor) turns its input into *tasks*
(:mod:`tsmojo.tasks`, :mod:`tsmojo.frames`): one task is one group of rows forecast jointly -- its
targets, its past-only covariates and its known-future covariates. :meth:`TSMojoPipeline.forecast_tasks`
packs tasks into batches and hands them to :meth:`tsmojo.model.TSMojoModel.forecast`; unless
``cross_learning=True`` every task gets its own group id, so a task's forecast never depends on
the other tasks of the call. Fine-tuning lives in :mod:`tsmojo.finetune`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tsmojo.bundled import DEFAULT_MODEL, model_directory
from tsmojo.frames import (
    PreparedFrame,
    SeriesError,
    forecasts_to_frame,
    prepare_frame,
    raise_for_errors,
    resolve_columns,
)
from tsmojo.hardware import autocast, resolve_device, resolve_dtype
from tsmojo.metrics import DEFAULT_QUANTILE_LEVELS, check_quantile_levels, quantile_column
from tsmojo.model import TSMojoModel
from tsmojo.tasks import Task, interpolate_quantiles, mean_weights, parse_inputs

__all__ = ["DEFAULT_QUANTILE_LEVELS", "NonFiniteForecastError", "TSMojoPipeline"]


class NonFiniteForecastError(ValueError):
    """Some forecasts are not finite (inputs near the float32 limit); ``indices``: the tasks concerned."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = list(indices)
        shown = ", ".join(map(str, self.indices[:10])) + (" ..." if len(self.indices) > 10 else "")
        super().__init__(
            f"the forecasts of input(s) {shown} are not finite: their values are too close to the float32 limit "
            "(3.4e38) for forecasts in float32"
        )


# Rows whose largest |value| exceeds this are divided by a power of two before the forward pass (and
# their forecasts multiplied back): the float32 statistics of the model's scaling would overflow.
_RESCALE_ABOVE = 2.0**48


def _row_factors(context: np.ndarray, future: np.ndarray) -> np.ndarray:
    """Per row, a power of two (1 for ordinary values) that brings the row's largest |value| to about 2**32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        biggest = np.fmax(
            np.nanmax(np.abs(context), axis=1, initial=0.0), np.nanmax(np.abs(future), axis=1, initial=0.0)
        )
    biggest = np.nan_to_num(biggest, nan=0.0)
    exponents = np.where(biggest > _RESCALE_ABOVE, np.ceil(np.log2(np.maximum(biggest, 1.0))) - 32, 0)
    return np.ldexp(1.0, exponents.astype(int))


# Default for the most batches a CPU forecast runs at once. Measured on 2 cores only
# (benchmarks/precision.py inference): a cap, since every worker holds the GIL for each operation
# it dispatches.
MAX_BATCH_WORKERS = 4


def batch_workers(num_batches: int, device: torch.device, max_workers: int = MAX_BATCH_WORKERS) -> tuple[int, int]:
    """(workers, intra-op threads per worker) for a call of ``num_batches`` batches on ``device``.

    On a CPU, the caller's intra-op threads (``torch.get_num_threads()``) are split among up to
    ``max_workers`` batches forecast side by side, one thread each where there are enough
    batches. A pass of a few thousand tokens is a long run of small operations that two threads
    share poorly (elementwise work on tensors of a few hundred KB, softmax over 70 keys), so two
    batches on one thread each forecast 14-34% more series per second in bf16 and 8-19% in float32
    than one batch on two threads (``benchmarks/precision.py inference``, a Zen 4 CPU). Each worker
    runs whole batches, so a forecast moves only by the float rounding that any change of thread
    count brings. CUDA runs one batch at a time."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or num_batches < 2 or threads < 2 or max_workers < 2:
        return 1, threads
    workers = min(threads, num_batches, max_workers)
    return workers, threads // workers


def _interval_levels(level: Sequence[float]) -> list[float]:
    """The quantile levels of statsforecast-style intervals: ``[80] -> [0.1, 0.9]``, sorted."""
    levels: set[float] = set()
    for value in level:
        if not 0 < float(value) < 100:
            raise ValueError(f"level must lie strictly between 0 and 100 (percent), got {value}")
        levels |= {round((100 - float(value)) / 200, 9), round((100 + float(value)) / 200, 9)}
    return sorted(levels)


class TSMojoPipeline:
    """Zero-shot forecasting (and fine-tuning) with a :class:`TSMojoModel`.

    Example::

        pipeline = TSMojoPipeline.from_pretrained("tsmojo-mini-v9")
        quantiles, mean = pipeline.predict([np.sin(np.arange(200) / 5)], prediction_length=24)
    """

    fit_history: dict  # only on a pipeline that fit() returns: {"best_val_wql", "val_wql", "steps"}

    def __init__(
        self, model: TSMojoModel, dtype: str | torch.dtype = "auto", max_batch_workers: int = MAX_BATCH_WORKERS
    ) -> None:
        """``dtype`` as in :meth:`from_pretrained`. ``max_batch_workers``: on a CPU, at most this many
        batches are forecast side by side, sharing the caller's torch threads (:func:`batch_workers`);
        1 forecasts one batch at a time on all of them."""
        if max_batch_workers < 1:
            raise ValueError(f"max_batch_workers must be >= 1, got {max_batch_workers}")
        self.model = model.eval()
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_batch_workers = max_batch_workers
        self._warned_context = False

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = DEFAULT_MODEL,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "auto",
        max_batch_workers: int = MAX_BATCH_WORKERS,
    ) -> TSMojoPipeline:
        """Load a bundled model by name (default: ``tsmojo.bundled.DEFAULT_MODEL``) or a directory
        holding ``config.json`` and ``model.safetensors``.

        ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"`` (CUDA when available).
        ``dtype``: compute precision. ``"auto"`` (default) picks bfloat16 where the device runs it
        natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs with bf16) and float32 elsewhere;
        ``torch.float32`` / ``"float32"`` or ``torch.bfloat16`` / ``"bfloat16"`` force one. Weights
        stay float32; bfloat16 runs the encoder under ``torch.autocast``
        (``tsmojo.precision``).
        ``max_batch_workers``: on a CPU, the most batches forecast at once (:func:`batch_workers`).
        """
        model = TSMojoModel.from_pretrained(model_directory(name_or_path), device=resolve_device(device))
        return cls(model, dtype=dtype, max_batch_workers=max_batch_workers)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the model (``config.json`` + ``model.safetensors``) to ``directory``."""
        self.model.save_pretrained(directory)

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    @property
    def model_quantile_levels(self) -> tuple[float, ...]:
        """The levels the model forecasts (its 21 levels 0.01, 0.05, ..., 0.95, 0.99)."""
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
    def forecast_tasks(
        self,
        tasks: Sequence[Task],
        prediction_length: int,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        batch_size: int = 256,
        context_length: int | None = None,
        cross_learning: bool = False,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Forecasts of parsed tasks (:mod:`tsmojo.tasks`): ``(quantiles, mean)`` as in :meth:`predict`.

        Every route ends here; the arguments are those of :meth:`predict`."""
        if prediction_length < 1:
            raise ValueError(f"prediction_length must be >= 1, got {prediction_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        quantile_levels = check_quantile_levels(quantile_levels)
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
            batches, filled = [], 0
            current: list[int] = []
            for i, task in enumerate(tasks):
                if current and filled + task.num_rows > batch_size:
                    batches.append(current)
                    current, filled = [], 0
                current.append(i)
                filled += task.num_rows
            if current:
                batches.append(current)
        quantiles: list[np.ndarray] = [np.empty(0)] * len(tasks)
        means: list[np.ndarray] = [np.empty(0)] * len(tasks)

        def forecast(batch: list[int]) -> None:
            batch_quantiles, batch_means = self._forecast_batch(
                [tasks[i] for i in batch], prediction_length, quantile_levels, context_length, cross_learning
            )
            start = 0
            for i in batch:
                targets = tasks[i].target.shape[0]
                quantiles[i] = batch_quantiles[start : start + targets]
                means[i] = batch_means[start : start + targets]
                start += tasks[i].num_rows

        workers, threads_per_worker = batch_workers(len(batches), self.device, self.max_batch_workers)
        if workers > 1:
            with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(threads_per_worker,)) as pool:
                list(pool.map(forecast, batches))
        else:
            for batch in batches:
                forecast(batch)
        bad = [
            i
            for i, (q, m) in enumerate(zip(quantiles, means, strict=True))
            if not np.isfinite(q).all() or not np.isfinite(m).all()
        ]
        if bad:
            raise NonFiniteForecastError(bad)
        return quantiles, means

    def _forecast_batch(
        self,
        tasks: Sequence[Task],
        prediction_length: int,
        quantile_levels: Sequence[float],
        context_length: int,
        cross_learning: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass over ``tasks``: (quantiles (rows, H, len(quantile_levels)), means (rows, H)),
        float32, for every row of every task in order (covariate rows included)."""
        levels = self.model_quantile_levels
        contexts, futures, roles, groups = [], [], [], []
        for group, task in enumerate(tasks):
            contexts.append(np.concatenate([task.target, task.past, task.known], axis=0)[:, -context_length:])
            future = np.full((task.num_rows, prediction_length), np.nan)
            if task.known.shape[0]:
                future[task.num_rows - task.known.shape[0] :] = task.known_future[:, :prediction_length]
            futures.append(future)
            roles.append(task.roles())
            groups.append(np.full(task.num_rows, 0 if cross_learning else group))
        width = max(c.shape[1] for c in contexts)
        context = np.full((sum(len(c) for c in contexts), width), np.nan)
        start = 0
        for rows in contexts:  # right-aligned, NaN in front
            context[start : start + len(rows), width - rows.shape[1] :] = rows
            start += len(rows)
        future = np.concatenate(futures)
        factors = _row_factors(context, future)
        if (factors != 1).any():  # exact power-of-two rescaling: the model's scaling is affine
            context, future = context / factors[:, None], future / factors[:, None]
        device = self.device
        with torch.no_grad(), autocast(device, self.dtype):
            forecast = self.model.forecast(
                torch.as_tensor(context, dtype=torch.float32, device=device),
                prediction_length,
                group_ids=torch.as_tensor(np.concatenate(groups), device=device),
                roles=torch.as_tensor(np.concatenate(roles), device=device),
                future_covariates=torch.as_tensor(future, dtype=torch.float32, device=device),
            )
        batch_quantiles = forecast.float().cpu().numpy() * factors[:, None, None]
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: reported by forecast_tasks
            requested = interpolate_quantiles(batch_quantiles, levels, quantile_levels).astype(np.float32)
            means = (batch_quantiles @ mean_weights(levels)).astype(np.float32)
        return requested, means

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
        tasks = parse_inputs(inputs)
        for i, task in enumerate(tasks):
            given = task.known_future.shape[1]
            if task.known.shape[0] and given > prediction_length:
                raise ValueError(
                    f"input {i}: known-future covariates cover {given} future steps, more than "
                    f"prediction_length={prediction_length}: give exactly prediction_length future values"
                )
        return self.forecast_tasks(
            tasks, prediction_length, quantile_levels, batch_size, context_length, cross_learning
        )

    def predict_quantiles(
        self,
        inputs,
        prediction_length: int | None = None,
        quantile_levels: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        batch_size: int = 256,
        context_length: int | None = None,
        cross_learning: bool = False,
        **kwargs: object,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Chronos-2's ``predict_quantiles``: same signature and return types, so ported code runs.

        Returns ``(quantiles, mean)``: per task a float32 tensor of shape
        ``(n_variates, prediction_length, len(quantile_levels))`` and one of shape
        ``(n_variates, prediction_length)``. ``prediction_length`` defaults to the model's output
        patch span (as Chronos-2 defaults to its own). Chronos-2 options tsmojo has no use for
        (``limit_prediction_length``...) are accepted and ignored; other inputs as in :meth:`predict`.
        """
        unknown = set(kwargs) - {"limit_prediction_length", "unrolled_quantiles", "batch_size"}
        if unknown:
            raise TypeError(f"predict_quantiles() got unexpected keyword arguments {sorted(unknown)}")
        if prediction_length is None:
            config = self.model.config
            prediction_length = int(config.max_output_patches * config.patch_size)
        quantiles, mean = self.predict(
            inputs, prediction_length, quantile_levels, batch_size, context_length, cross_learning
        )
        return [torch.from_numpy(q) for q in quantiles], [torch.from_numpy(m) for m in mean]

    # -- pandas route ------------------------------------------------------------------------
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
        level: Sequence[float] | None = None,
        alias: str = "tsmojo",
        nixtla_names: bool = False,
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
            level: statsforecast-style prediction intervals, in percent (``[80, 95]``): the
                output then holds ``alias`` (the median) and ``{alias}-lo-{l}`` / ``{alias}-hi-{l}``
                (the ``(100 - l) / 200`` and ``(100 + l) / 200`` quantiles) instead of
                ``predictions`` and the quantile columns, ready for
                ``utilsforecast.evaluation.evaluate(..., level=[80, 95])``. ``quantile_levels`` is
                then ignored.
            alias: the model's name in Nixtla-style columns (default ``"tsmojo"``).
            nixtla_names: name the columns as ``tsmojo forecast --nixtla-names`` does:
                ``tsmojo`` (median) and ``tsmojo-q-10``... (``alias`` replaces ``tsmojo``).

        Returns:
            A frame with the id column, the timestamp column (future timestamps; same names as
            ``df``), ``target_name`` when several targets are given, ``predictions`` (the median)
            and one column per quantile level, named like ``"0.1"`` (or the Nixtla names above).
            Forecast values are float32, the model's precision.

        Raises:
            ValueError: naming every invalid series and its problem (see :mod:`tsmojo.frames`).
        """
        if prediction_length is None:
            if future_df is None:
                raise ValueError("give prediction_length (or a future_df to take it from)")
            id_name = id_column or resolve_columns(df, id_column, timestamp_column, target)[0]
            prediction_length = int(future_df.groupby(id_name).size().max())
        if level is not None:
            quantile_levels = _interval_levels(level)
        levels = check_quantile_levels(quantile_levels)
        prepared = prepare_frame(df, future_df, id_column, timestamp_column, target, prediction_length, freq, fill_gaps)
        frame = self.forecast_frame(prepared, prediction_length, levels, batch_size, context_length, cross_learning)
        if level is not None:
            keys = [
                prepared.id_column,
                prepared.timestamp_column,
                *(["target_name"] if len(prepared.targets) > 1 else []),
            ]
            columns = {"predictions": alias}
            for value in level:
                low, high = _interval_levels([value])
                columns[quantile_column(low)] = f"{alias}-lo-{value:g}"
                columns[quantile_column(high)] = f"{alias}-hi-{value:g}"
            return frame[[*keys, *columns]].rename(columns=columns)
        if nixtla_names:
            from tsmojo.batch import nixtla_names as nixtla_renames

            return frame.rename(columns=nixtla_renames(levels, model=alias))
        return frame

    def forecast_frame(
        self,
        prepared: PreparedFrame,
        prediction_length: int,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        batch_size: int = 256,
        context_length: int | None = None,
        cross_learning: bool = False,
    ) -> pd.DataFrame:
        """:meth:`predict_df`'s forecast frame for a frame already validated and turned into tasks
        (:func:`tsmojo.frames.prepare_frame`, or :func:`tsmojo.frames.tasks_from_clean_frame` for a
        frame validated in collect mode)."""
        # checked before the forecast (which may take long), naming every such series
        reason = "cannot infer its frequency from one timestamp; pass freq="
        raise_for_errors([SeriesError(i, reason) for i in prepared.series_ids if prepared.freqs.get(i) is None], "df")
        levels = list(quantile_levels)
        try:
            quantiles, _ = self.forecast_tasks(
                prepared.tasks, prediction_length, [0.5, *levels], batch_size, context_length, cross_learning
            )
        except NonFiniteForecastError as exc:
            reason = "its forecast is not finite: values too close to the float32 limit (3.4e38)"
            raise_for_errors([SeriesError(prepared.series_ids[i], reason) for i in exc.indices], "df")
            raise
        names = ["predictions", *(quantile_column(q) for q in levels)]
        return forecasts_to_frame(prepared, quantiles, names, prediction_length)

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
        from tsmojo.finetune import FitOptions, fine_tune  # lazy: pulls in Lightning

        def tasks_of(data) -> list[Task]:
            if isinstance(data, pd.DataFrame):
                return prepare_frame(
                    data,
                    None,
                    id_column,
                    timestamp_column,
                    target,
                    freq=freq,
                    fill_gaps=fill_gaps,
                    known_covariates=known_covariates,
                ).tasks
            return parse_inputs(data, training=True)  # known-future values over the target's span suffice

        options = FitOptions(
            num_steps=num_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            trainable=trainable,
            context_length=context_length,
            warmup_steps=warmup_steps,
            weight_decay=weight_decay,
            validate_every=validate_every,
            patience=patience,
            seed=seed,
            output_dir=output_dir,
            trainer_kwargs=trainer_kwargs,
        )
        tasks = tasks_of(inputs)
        validation_tasks = None if validation is None else tasks_of(validation)
        model, fit_history = fine_tune(self.model, tasks, validation_tasks, prediction_length, options)
        tuned = TSMojoPipeline(model.to(self.device).eval(), dtype=self.dtype, max_batch_workers=self.max_batch_workers)
        tuned.fit_history = fit_history
        if output_dir is not None:
            tuned.save_pretrained(output_dir)
        return tuned
