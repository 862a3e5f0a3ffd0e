"""``tsmojo forecast --engine ray``: the same forecasts, computed by a Ray Data pipeline.

1. Ray reads the input partitions (``ray.data.read_parquet`` / ``read_csv``) on the cluster.
2. Every row gets a *bucket*: a stable hash (CRC32) of its series id modulo the number of buckets
   (about ``batch_size`` series a bucket). ``groupby(bucket).map_groups`` then hands each worker
   whole buckets, so no series is ever split, whatever the input's row order or partitioning.
3. Each worker actor loads the model once and runs :class:`tsmojo.batch.LocalForecaster` on its
   buckets: the same validation (bad series are collected, never fatal) and the same pipeline as
   the local engine. Error rows travel with the forecasts, flagged by a ``__tsmojo_error`` column.
4. Output: a ``.csv``/``.parquet`` OUTPUT is assembled on the driver in input order (identical to
   the local engine up to float32 rounding), through the same part files and atomic rename. An
   OUTPUT without a suffix becomes a Parquet *dataset* (a directory) written by the workers
   (``Dataset.write_parquet``), in no particular order; the errors are written to OUTPUT.errors.csv.

``address=None`` starts a local Ray instance; ``"auto"`` or ``"ray://head:10001"`` joins a cluster.
Every node needs tsmojo installed and must see the input path (shared filesystem or object store URI).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tsmojo.batch import (
    ForecastJob,
    ForecastSummary,
    FutureCovariates,
    LocalForecaster,
    check_output,
    forecast_chunk,
    job_fingerprint,
    load_future,
    order_forecasts,
    resolve_job_columns,
    same_file,
    write_output,
)
from tsmojo.frames import SeriesError, series_starts
from tsmojo.hardware import tune_cpu_allocator
from tsmojo.io import (
    InputError,
    OutputLock,
    Sidecar,
    file_format,
    id_key,
    input_columns,
    iter_frames,
    json_id,
    parse_text_timestamps,
    write_errors_file,
)

__all__ = ["run_forecast_ray"]

BUCKET = "__tsmojo_bucket"
ERROR = "__tsmojo_error"


def bucket_of(values: pd.Series, buckets: int) -> np.ndarray:
    """Stable across processes and machines (unlike ``hash()`` of a string)."""
    return np.fromiter((zlib.crc32(str(v).encode()) % buckets for v in values), dtype=np.int64, count=len(values))


def _add_bucket(batch: pd.DataFrame, id_column: str, buckets: int) -> pd.DataFrame:
    batch = batch.copy()
    batch[BUCKET] = bucket_of(batch[id_column], buckets)
    return batch


class ForecastBuckets:
    """Ray actor UDF: forecast the series of one bucket; one model per actor."""

    def __init__(self, job: dict, columns: tuple, future: FutureCovariates | None = None) -> None:
        tune_cpu_allocator()  # each actor is its own process: the command line's setting stays behind
        self.job = ForecastJob(**job)
        self.columns = columns
        self.forecaster = LocalForecaster(self.job, columns)
        self.future = future
        self.csv_input = file_format(self.job.input) == "csv"

    def __call__(self, group: pd.DataFrame) -> pd.DataFrame:
        id_column, timestamp_column, _ = self.columns
        # Ray hands out Arrow-backed columns; the pipeline expects plain numpy/object ones
        group = pa.Table.from_pandas(group.drop(columns=[BUCKET]), preserve_index=False).to_pandas(ignore_metadata=True)
        if self.csv_input and pd.api.types.is_datetime64_dtype(group[timestamp_column]):
            group[timestamp_column] = group[timestamp_column].astype("datetime64[ns]")  # as pandas parses CSV
        # parsed here too (the forecaster parses again, at no cost): error rows take its dtype
        group = parse_text_timestamps(group, timestamp_column)
        result = forecast_chunk(group, self.job, self.columns, self.forecaster, self.future)
        forecasts, errors = result.forecasts, result.errors
        names = [id_column, timestamp_column, *self.job.output_columns]
        if forecasts.empty:
            forecasts = pd.DataFrame(
                {
                    id_column: pd.Series(dtype=group[id_column].dtype),
                    timestamp_column: pd.Series(dtype=group[timestamp_column].dtype),
                    **{n: pd.Series(dtype="float32") for n in names[2:]},
                }
            )
        forecasts[ERROR] = pd.Series([None] * len(forecasts), dtype=object)
        if errors:
            filler = forecasts[timestamp_column].iloc[0] if len(forecasts) else group[timestamp_column].iloc[0]
            failed = pd.DataFrame(
                {
                    id_column: pd.Series([e.series_id for e in errors], dtype=group[id_column].dtype),
                    timestamp_column: pd.Series([filler] * len(errors), dtype=forecasts[timestamp_column].dtype),
                    **{n: np.full(len(errors), np.nan, dtype="float32") for n in names[2:]},
                    ERROR: [e.reason for e in errors],
                }
            )
            forecasts = pd.concat([forecasts, failed], ignore_index=True)
        return forecasts


def _read(ray, path: Path, id_column: str):
    if file_format(path) == "parquet":
        return ray.data.read_parquet(str(path))
    import pyarrow.csv as pacsv

    # like the local engine: ids stay text as written ("NA", "null" and "" are ids, not missing);
    # empty or NA cells of numeric columns are missing values
    options = pacsv.ConvertOptions(column_types={id_column: pa.string()}, strings_can_be_null=False)
    return ray.data.read_csv(str(path), convert_options=options)


def _input_order(path: Path, id_column: str) -> list:
    """Ids in order of first appearance (one streaming pass over the id column)."""
    seen: dict = {}
    for frame in iter_frames(path, columns=[id_column], id_column=id_column):
        for value in pd.unique(frame[id_column]):
            seen.setdefault(id_key(value), value)
    return list(seen.values())


def run_forecast_ray(
    job: ForecastJob,
    address: str | None = None,
    log: Callable[[str], None] | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
) -> ForecastSummary:
    """Run ``job`` on Ray; see the module docstring. ``actors``: model replicas (default: one per
    GPU if the cluster has GPUs, else one per 2 CPUs)."""
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError('--engine ray needs Ray Data: pip install "tsmojo[ray]"') from exc
    started = time.monotonic()
    log = log or (lambda message: None)
    if job.resume:
        raise InputError("--resume is only supported by the local engine (Ray retries failed tasks itself)")
    to_directory = job.output.suffix == ""
    if to_directory:
        if not job.input.is_file():
            raise InputError(f"{job.input} does not exist")
        if same_file(job.input, job.output):
            raise InputError(f"-o {job.output} would overwrite the input: write the forecasts elsewhere")
    else:
        check_output(job)
    with OutputLock(job.output):
        return _run_ray_locked(ray, job, address, num_cpus, actors, to_directory, started)


def _run_ray_locked(
    ray, job: ForecastJob, address: str | None, num_cpus: int | None, actors: int | None, to_directory: bool,
    started: float,
) -> ForecastSummary:  # fmt: skip
    columns = resolve_job_columns(job, input_columns(job.input))
    id_column, timestamp_column, _ = columns
    order = _input_order(job.input, id_column)
    buckets = max(1, math.ceil(len(order) / job.batch_size))
    future = load_future(job, id_column)

    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(
            address=address,
            num_cpus=num_cpus if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = not job.quiet
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        use_gpu = gpus > 0 and job.device in {"auto", "cuda"}
        replicas = actors or (gpus if use_gpu else max(1, int(resources.get("CPU", 1)) // 2))
        job_dict = dataclasses.asdict(job)
        job_dict.update(
            input=str(job.input),
            output=str(job.output),
            resume=False,
            errors=[],
            future_covariates=None if job.future_covariates is None else str(job.future_covariates),
        )
        if not use_gpu and job.device == "auto":
            job_dict["device"] = "cpu"
        dataset = (
            _read(ray, job.input, id_column)
            .map_batches(_add_bucket, batch_format="pandas", fn_kwargs={"id_column": id_column, "buckets": buckets})
            .groupby(BUCKET, num_partitions=min(buckets, 200))
            .map_groups(
                ForecastBuckets,
                batch_format="pandas",
                fn_constructor_kwargs={"job": job_dict, "columns": columns, "future": future},
                concurrency=replicas,
                num_gpus=1 if use_gpu else 0,
                num_cpus=1,
            )
        )
        if to_directory:
            summary = _write_dataset(job, dataset, columns, order)
        else:
            summary = _write_file(job, dataset, columns, order)
    finally:
        if owns_ray:
            ray.shutdown()
    summary.num_series = len(order)
    summary.seconds = time.monotonic() - started
    summary.columns = columns
    return summary


def _split(frame: pd.DataFrame, id_column: str) -> tuple[pd.DataFrame, list]:
    failed = frame[ERROR].notna()
    errors = [
        (series_id, reason)
        for series_id, reason in zip(frame.loc[failed, id_column], frame.loc[failed, ERROR], strict=True)
    ]
    return frame.loc[~failed].drop(columns=[ERROR]), errors


def _write_file(job: ForecastJob, dataset, columns: tuple, order: list) -> ForecastSummary:
    """Collect on the driver, restore input order, write through the local engine's parts + merge."""
    id_column, timestamp_column, _ = columns
    pieces, errors = [], []
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        forecasts, batch_errors = _split(batch.to_pandas(), id_column)  # numpy dtypes, as the local engine
        if len(forecasts):
            pieces.append(forecasts)
        errors += batch_errors
    forecasts = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame()
    forecasts = order_forecasts(forecasts, id_column, timestamp_column, order)
    reasons = {id_key(series_id): reason for series_id, reason in errors}
    produced = set()
    if len(forecasts):
        produced = {id_key(v) for v in pd.unique(forecasts[id_column])}
    sidecar = Sidecar(job.sidecar)
    sidecar.start(job_fingerprint(job, columns, len(order)), resume=False)
    rows_of = _series_rows(forecasts, id_column)
    num_chunks = 0
    for index in range(0, max(len(order), 1), job.batch_size):
        chunk_ids = order[index : index + job.batch_size]
        keys = [id_key(v) for v in chunk_ids]
        rows = [rows_of[k] for k in keys if k in rows_of]
        part = forecasts.iloc[np.concatenate([np.arange(a, b) for a, b in rows])] if rows else forecasts.iloc[:0]
        chunk_errors = [SeriesError(v, reasons[k]) for v, k in zip(chunk_ids, keys, strict=True) if k in reasons]
        chunk_errors += [
            SeriesError(v, "no forecast was returned for this series")
            for v, k in zip(chunk_ids, keys, strict=True)
            if k not in reasons and k not in produced
        ]
        sidecar.write(num_chunks, part.reset_index(drop=True), chunk_errors, len(chunk_ids))
        num_chunks += 1
    summary = write_output(job, sidecar, num_chunks, columns)
    sidecar.remove()
    return summary


def _series_rows(forecasts: pd.DataFrame, id_column: str) -> dict:
    """{id key: (first row, end row)} of a frame whose series are contiguous."""
    if forecasts.empty:
        return {}
    codes, uniques = pd.factorize(forecasts[id_column], use_na_sentinel=False)
    starts = series_starts(codes)
    ends = np.r_[starts[1:], len(codes)]
    return {id_key(uniques[codes[s]]): (s, e) for s, e in zip(starts, ends, strict=True)}


def _forecast_rows(batch: pd.DataFrame) -> pd.DataFrame:
    return batch[batch[ERROR].isna()].drop(columns=[ERROR])


def _error_rows(batch: pd.DataFrame, id_column: str) -> pd.DataFrame:
    return batch.loc[batch[ERROR].notna(), [id_column, ERROR]]


def _write_dataset(job: ForecastJob, dataset, columns: tuple, order: list) -> ForecastSummary:
    """Workers write the forecasts as a Parquet dataset at OUTPUT; errors go to OUTPUT.errors.csv."""
    id_column = columns[0]
    output = job.output
    if output.exists():
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    materialized = dataset.materialize()
    materialized.map_batches(_forecast_rows, batch_format="pandas").write_parquet(str(output))
    failed = materialized.map_batches(_error_rows, batch_format="pandas", fn_kwargs={"id_column": id_column})
    failed = failed.to_pandas()
    if id_column not in failed.columns or ERROR not in failed.columns:  # no series failed: no column at all
        failed = pd.DataFrame({id_column: pd.Series([], dtype=object), ERROR: pd.Series([], dtype=object)})
    rank = {id_key(v): i for i, v in enumerate(order)}
    errors = sorted(
        ((json_id(a), b) for a, b in zip(failed[id_column], failed[ERROR], strict=True)),
        key=lambda error: rank.get(id_key(error[0]), -1),
    )
    num_series = len(order)
    errors_path = write_errors_file(job.errors_path, id_column, errors)
    return ForecastSummary(
        output=output,
        errors_path=errors_path,
        num_series=num_series,
        num_forecast=num_series - len(errors),
        num_errors=len(errors),
        seconds=0.0,
    )
