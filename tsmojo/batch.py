"""Streaming batch forecasting: the engine behind ``tsmojo forecast``.

The input (CSV or Parquet, long format) is read in chunks of whole series (:mod:`tsmojo.io`), so
peak memory is bounded by the chunk size, not by the file. Each chunk goes through one step,
:func:`forecast_chunk` (validated -- bad series are collected, never fatal -- then forecast), and
is written as a *part* file into a sidecar directory next to the output. When every chunk is
done, the parts are merged into a temporary file in the output's directory which is then
atomically renamed over the output, and the sidecar is removed. The Ray engine
(:mod:`tsmojo.ray_engine`) runs the same step on its workers.

Nothing is lost: every series id of the input ends either in the output or in
``OUTPUT.errors.csv`` (id, reason). An interrupted run (crash, ``kill -9``, full disk) continues
with ``resume=True``: finished chunks are not recomputed. Chunk ``k`` always holds the same series
(the ``batch_size`` series after the first ``k * batch_size``), so a resumed run writes exactly the
bytes an uninterrupted run writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tsmojo.bundled import DEFAULT_MODEL
from tsmojo.frames import SeriesError, resolve_columns, validate_future_frame, validate_long_frame
from tsmojo.frequency import normalize_freq
from tsmojo.io import (
    InputError,
    OutputLock,
    Sidecar,
    file_format,
    id_key,
    input_columns,
    iter_frames,
    iter_series_chunks,
    merge_parts,
    parse_text_timestamps,
    read_series_frames,
    same_id,
)
from tsmojo.metrics import DEFAULT_QUANTILE_LEVELS, columns_by_level, quantile_column

__all__ = [
    "ChunkResult",
    "ForecastJob",
    "ForecastSummary",
    "FutureCovariates",
    "LocalForecaster",
    "Progress",
    "forecast_chunk",
    "job_fingerprint",
    "load_future",
    "nixtla_names",
    "order_forecasts",
    "resolve_job_columns",
    "run_forecast",
    "write_output",
]

MANIFEST_VERSION = 1


def nixtla_names(quantiles: Sequence[float], model: str = "tsmojo") -> dict[str, str]:
    """Column renames to the Nixtla convention: ``predictions -> tsmojo``, ``0.1 -> tsmojo-q-10``."""
    names = {"predictions": model}
    for q in quantiles:
        names[quantile_column(q)] = f"{model}-q-{round(q * 100, 6):g}"
    return names


# -- progress --------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr (series done, series/s, ETA). Silent unless stderr is a
    TTY; ``enabled=False`` (``--quiet``) silences it too."""

    def __init__(self, total: int | None, enabled: bool = True, label: str = "forecast", stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total, self.label = total, label
        self.done = self.skipped = 0
        self.start = time.monotonic()
        self._last_draw = 0.0

    def update(self, series: int, skipped: bool = False) -> None:
        self.done += series
        if skipped:
            self.skipped += series
        self._draw()

    def _draw(self, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        elapsed = max(now - self.start, 1e-9)
        rate = (self.done - self.skipped) / elapsed
        if self.total:
            fraction = min(self.done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            eta = (self.total - self.done) / rate if rate > 0 else math.inf
            eta_text = f"ETA {eta:,.0f}s" if math.isfinite(eta) else "ETA ?"
            line = f"{self.label} [{bar:<30}] {self.done:,}/{self.total:,} series  {rate:,.1f} series/s  {eta_text}"
        else:
            line = f"{self.label} {self.done:,} series  {rate:,.1f} series/s"
        self.stream.write("\r" + line + " " * 4)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(final=True)
            self.stream.write("\n")
            self.stream.flush()


# -- the job ---------------------------------------------------------------------------------------


@dataclass
class ForecastJob:
    """Everything ``tsmojo forecast`` was asked to do. Fields that change the numbers are part of the
    resume fingerprint."""

    input: Path
    output: Path
    prediction_length: int
    id_column: str | None = None
    timestamp_column: str | None = None
    target: list[str] | None = None
    future_covariates: Path | None = None
    freq: str | None = None
    quantiles: tuple[float, ...] = DEFAULT_QUANTILE_LEVELS
    model: str = DEFAULT_MODEL
    context_length: int | None = None
    batch_size: int = 256
    device: str = "auto"
    dtype: str = "auto"
    fill_gaps: bool = False
    min_length: int = 3
    nixtla_names: bool = False
    resume: bool = False
    quiet: bool = False
    plot_series: int = 4
    errors: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.input, self.output = Path(self.input), Path(self.output)
        if self.future_covariates is not None:
            self.future_covariates = Path(self.future_covariates)
        if self.prediction_length < 1:
            raise InputError(f"the horizon must be >= 1, got {self.prediction_length}")
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {self.batch_size}")
        self.quantiles = tuple(float(q) for q in self.quantiles)
        if not self.quantiles or any(not 0 < q < 1 for q in self.quantiles):
            raise InputError(f"quantiles must lie strictly between 0 and 1, got {list(self.quantiles)}")
        if list(self.quantiles) != sorted(set(self.quantiles)):
            raise InputError(f"quantiles must be increasing and distinct, got {list(self.quantiles)}")

    @property
    def errors_path(self) -> Path:
        return self.output.with_name(self.output.name + ".errors.csv")

    @property
    def sidecar(self) -> Path:
        return self.output.with_name(self.output.name + ".tsmojo-parts")

    @property
    def output_columns(self) -> list[str]:
        names = ["predictions", *(quantile_column(q) for q in self.quantiles)]
        if self.nixtla_names:
            renames = nixtla_names(self.quantiles)
            names = [renames[n] for n in names]
        return names


@dataclass
class ForecastSummary:
    output: Path
    errors_path: Path | None
    num_series: int
    num_forecast: int
    num_errors: int
    seconds: float
    resumed_chunks: int = 0
    plot_history: pd.DataFrame | None = None
    plot_forecasts: pd.DataFrame | None = None
    columns: tuple[str, str, list[str]] | None = None


def _file_identity(path: Path | None) -> dict | None:
    if path is None:
        return None
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _model_identity(model: str) -> dict:
    """The model name plus the size/mtime of its weights, so a retrained model invalidates a resume."""
    candidates = [Path(model), Path(__file__).parent / "checkpoints" / model]
    for directory in candidates:
        weights = directory / "model.safetensors"
        if weights.is_file():
            stat = weights.stat()
            return {
                "model": model,
                "weights": str(weights.resolve()),
                "size": stat.st_size,
                "mtime_ns": stat.st_mtime_ns,
            }
    return {"model": model}


def job_fingerprint(job: ForecastJob, columns: tuple[str, str, list[str]], num_series: int) -> dict:
    """What a resumed run must share with the interrupted one: the input and model files, every
    option that changes the numbers, and the number of series."""
    options = {
        k: v
        for k, v in dataclasses.asdict(job).items()
        if k not in {"input", "output", "future_covariates", "resume", "quiet", "plot_series", "errors", "device"}
    }
    options["columns"] = list(columns)
    return {
        "version": MANIFEST_VERSION,
        "input": _file_identity(job.input),
        "future_covariates": _file_identity(job.future_covariates),
        "model": _model_identity(job.model),
        "options": json.loads(json.dumps(options, default=str)),
        "num_series": num_series,
    }


# -- forecasting one chunk -------------------------------------------------------------------------

ChunkForecaster = Callable[[pd.DataFrame, "pd.DataFrame | None"], "tuple[pd.DataFrame, list]"]


class LocalForecaster:
    """Validates a chunk (collect mode) and forecasts its good series with :class:`TSMojoPipeline`.

    If the pipeline fails on a whole chunk, each series is retried alone so one bad series cannot
    take its neighbours down; the ones that still fail are reported with the exception message.
    """

    def __init__(self, job: ForecastJob, columns: tuple[str, str, list[str]]) -> None:
        self.job = job
        self.id_column, self.timestamp_column, self.targets = columns
        self._pipeline = None

    @property
    def pipeline(self):
        """The pipeline, loaded on first use (each Ray actor loads its own)."""
        if self._pipeline is None:
            from tsmojo.pipeline import TSMojoPipeline

            self._pipeline = TSMojoPipeline.from_pretrained(
                self.job.model, device=self.job.device, dtype=self.job.dtype
            )
        return self._pipeline

    def _predict(self, history: pd.DataFrame, future: pd.DataFrame | None) -> pd.DataFrame:
        job = self.job
        target = self.targets[0] if len(self.targets) == 1 else self.targets
        return self.pipeline.predict_df(
            history,
            future_df=future,
            id_column=self.id_column,
            timestamp_column=self.timestamp_column,
            target=target,
            prediction_length=job.prediction_length,
            quantile_levels=list(job.quantiles),
            freq=job.freq,
            cross_learning=False,
            fill_gaps=job.fill_gaps,
            batch_size=job.batch_size,
            context_length=job.context_length,
        )

    def __call__(self, chunk: pd.DataFrame, future: pd.DataFrame | None) -> tuple[pd.DataFrame, list]:
        id_column = self.id_column
        chunk = parse_text_timestamps(chunk, self.timestamp_column)
        clean, errors = validate_long_frame(
            chunk, id_column, self.timestamp_column, self.targets, freq=self.job.freq, fill_gaps=self.job.fill_gaps
        )
        errors = list(errors)
        if self.job.min_length > 1 and len(clean):
            observed = clean[self.targets].notna().any(axis=1).groupby(clean[id_column], sort=False).sum()
            short = observed[observed < self.job.min_length]
            if len(short):
                errors.extend(
                    SeriesError(
                        series_id,
                        f"too short: {int(n)} observed value(s), need at least {self.job.min_length} (--min-length)",
                    )
                    for series_id, n in short.items()
                )
                clean = clean[~clean[id_column].isin(short.index)].reset_index(drop=True)
        if future is not None and len(clean):
            covariates = [c for c in future.columns if c not in (id_column, self.timestamp_column)]
            try:
                future, future_errors = validate_future_frame(
                    future, clean, id_column, self.timestamp_column, self.job.prediction_length, covariates
                )
            except ValueError as exc:
                raise InputError(f"--future-covariates: {exc}") from exc
            if future_errors:
                errors.extend(future_errors)
                bad = {e.series_id for e in future_errors}
                clean = clean[~clean[id_column].isin(bad)].reset_index(drop=True)
            future = future[future[id_column].isin(clean[id_column].unique())].reset_index(drop=True)
        if clean.empty:
            return pd.DataFrame(), errors
        # validate_long_frame leaves a per-series dict in ``attrs``, which pandas deep-copies on every
        # operation (quadratic in the chunk size); predict_df validates again anyway.
        clean.attrs = {}
        if future is not None:
            future.attrs = {}
        try:
            forecasts = self._predict(clean, future)
        except Exception:  # noqa: BLE001 - isolate the failing series below
            pieces = []
            for series_id, part in clean.groupby(id_column, sort=False):
                series_future = None if future is None else future[future[id_column] == series_id]
                try:
                    pieces.append(self._predict(part.reset_index(drop=True), series_future))
                except Exception as exc:  # noqa: BLE001
                    errors.append(SeriesError(series_id, f"forecast failed: {type(exc).__name__}: {exc}"))
            forecasts = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
        return forecasts, errors


def resolve_job_columns(job: ForecastJob, columns: list[str]) -> tuple[str, str, list[str]]:
    """The id, timestamp and target columns of the job's input, given its column names."""
    try:
        return resolve_columns(pd.DataFrame(columns=columns), job.id_column, job.timestamp_column, job.target)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


@dataclass
class FutureCovariates:
    """The ``--future-covariates`` file, with the rows of each series found once."""

    frame: pd.DataFrame
    rows: dict  # series id -> row positions

    @classmethod
    def of(cls, frame: pd.DataFrame, id_column: str) -> FutureCovariates:
        """Index the rows of ``frame`` by series."""
        return cls(frame, frame.groupby(id_column, sort=False, dropna=False).indices)

    def of_series(self, series_ids: Iterable) -> pd.DataFrame:
        """The rows of the given series, in file order."""
        positions = [self.rows[k] for k in series_ids if k in self.rows]
        rows = np.concatenate(positions) if positions else np.array([], dtype=int)
        return self.frame.iloc[np.sort(rows)].reset_index(drop=True)


def load_future(job: ForecastJob, id_column: str) -> FutureCovariates | None:
    """The job's known-future covariates, or None without ``--future-covariates``."""
    if job.future_covariates is None:
        return None
    path = job.future_covariates
    if not path.is_file():
        raise InputError(f"--future-covariates: {path} does not exist")
    future = pd.concat(list(iter_frames(path, id_column=id_column)), ignore_index=True)
    if id_column not in future.columns:
        raise InputError(f"--future-covariates: {path} has no id column {id_column!r} (has {list(future.columns)})")
    return FutureCovariates.of(future, id_column)


def order_forecasts(forecasts: pd.DataFrame, id_column: str, timestamp_column: str, order: Sequence) -> pd.DataFrame:
    """Rows of ``forecasts`` with series in ``order`` (input order), then by target (several
    targets), then by time."""
    if forecasts.empty:
        return forecasts
    rank = {id_key(v): i for i, v in enumerate(order)}
    keys = np.array([rank.get(id_key(v), len(rank)) for v in forecasts[id_column]])
    stamps = forecasts[timestamp_column].to_numpy()
    targets = (
        pd.factorize(forecasts["target_name"])[0] if "target_name" in forecasts.columns else np.zeros(len(keys), int)
    )
    return forecasts.iloc[np.lexsort((stamps, targets, keys))].reset_index(drop=True)


def _finish_frame(forecasts: pd.DataFrame, job: ForecastJob, columns: tuple[str, str, list[str]]) -> pd.DataFrame:
    """Select and name the output columns: id, timestamp, [target_name], predictions, quantiles."""
    id_column, timestamp_column, _ = columns
    if forecasts.empty:
        return forecasts
    by_level = columns_by_level(forecasts.columns)
    quantile_names = []
    renames = {}
    for q in job.quantiles:
        source = by_level.get(round(q, 9))
        if source is None:
            raise RuntimeError(f"the pipeline returned no column for quantile {q} (columns {list(forecasts.columns)})")
        renames[source] = quantile_column(q)
        quantile_names.append(quantile_column(q))
    frame = forecasts.rename(columns=renames)
    keep = [id_column, timestamp_column]
    if "target_name" in frame.columns and len(columns[2]) > 1:
        keep.append("target_name")
    keep += ["predictions", *quantile_names]
    frame = frame[keep]
    # The model computes in float32: more digits would be noise (and double the file size).
    frame = frame.astype({name: "float32" for name in ["predictions", *quantile_names]})
    if job.nixtla_names:
        frame = frame.rename(columns=nixtla_names(job.quantiles))
    return frame.reset_index(drop=True)


def _complete_errors(order: list, forecasts: pd.DataFrame, errors: list, id_column: str) -> list:
    """Errors in input order, plus one for any series that neither got a forecast nor an error."""
    reported = {id_key(e.series_id) for e in errors}
    produced = {id_key(v) for v in pd.unique(forecasts[id_column])} if len(forecasts) else set()
    rank = {id_key(v): i for i, v in enumerate(order)}
    errors = list(errors)
    for series_id in order:
        key = id_key(series_id)
        if key not in reported and key not in produced:
            errors.append(SeriesError(series_id, "no forecast was returned for this series"))
    return sorted(errors, key=lambda e: rank.get(id_key(e.series_id), -1))


@dataclass
class ChunkResult:
    """One chunk forecast: its series (in input order), their forecast rows and their errors."""

    series_ids: list
    forecasts: pd.DataFrame
    errors: list[SeriesError]


def forecast_chunk(
    chunk: pd.DataFrame,
    job: ForecastJob,
    columns: tuple[str, str, list[str]],
    forecaster: ChunkForecaster,
    future: FutureCovariates | None = None,
) -> ChunkResult:
    """The step both engines run on each chunk of whole series: forecast it with ``forecaster``,
    name and order the output rows as in the input, and give every series without a forecast
    an error."""
    id_column, timestamp_column, _ = columns
    order = list(pd.unique(chunk[id_column]))
    forecasts, errors = forecaster(chunk, None if future is None else future.of_series(order))
    forecasts = order_forecasts(_finish_frame(forecasts, job, columns), id_column, timestamp_column, order)
    return ChunkResult(order, forecasts, _complete_errors(order, forecasts, errors, id_column))


def write_output(
    job: ForecastJob, sidecar: Sidecar, num_chunks: int, columns: tuple[str, str, list[str]], plot_ids: Iterable = ()
) -> ForecastSummary:
    """Merge the sidecar's finished parts into the job's output and errors file (see
    :func:`tsmojo.io.merge_parts`)."""
    id_column, timestamp_column, _ = columns
    merged = merge_parts(
        sidecar,
        num_chunks,
        job.output,
        job.errors_path,
        id_column,
        [id_column, timestamp_column, *job.output_columns],
        plot_ids,
    )
    return ForecastSummary(
        output=job.output,
        errors_path=merged.errors_path,
        num_series=0,
        num_forecast=merged.num_forecast,
        num_errors=merged.num_errors,
        seconds=0.0,
        plot_forecasts=merged.plot_forecasts,
        columns=columns,
    )


def run_forecast(
    job: ForecastJob,
    forecaster: ChunkForecaster | None = None,
    log: Callable[[str], None] | None = None,
) -> ForecastSummary:
    """Run a forecast job end to end; see the module docstring."""
    started = time.monotonic()
    log = log or (lambda message: None)
    check_output(job)
    with OutputLock(job.output):
        return _run_locked(job, forecaster, log, started)


def check_output(job: ForecastJob) -> None:
    """Refuse, before any work, an output that would overwrite an input, is a directory, or
    cannot be written; and an unknown ``--freq``."""
    if not job.input.is_file():
        raise InputError(f"{job.input} does not exist")
    if job.output.is_dir():
        raise InputError(f"-o {job.output} is a directory: name a .csv or .parquet file")
    file_format(job.output)  # fail early on an unknown output format
    if not job.output.parent.exists():
        raise InputError(f"the output directory {job.output.parent} does not exist")
    derived = {job.output, job.errors_path, job.sidecar}
    for what, path in (("the input", job.input), ("--future-covariates", job.future_covariates)):
        if path is not None and path.exists() and any(same_file(path, d) for d in derived):
            raise InputError(f"-o {job.output} would overwrite {what} {path}: write the forecasts to another file")
    if not os.access(job.output.parent, os.W_OK):
        raise InputError(f"cannot write to {job.output.parent} (no write permission or a read-only file system)")
    try:
        normalize_freq(job.freq)
    except ValueError as exc:
        raise InputError(f"--freq: {exc}") from exc


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _run_locked(
    job: ForecastJob, forecaster: ChunkForecaster | None, log: Callable[[str], None], started: float
) -> ForecastSummary:
    columns = resolve_job_columns(job, input_columns(job.input))
    id_column, timestamp_column, _ = columns
    frames, scan = read_series_frames(job.input, id_column, timestamp_column, log)
    future = load_future(job, id_column)
    forecaster = forecaster or LocalForecaster(job, columns)
    sidecar = Sidecar(job.sidecar)
    finished = sidecar.start(job_fingerprint(job, columns, scan.num_series), resume=job.resume)
    if finished:
        log(f"resuming: {finished} finished chunk(s) found in {sidecar.directory}")

    progress = Progress(scan.num_series, enabled=not job.quiet)
    try:
        num_chunks, plot_ids, plot_history = _forecast_chunks(
            job, columns, frames, forecaster, future, sidecar, finished, progress
        )
    except ValueError:  # InputError, a ragged CSV...: nothing to resume, the rerun must change something
        sidecar.remove()
        raise
    summary = write_output(job, sidecar, num_chunks, columns, plot_ids)
    summary.num_series = scan.num_series
    summary.resumed_chunks = min(finished, num_chunks)
    summary.seconds = time.monotonic() - started
    if plot_history:
        summary.plot_history = pd.concat(plot_history, ignore_index=True)
    sidecar.remove()
    return summary


def _forecast_chunks(
    job: ForecastJob,
    columns: tuple[str, str, list[str]],
    frames: Iterable[pd.DataFrame],
    forecaster: ChunkForecaster,
    future: FutureCovariates | None,
    sidecar: Sidecar,
    finished: int,
    progress: Progress,
) -> tuple[int, list, list[pd.DataFrame]]:
    """Forecast the chunks not finished yet into the sidecar; return (chunks, plot ids, their history)."""
    id_column = columns[0]
    plot_history: list[pd.DataFrame] = []
    plot_ids: list = []
    chunk_index = -1
    for chunk_index, chunk in enumerate(iter_series_chunks(frames, id_column, job.batch_size)):
        if chunk_index < finished:
            progress.update(len(pd.unique(chunk[id_column])), skipped=True)
        else:
            result = forecast_chunk(chunk, job, columns, forecaster, future)
            sidecar.write(chunk_index, result.forecasts, result.errors, len(result.series_ids))
            progress.update(len(result.series_ids))
        if len(plot_ids) < job.plot_series:  # history of the first few series that got a forecast
            produced = pq.read_table(sidecar.part(chunk_index), columns=[id_column]).column(0).to_pylist()
            for series_id in list(dict.fromkeys(produced))[: job.plot_series - len(plot_ids)]:
                plot_ids.append(series_id)
                plot_history.append(chunk[chunk[id_column].map(lambda v, s=series_id: same_id(v, s))])
    progress.close()
    return chunk_index + 1, plot_ids, plot_history
