"""Files of ``tsmojo forecast``: reading long-format inputs in chunks of whole series, and the
part files of a resumable run merged into the output.

The input (CSV or Parquet) is read in row batches (:func:`iter_frames`) and regrouped into
chunks of whole series (:func:`iter_series_chunks`), so memory is bounded by the chunk size, not
by the file. Each finished chunk is written as a part into a sidecar directory next to the output
(:class:`Sidecar`); :func:`merge_parts` joins the parts into a temporary file that is atomically
renamed over the output.
"""

from __future__ import annotations

import bz2
import contextlib
import fcntl
import gzip
import json
import lzma
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tsmojo.frames import parse_timestamps, series_starts

__all__ = [
    "READ_ROWS",
    "SORT_LIMIT_ROWS",
    "IdScan",
    "InputError",
    "MergedOutput",
    "OutputLock",
    "Sidecar",
    "atomic_replace",
    "file_format",
    "id_key",
    "input_columns",
    "iter_frames",
    "iter_series_chunks",
    "json_id",
    "merge_parts",
    "parse_text_timestamps",
    "read_series_frames",
    "same_id",
    "scan_ids",
    "write_errors_file",
]

#: Rows per read batch. Independent of the chunk size: a chunk gathers as many batches as it needs.
READ_ROWS = 65_536
#: Non-contiguous inputs up to this many rows are sorted in memory; larger ones are refused.
SORT_LIMIT_ROWS = 20_000_000


#: What pandas reads as missing in CSV cells by default; every column but the id column keeps them.
_CSV_MISSING_MARKERS = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
    "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null",
)  # fmt: skip


class InputError(ValueError):
    """A problem with the whole input (missing column, unreadable file...): nothing was forecast."""


# -- ids and files ------------------------------------------------------------------------------


def file_format(path: str | Path) -> str:
    """``'csv'`` or ``'parquet'`` from the file name (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``)."""
    name = Path(path).name.lower()
    if name.endswith((".parquet", ".pq", ".parq")):
        return "parquet"
    if name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.xz", ".tsv")):
        return "csv"
    raise InputError(f"{path}: cannot tell the format from the name; use a .csv or .parquet file")


def same_id(a, b) -> bool:
    """Whether two ids read from a file are the same series (missing ids are all one series)."""
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


def id_key(value):
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

    CSV ids are read as strings, exactly as written: ``007`` stays ``007``, and ``NA``, ``null``,
    ``None``, ``N/A`` or an empty field are ids like any other (pandas would read them as missing).
    Every batch agrees on the type.
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
    options: dict = {}
    if id_column:
        # keep_default_na=False with a per-column na_values: the id column has no missing marker
        header = list(pd.read_csv(path, nrows=0, sep=sep).columns)
        missing_markers = list(_CSV_MISSING_MARKERS)
        options = {
            "keep_default_na": False,
            "na_values": {c: missing_markers for c in header if c != id_column and (columns is None or c in columns)},
        }
    with pd.read_csv(path, usecols=columns, chunksize=rows, dtype=dtype, sep=sep, **options) as reader:
        for frame in reader:
            if id_column and id_column in frame.columns:
                frame[id_column] = frame[id_column].fillna("")  # an empty id field is the id ""
            yield frame


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
        starts = series_starts(codes)
        run_ids = uniques.take(codes[starts])
        position = 0
        for start, run_id in zip(starts.tolist(), run_ids, strict=True):
            if open_id is not _MISSING and same_id(run_id, open_id):
                continue  # the series left open by the previous frame goes on
            if check_contiguous:
                key = id_key(run_id)
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
        for run_id in uniques.take(codes[series_starts(codes)]):
            if last is not _MISSING and same_id(run_id, last):
                continue
            key = id_key(run_id)
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


def parse_text_timestamps(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Text timestamps -> datetime64, tolerating series written in different formats (``2022-01-01``
    next to ``2022-01-01 07:00:00``): pandas infers one format from the first value and would turn
    the others into NaT. Integers and datetimes are left alone."""
    values = frame[column]
    if values.dtype != object and not pd.api.types.is_string_dtype(values):
        return frame
    # what cannot be parsed is NaT now: validation names those series ("unparseable timestamps")
    frame = frame.copy()
    frame[column] = parse_timestamps(values)
    return frame


def read_series_frames(
    path: Path, id_column: str, timestamp_column: str, log: Callable[[str], None]
) -> tuple[Iterable[pd.DataFrame], IdScan]:
    """The input as a stream of frames whose series are contiguous, and what a scan of its ids
    found. A file whose series are not contiguous is sorted in memory (with a warning through
    ``log``) up to :data:`SORT_LIMIT_ROWS` rows; a larger one raises :class:`InputError`."""
    scan = scan_ids(path, id_column)
    if scan.contiguous:
        return iter_frames(path, id_column=id_column), scan
    if scan.num_rows > SORT_LIMIT_ROWS:
        raise InputError(
            f"the input is not grouped by {id_column!r} (series {scan.repeated_id!r} appears in two separate "
            f"blocks) and is too large ({scan.num_rows:,} rows) to sort in memory: sort it by id first, "
            f"e.g. with DuckDB: COPY (SELECT * FROM 'in.parquet' ORDER BY {id_column}, {timestamp_column}) "
            "TO 'out.parquet'"
        )
    log(
        f"warning: the rows of series {scan.repeated_id!r} are not contiguous; sorting the input in memory "
        f"({scan.num_rows:,} rows). Sort large files by id first to keep memory bounded."
    )
    whole = pd.concat(list(iter_frames(path, id_column=id_column)), ignore_index=True)
    codes, _ = pd.factorize(whole[id_column], use_na_sentinel=False)
    whole = whole.iloc[np.argsort(codes, kind="stable")].reset_index(drop=True)
    scan = IdScan(int(codes.max()) + 1 if len(codes) else 0, len(whole), contiguous=True)
    return (whole.iloc[i : i + READ_ROWS] for i in range(0, len(whole), READ_ROWS)), scan


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
        """The forecast rows of chunk ``index``."""
        return self.directory / f"part-{index:06d}.parquet"

    def marker(self, index: int) -> Path:
        """Chunk ``index``'s errors and counts; it exists once the chunk is finished."""
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
        """How many chunks, from the first on, are finished and readable: a chunk whose part or
        marker is corrupt (truncated, garbled) is not finished, so a resumed run recomputes it."""
        index = 0
        while self.marker(index).is_file() and self.part(index).is_file() and self._readable(index):
            index += 1
        return index

    def _readable(self, index: int) -> bool:
        try:
            marker = self.read_marker(index)
            pq.read_table(self.part(index))
        except (OSError, ValueError, pa.ArrowException):  # json.JSONDecodeError is a ValueError
            return False
        return isinstance(marker, dict) and "errors" in marker and "num_series" in marker

    def _write_json(self, path: Path, payload: dict) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1, default=str))
        atomic_replace(tmp, path)

    def write(self, index: int, forecasts: pd.DataFrame, errors: list, num_series: int) -> None:
        """Write chunk ``index`` (part first, marker last, each atomically)."""
        table = pa.Table.from_pandas(forecasts, preserve_index=False)
        tmp = self.part(index).with_name(self.part(index).name + ".tmp")
        pq.write_table(table, tmp)
        atomic_replace(tmp, self.part(index))
        payload = {
            "num_series": num_series,
            "errors": [[json_id(e.series_id), e.reason] for e in errors],
        }
        self._write_json(self.marker(index), payload)

    def read_marker(self, index: int) -> dict:
        """``{"num_series", "errors": [[id, reason], ...]}`` of a finished chunk."""
        return json.loads(self.marker(index).read_text())

    def remove(self) -> None:
        """Delete the sidecar directory and everything in it."""
        shutil.rmtree(self.directory, ignore_errors=True)


def json_id(value):
    """An id as JSON can hold it (numpy scalars as Python ones, missing as null, others as text)."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str | int | float | bool):
        return value
    return str(value)


@dataclass
class MergedOutput:
    """What :func:`merge_parts` wrote."""

    num_forecast: int  # series with a forecast
    num_errors: int
    errors_path: Path | None  # None when there was no error (a stale errors file is removed)
    plot_forecasts: pd.DataFrame | None  # the forecast rows of the series asked for


def merge_parts(
    sidecar: Sidecar,
    num_chunks: int,
    output: Path,
    errors_path: Path,
    id_column: str,
    empty_columns: Sequence[str],
    plot_ids: Iterable = (),
) -> MergedOutput:
    """Concatenate the parts into ``output`` (tmp file + atomic rename) and the errors into
    ``errors_path``. ``empty_columns`` name the columns of an output without any forecast; the
    rows of the series in ``plot_ids`` are kept aside for a plot."""
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    out_format = file_format(output)
    separator = "\t" if output.name.lower().endswith(".tsv") else ","
    plot_keys = {id_key(v) for v in plot_ids}
    plot_rows: list[pd.DataFrame] = []
    errors: list[list] = []
    num_forecast = 0
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    try:
        with open(tmp, "wb") as raw, _compressed(raw, output) as handle:
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
                    mask = np.array([id_key(v) in plot_keys for v in frame[id_column]])
                    if mask.any():
                        plot_rows.append(frame[mask])
                if out_format == "parquet":
                    if writer is None:
                        schema = table.schema
                        writer = pq.ParquetWriter(handle, schema)
                    writer.write_table(table.cast(schema) if table.schema != schema else table)
                else:
                    frame.to_csv(handle, header=header, index=False, lineterminator="\n", sep=separator)
                    header = False
            if out_format == "parquet":
                if writer is None:  # every series failed: an empty file with the right columns
                    empty = pd.DataFrame(columns=list(empty_columns))
                    writer = pq.ParquetWriter(handle, pa.Table.from_pandas(empty, preserve_index=False).schema)
                writer.close()
                writer = None
            elif header:
                pd.DataFrame(columns=list(empty_columns)).to_csv(
                    handle, index=False, lineterminator="\n", sep=separator
                )
        atomic_replace(tmp, output)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return MergedOutput(
        num_forecast=num_forecast,
        num_errors=len(errors),
        errors_path=write_errors_file(errors_path, id_column, errors),
        plot_forecasts=pd.concat(plot_rows, ignore_index=True) if plot_rows else None,
    )


def _compressed(raw: BinaryIO, output: Path) -> contextlib.AbstractContextManager[Any]:
    """A binary stream writing into ``raw``, compressed as ``output``'s name says (``.gz``, ``.bz2``,
    ``.xz``, ``.zst``); ``raw`` itself (in a no-op context) for other names."""
    name = output.name.lower()
    if name.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # mtime=0: same bytes on every run
    if name.endswith(".bz2"):
        return bz2.BZ2File(raw, mode="wb")
    if name.endswith(".xz"):
        return lzma.LZMAFile(raw, mode="wb")
    if name.endswith(".zst"):
        try:
            import zstandard  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise InputError(f"{output}: writing .zst needs the zstandard package (pip install zstandard)") from exc
        return zstandard.ZstdCompressor().stream_writer(raw, closefd=False)
    return contextlib.nullcontext(raw)


class OutputLock:
    """An exclusive lock on an output (``OUTPUT.tsmojo-lock``, ``flock``): a second run on the same
    output is refused at once with :class:`InputError` instead of mixing its chunks with the first
    one's. The lock file is removed on release; a lock left by a killed process is free again."""

    def __init__(self, output: Path) -> None:
        self.path = output.with_name(output.name + ".tsmojo-lock")
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise InputError(
                    f"another tsmojo run is writing {self.path.name.removesuffix('.tsmojo-lock')} (lock {self.path} "
                    "is held): wait for it to finish, or write to another -o"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file its previous holder removed meanwhile
                self._fd = fd
                return self
            os.close(fd)

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def write_errors_file(path: Path, id_column: str, errors: Sequence[Sequence]) -> Path | None:
    """Write ``(id, reason)`` rows to ``path`` (atomically) and return it; with no error, remove
    a stale file and return None."""
    if not errors:
        path.unlink(missing_ok=True)
        return None
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pd.DataFrame(list(errors), columns=[id_column, "reason"]).to_csv(tmp, index=False, lineterminator="\n")
    atomic_replace(tmp, path)
    return path
