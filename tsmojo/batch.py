"""Streaming batch forecasting: the engine behind ``tsmojo forecast``.

The input (CSV or Parquet, long format) is read in row batches and cut into *chunks of whole
series* (a series spanning a read boundary is carried over to the next chunk), so peak memory is
bounded by the chunk size, not by the file. Each chunk is validated (bad series are collected,
never fatal), forecast, and written as a *part* file into a sidecar directory next to the output.
When every chunk is done, the parts are merged into a temporary file in the output's directory
which is then atomically renamed over the output, and the sidecar is removed.

Nothing is lost: every series id of the input ends either in the output or in
``OUTPUT.errors.csv`` (id, reason). An interrupted run (crash, ``kill -9``, full disk) continues
with ``resume=True``: finished chunks are not recomputed. Chunk ``k`` always holds the same series
(the ``batch_size`` series after the first ``k * batch_size``), so a resumed run writes exactly the
bytes an uninterrupted run writes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "ForecastJob",
    "ForecastSummary",
    "InputError",
    "Progress",
    "iter_frames",
    "iter_series_chunks",
    "nixtla_names",
    "quantile_column",
    "run_forecast",
    "scan_ids",
]

#: Rows per read batch. Independent of the chunk size: a chunk gathers as many batches as it needs.
READ_ROWS = 65_536
#: Non-contiguous inputs up to this many rows are sorted in memory; larger ones are refused.
SORT_LIMIT_ROWS = 20_000_000
#: Test hook: ``kill -9`` the process itself after this many part files were written in this run.
CRASH_ENV = "TSMOJO_TEST_KILL_AFTER_PARTS"
MANIFEST_VERSION = 1


class InputError(ValueError):
    """A problem with the whole input (missing column, unreadable file...): nothing was forecast."""


# -- small helpers ---------------------------------------------------------------------------------


def file_format(path: str | Path) -> str:
    """``'csv'`` or ``'parquet'`` from the file name (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``)."""
    name = Path(path).name.lower()
    if name.endswith((".parquet", ".pq", ".parq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.xz", ".tsv")):
        return "csv"
    raise InputError(f"{path}: cannot tell the format from the name; use a .csv or .parquet file")


def quantile_column(q: float) -> str:
    """Name of a quantile column in tsmojo's output: ``0.1 -> '0.1'``, ``0.025 -> '0.025'``."""
    return f"{q:g}"


def nixtla_names(quantiles: Sequence[float], model: str = "tsmojo") -> dict[str, str]:
    """Column renames to the Nixtla convention: ``predictions -> tsmojo``, ``0.1 -> tsmojo-q-10``."""
    names = {"predictions": model}
    for q in quantiles:
        names[quantile_column(q)] = f"{model}-q-{round(q * 100, 6):g}"
    return names


def _same_id(a, b) -> bool:
    if a is b:
        return True
    try:
        if pd.isna(a) and pd.isna(b):
            return True
    except (TypeError, ValueError):
        pass
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _id_key(value):
    """Hashable key for the set of seen ids (NaN ids are all the same key)."""
    try:
        if pd.isna(value):
            return ("<missing>",)
    except (TypeError, ValueError):
        pass
    return value.item() if isinstance(value, np.generic) else value


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_replace(tmp: Path, final: Path) -> None:
    """fsync ``tmp`` then rename it over ``final`` (same directory, so the rename is atomic)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_dir(final.parent)


# -- reading ---------------------------------------------------------------------------------------


def input_columns(path: str | Path) -> list[str]:
    """Column names of a CSV or Parquet file, reading only its header / schema."""
    path = Path(path)
    if file_format(path) == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    return list(pd.read_csv(path, nrows=0, sep="\t" if path.name.endswith(".tsv") else ",").columns)


def iter_frames(
    path: str | Path, columns: Sequence[str] | None = None, rows: int = READ_ROWS, id_column: str | None = None
) -> Iterator[pd.DataFrame]:
    """The file as a stream of pandas frames of about ``rows`` rows each (Parquet or CSV).

    CSV ids are read as strings so that ``007`` stays ``007`` and every batch agrees on the type.
    """
    path = Path(path)
    if file_format(path) == "parquet":
        # pre_buffer=True (pyarrow's default) keeps every row group's buffered bytes alive until the
        # reader is done: ~4 MB per row group, 2 GB over a 1M-series file. Off, memory stays flat.
        parquet = pq.ParquetFile(path, pre_buffer=False)
        for batch in parquet.iter_batches(batch_size=rows, columns=list(columns) if columns else None):
            yield batch.to_pandas()
        return
    dtype = {id_column: str} if id_column else None
    sep = "\t" if path.name.endswith(".tsv") else ","
    with pd.read_csv(path, usecols=columns, chunksize=rows, dtype=dtype, sep=sep, keep_default_na=True) as reader:
        yield from reader


def iter_series_chunks(
    frames: Iterable[pd.DataFrame], id_column: str, series_per_chunk: int, check_contiguous: bool = True
) -> Iterator[pd.DataFrame]:
    """Regroup a stream of frames into frames of exactly ``series_per_chunk`` whole series
    (the last one may hold fewer). Rows of one series must be contiguous in the stream; a series
    that reappears after another one started raises :class:`InputError`.
    """
    if series_per_chunk < 1:
        raise ValueError(f"series_per_chunk must be >= 1, got {series_per_chunk}")
    pending: list[pd.DataFrame] = []
    complete = 0  # closed series held in ``pending``
    open_id = _MISSING = object()
    seen: set = set()
    for frame in frames:
        if frame.empty:
            continue
        frame = frame.reset_index(drop=True)
        codes, uniques = pd.factorize(frame[id_column], use_na_sentinel=False)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        run_ids = uniques.take(codes[starts])
        position = 0
        for start, run_id in zip(starts.tolist(), run_ids, strict=True):
            if open_id is not _MISSING and _same_id(run_id, open_id):
                continue  # the series left open by the previous frame goes on
            if check_contiguous:
                key = _id_key(run_id)
                if key in seen:
                    raise InputError(
                        f"the input is not grouped by {id_column!r}: series {run_id!r} appears again after "
                        "other series; sort the file by id (keeping each series' rows together)"
                    )
                seen.add(key)
            if open_id is not _MISSING:
                complete += 1
            open_id = run_id
            if complete == series_per_chunk:
                pending.append(frame.iloc[position:start])
                yield pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0].reset_index(drop=True)
                pending, complete, position = [], 0, start
        pending.append(frame.iloc[position:])
    pending = [p for p in pending if len(p)]
    if pending:
        yield pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0].reset_index(drop=True)


@dataclass
class IdScan:
    """What a pass over the id column found."""

    num_series: int
    num_rows: int
    contiguous: bool
    repeated_id: object = None


def scan_ids(path: str | Path, id_column: str) -> IdScan:
    """One streaming pass over the id column only: count series and rows, check the rows of each
    series are contiguous. Memory: the set of ids seen (about 100 bytes an id). After a repeated
    id is found only rows are counted (``num_series`` then counts the series seen until there)."""
    num_series = num_rows = 0
    seen: set = set()
    last = _MISSING = object()
    repeated = _MISSING
    for frame in iter_frames(path, columns=[id_column], rows=4 * READ_ROWS, id_column=id_column):
        num_rows += len(frame)
        if frame.empty or repeated is not _MISSING:
            continue
        codes, uniques = pd.factorize(frame[id_column], use_na_sentinel=False)
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        for run_id in uniques.take(codes[starts]):
            if last is not _MISSING and _same_id(run_id, last):
                continue
            key = _id_key(run_id)
            if key in seen:
                repeated = run_id
                seen.clear()
                break
            seen.add(key)
            num_series += 1
            last = run_id
    if repeated is not _MISSING:
        return IdScan(num_series, num_rows, contiguous=False, repeated_id=repeated)
    return IdScan(num_series, num_rows, contiguous=True)


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
    quantiles: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 10))
    model: str = "tsmojo-mini"
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


def _fingerprint(job: ForecastJob, columns: tuple[str, str, list[str]], num_series: int) -> dict:
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
        if self._pipeline is None:
            from tsmojo.pipeline import TSMojoPipeline

            self._pipeline = TSMojoPipeline.from_pretrained(self.job.model, device=self.job.device, dtype=self.job.dtype)
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
        from tsmojo.validation import SeriesError, validate_future_frame, validate_long_frame

        id_column = self.id_column
        chunk = _parse_timestamps(chunk, self.timestamp_column)
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


def _parse_timestamps(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Text timestamps -> datetime64, tolerating series written in different formats (``2022-01-01``
    next to ``2022-01-01 07:00:00``): pandas infers one format from the first value and would turn
    the others into NaT. Integers and datetimes are left alone."""
    values = frame[column]
    if values.dtype != object and not pd.api.types.is_string_dtype(values):
        return frame
    parsed = pd.to_datetime(values, errors="coerce")
    failed = parsed.isna() & values.notna()
    if failed.any():
        retry = pd.to_datetime(values[failed], errors="coerce", format="mixed")
        if retry.notna().any():
            parsed = parsed.astype(retry.dtype) if parsed.dtype != retry.dtype else parsed
            parsed[failed] = retry
    # what still failed is NaT now: validation names those series ("unparseable timestamps")
    frame = frame.copy()
    frame[column] = parsed
    return frame


# -- parts and the sidecar -------------------------------------------------------------------------


class Sidecar:
    """``OUTPUT.tsmojo-parts/``: ``manifest.json`` plus, per finished chunk ``k``,
    ``part-k.parquet`` (forecast rows) and ``part-k.json`` (its errors and counts). The JSON is
    written last and atomically: its presence marks the chunk as finished."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    def part(self, index: int) -> Path:
        return self.directory / f"part-{index:06d}.parquet"

    def marker(self, index: int) -> Path:
        return self.directory / f"part-{index:06d}.json"

    def start(self, fingerprint: dict, resume: bool) -> int:
        """Prepare the directory; return how many chunks are already finished (resume) or 0."""
        if self.directory.exists():
            if resume and self.manifest_path.is_file():
                previous = json.loads(self.manifest_path.read_text())
                if previous != fingerprint:
                    changed = sorted(
                        k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k)
                    )
                    raise InputError(
                        f"cannot resume: {', '.join(changed)} changed since the interrupted run "
                        f"(sidecar {self.directory}); run again without --resume to start over"
                    )
                return self.finished_chunks()
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)
        self._write_json(self.manifest_path, fingerprint)
        return 0

    def finished_chunks(self) -> int:
        index = 0
        while self.marker(index).is_file() and self.part(index).is_file():
            index += 1
        return index

    def _write_json(self, path: Path, payload: dict) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str))
        atomic_replace(tmp, path)

    def write(self, index: int, forecasts: pd.DataFrame, errors: list, num_series: int) -> None:
        table = pa.Table.from_pandas(forecasts, preserve_index=False)
        tmp = self.part(index).with_name(self.part(index).name + ".tmp")
        pq.write_table(table, tmp)
        atomic_replace(tmp, self.part(index))
        payload = {
            "num_series": num_series,
            "errors": [[_json_id(e.series_id), e.reason] for e in errors],
        }
        self._write_json(self.marker(index), payload)

    def read_marker(self, index: int) -> dict:
        return json.loads(self.marker(index).read_text())

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _json_id(value):
    if isinstance(value, np.generic):
        return value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# -- main loop -------------------------------------------------------------------------------------


def _resolve_columns(job: ForecastJob, columns: list[str]) -> tuple[str, str, list[str]]:
    from tsmojo.validation import resolve_columns

    try:
        return resolve_columns(pd.DataFrame(columns=columns), job.id_column, job.timestamp_column, job.target)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _load_future(job: ForecastJob, id_column: str) -> tuple[pd.DataFrame | None, dict | None]:
    if job.future_covariates is None:
        return None, None
    path = job.future_covariates
    if not path.is_file():
        raise InputError(f"--future-covariates: {path} does not exist")
    future = pd.concat(list(iter_frames(path, id_column=id_column)), ignore_index=True)
    if id_column not in future.columns:
        raise InputError(f"--future-covariates: {path} has no id column {id_column!r} (has {list(future.columns)})")
    return future, future.groupby(id_column, sort=False, dropna=False).indices


def _order_like(forecasts: pd.DataFrame, id_column: str, timestamp_column: str, order: Sequence) -> pd.DataFrame:
    """Rows of ``forecasts`` with series in ``order`` (input order), then by target (several
    targets), then by time."""
    if forecasts.empty:
        return forecasts
    rank = {_id_key(v): i for i, v in enumerate(order)}
    keys = np.array([rank.get(_id_key(v), len(rank)) for v in forecasts[id_column]])
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
    by_level = {}
    for name in forecasts.columns:
        try:
            by_level[round(float(name), 9)] = name
        except (TypeError, ValueError):
            continue
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


def run_forecast(
    job: ForecastJob,
    forecaster: ChunkForecaster | None = None,
    log: Callable[[str], None] | None = None,
) -> ForecastSummary:
    """Run a forecast job end to end; see the module docstring."""
    started = time.monotonic()
    log = log or (lambda message: None)
    if not job.input.is_file():
        raise InputError(f"{job.input} does not exist")
    file_format(job.output)  # fail early on an unknown output format
    if not job.output.parent.exists():
        raise InputError(f"the output directory {job.output.parent} does not exist")
    columns = _resolve_columns(job, input_columns(job.input))
    id_column, timestamp_column, targets = columns

    scan = scan_ids(job.input, id_column)
    if scan.contiguous:
        frames: Iterable[pd.DataFrame] = iter_frames(job.input, id_column=id_column)
    elif scan.num_rows <= SORT_LIMIT_ROWS:
        log(
            f"warning: the rows of series {scan.repeated_id!r} are not contiguous; sorting the input in memory "
            f"({scan.num_rows:,} rows). Sort large files by id first to keep memory bounded."
        )
        whole = pd.concat(list(iter_frames(job.input, id_column=id_column)), ignore_index=True)
        codes, _ = pd.factorize(whole[id_column], use_na_sentinel=False)
        whole = whole.iloc[np.argsort(codes, kind="stable")].reset_index(drop=True)
        scan = IdScan(int(codes.max()) + 1 if len(codes) else 0, len(whole), contiguous=True)
        frames = (whole.iloc[i : i + READ_ROWS] for i in range(0, len(whole), READ_ROWS))
    else:
        raise InputError(
            f"the input is not grouped by {id_column!r} (series {scan.repeated_id!r} appears in two separate "
            f"blocks) and is too large ({scan.num_rows:,} rows) to sort in memory: sort it by id first, "
            f"e.g. with DuckDB: COPY (SELECT * FROM 'in.parquet' ORDER BY {id_column}, {timestamp_column}) "
            "TO 'out.parquet'"
        )

    future, future_index = _load_future(job, id_column)
    forecaster = forecaster or LocalForecaster(job, columns)
    sidecar = Sidecar(job.sidecar)
    finished = sidecar.start(_fingerprint(job, columns, scan.num_series), resume=job.resume)
    if finished:
        log(f"resuming: {finished} finished chunk(s) found in {sidecar.directory}")
    crash_after = int(os.environ.get(CRASH_ENV, "0") or 0)

    progress = Progress(scan.num_series, enabled=not job.quiet)
    plot_history: list[pd.DataFrame] = []
    plot_ids: list = []
    written = 0
    chunk_index = -1
    for chunk_index, chunk in enumerate(iter_series_chunks(frames, id_column, job.batch_size)):
        order = list(pd.unique(chunk[id_column]))
        if chunk_index < finished:
            progress.update(len(order), skipped=True)
        else:
            chunk_future = None
            if future is not None:
                positions = [future_index[k] for k in order if k in future_index]
                rows = np.concatenate(positions) if positions else np.array([], dtype=int)
                chunk_future = future.iloc[np.sort(rows)].reset_index(drop=True)
            forecasts, errors = forecaster(chunk, chunk_future)
            forecasts = _order_like(_finish_frame(forecasts, job, columns), id_column, timestamp_column, order)
            errors = _complete_errors(order, forecasts, errors, id_column)
            sidecar.write(chunk_index, forecasts, errors, len(order))
            written += 1
            progress.update(len(order))
            if crash_after and written >= crash_after:
                os.kill(os.getpid(), signal.SIGKILL)
        if len(plot_ids) < job.plot_series:  # history of the first few series that got a forecast
            produced = pq.read_table(sidecar.part(chunk_index), columns=[id_column]).column(0).to_pylist()
            for series_id in list(dict.fromkeys(produced))[: job.plot_series - len(plot_ids)]:
                plot_ids.append(series_id)
                plot_history.append(chunk[chunk[id_column].map(lambda v, s=series_id: _same_id(v, s))])
    progress.close()

    num_chunks = chunk_index + 1
    summary = _merge(job, sidecar, num_chunks, columns, plot_ids)
    summary.num_series = scan.num_series
    summary.resumed_chunks = min(finished, num_chunks)
    summary.seconds = time.monotonic() - started
    summary.columns = columns
    if plot_history:
        summary.plot_history = pd.concat(plot_history, ignore_index=True)
    sidecar.remove()
    return summary


def _complete_errors(order: list, forecasts: pd.DataFrame, errors: list, id_column: str) -> list:
    """Errors in input order, plus one for any series that neither got a forecast nor an error."""
    from tsmojo.validation import SeriesError

    reported = {_id_key(e.series_id) for e in errors}
    produced = {_id_key(v) for v in pd.unique(forecasts[id_column])} if len(forecasts) else set()
    rank = {_id_key(v): i for i, v in enumerate(order)}
    errors = list(errors)
    for series_id in order:
        key = _id_key(series_id)
        if key not in reported and key not in produced:
            errors.append(SeriesError(series_id, "no forecast was returned for this series"))
    return sorted(errors, key=lambda e: rank.get(_id_key(e.series_id), -1))


def _merge(job: ForecastJob, sidecar: Sidecar, num_chunks: int, columns, plot_ids: list) -> ForecastSummary:
    """Concatenate the parts into ``OUTPUT`` (tmp file + atomic rename) and write the errors file."""
    id_column = columns[0]
    output = job.output
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    out_format = file_format(output)
    plot_keys = {_id_key(v) for v in plot_ids}
    plot_rows: list[pd.DataFrame] = []
    errors: list[list] = []
    num_forecast = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    try:
        with open(tmp, "wb") as handle:
            header = True
            for index in range(num_chunks):
                marker = sidecar.read_marker(index)
                errors.extend(marker["errors"])
                table = pq.read_table(sidecar.part(index))
                if table.num_rows == 0:
                    continue
                frame = table.to_pandas()
                num_forecast += frame[id_column].nunique(dropna=False)
                if plot_keys:
                    mask = np.array([_id_key(v) in plot_keys for v in frame[id_column]])
                    if mask.any():
                        plot_rows.append(frame[mask])
                if out_format == "parquet":
                    if writer is None:
                        schema = table.schema
                        writer = pq.ParquetWriter(handle, schema)
                    writer.write_table(table.cast(schema) if table.schema != schema else table)
                else:
                    frame.to_csv(handle, header=header, index=False, lineterminator="\n")
                    header = False
            if out_format == "parquet":
                if writer is None:  # every series failed: an empty file with the right columns
                    empty = pd.DataFrame(columns=[columns[0], columns[1], *job.output_columns])
                    writer = pq.ParquetWriter(handle, pa.Table.from_pandas(empty, preserve_index=False).schema)
                writer.close()
                writer = None
            elif header:
                pd.DataFrame(columns=[columns[0], columns[1], *job.output_columns]).to_csv(
                    handle, index=False, lineterminator="\n"
                )
        atomic_replace(tmp, output)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)

    errors_path = job.errors_path
    if errors:
        frame = pd.DataFrame(errors, columns=[id_column, "reason"])
        tmp_errors = errors_path.with_name(f".{errors_path.name}.tmp-{os.getpid()}")
        frame.to_csv(tmp_errors, index=False, lineterminator="\n")
        atomic_replace(tmp_errors, errors_path)
    else:
        errors_path.unlink(missing_ok=True)
    return ForecastSummary(
        output=output,
        errors_path=errors_path if errors else None,
        num_series=0,
        num_forecast=num_forecast,
        num_errors=len(errors),
        seconds=0.0,
        plot_forecasts=pd.concat(plot_rows, ignore_index=True) if plot_rows else None,
    )


def fingerprint_text(payload: dict) -> str:
    """Short hash of a fingerprint (for logs)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
