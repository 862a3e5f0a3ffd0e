"""Streaming benchmark of ``tsmojo forecast``: peak memory and throughput on a large Parquet file.

Generates a long-format Parquet file (default 1,000,000 series x 512 points, a few GB; written
row group by row group, so generating it needs little memory either), runs the real CLI on it as
a subprocess and reports the child's peak RSS (``getrusage(RUSAGE_CHILDREN).ru_maxrss``) and the
series per second. Several ``--series`` values show whether memory stays flat as the input grows.

    python benchmarks/streaming.py                                  # the full 1M-series run (~55 min, 1 CPU thread)
    nice -n 10 python benchmarks/streaming.py --series 1000                       # bundled model, minutes on 2 cores
    nice -n 10 python benchmarks/streaming.py --series 5000 20000 --tiny-model    # engine overhead, memory vs size

Results are appended to benchmarks/results/streaming.csv.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = Path(__file__).resolve().parent / "results" / "streaming.csv"
FIELDS = [
    "date",
    "series",
    "length",
    "horizon",
    "batch_size",
    "model",
    "input_mb",
    "seconds",
    "series_per_s",
    "peak_rss_mb",
    "peak_rss_polled_mb",
    "forecast_series",
    "error_series",
    "device",
    "threads",
    "host",
    "command",
]


def generate(path: Path, series: int, length: int, seed: int = 0, series_per_group: int = 2048) -> None:
    """Seasonal random walks, float32, hourly; one row group per ``series_per_group`` series."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2020-01-01T00:00:00", "us")
    stamps = start + np.arange(length).astype("timedelta64[h]").astype("timedelta64[us]")
    schema = pa.schema([("unique_id", pa.string()), ("ds", pa.timestamp("us")), ("y", pa.float32())])
    with pq.ParquetWriter(path, schema) as writer:
        for first in range(0, series, series_per_group):
            n = min(series_per_group, series - first)
            level = rng.uniform(10, 1000, size=(n, 1))
            season = np.sin(2 * np.pi * np.arange(length) / 24)[None, :] * rng.uniform(0, 0.3, size=(n, 1)) * level
            walk = rng.normal(scale=0.02, size=(n, length)).cumsum(axis=1) * level
            values = (level + season + walk).astype(np.float32).ravel()
            ids = np.repeat(np.array([f"series_{first + i:07d}" for i in range(n)]), length)
            table = pa.table({"unique_id": ids, "ds": np.tile(stamps, n), "y": values}, schema=schema)
            writer.write_table(table)


def poll_rss(pid: int, peak: list[int], stop: threading.Event) -> None:
    """Peak resident set size of ``pid`` sampled from /proc every 0.2 s (Linux only)."""
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        stop.wait(0.2)


def run_once(args, series: int, workdir: Path) -> dict:
    data = workdir / f"bench_{series}x{args.length}.parquet"
    if not data.exists():
        t0 = time.monotonic()
        generate(data, series, args.length)
        print(f"generated {data} ({data.stat().st_size / 2**20:,.0f} MB) in {time.monotonic() - t0:.0f}s", flush=True)
    output = workdir / f"forecasts_{series}.parquet"
    command = [
        sys.executable,
        "-m",
        "tsmojo.cli",
        "forecast",
        str(data),
        "-o",
        str(output),
        "-H",
        str(args.horizon),
        "--batch-size",
        str(args.batch_size),
        "--model",
        args.model,
        "--device",
        args.device,
        "--context-length",
        str(args.length),
        "--no-plot",
        "--quiet",
    ]
    print("running:", " ".join(command), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.monotonic()
    process = subprocess.Popen(command)
    peak, stop = [0], threading.Event()
    poller = threading.Thread(target=poll_rss, args=(process.pid, peak, stop), daemon=True)
    poller.start()
    code = process.wait()
    seconds = time.monotonic() - start
    stop.set()
    poller.join()
    if code != 0:
        raise SystemExit(f"tsmojo forecast failed with exit code {code}")
    maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # Nothing lost: every series is either forecast (H rows each) or listed in the errors file.
    forecast_series = pq.ParquetFile(output).metadata.num_rows // args.horizon
    errors_file = output.with_name(output.name + ".errors.csv")
    error_series = sum(1 for _ in open(errors_file)) - 1 if errors_file.exists() else 0
    if forecast_series + error_series != series:
        raise SystemExit(f"{series} series in, {forecast_series} forecast + {error_series} errors out")
    if maxrss_kb <= before:
        print("note: ru_maxrss is the maximum over all children so far; using the polled peak", flush=True)
    row = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "series": series,
        "length": args.length,
        "horizon": args.horizon,
        "batch_size": args.batch_size,
        "model": "tiny-random" if args.tiny_model else args.model,
        "input_mb": round(data.stat().st_size / 2**20, 1),
        "seconds": round(seconds, 1),
        "series_per_s": round(series / seconds, 1),
        "peak_rss_mb": round(maxrss_kb / 1024, 1),
        "peak_rss_polled_mb": round(peak[0] / 2**20, 1),
        "forecast_series": forecast_series,
        "error_series": error_series,
        "device": args.device,
        "threads": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count())),
        "host": platform.node(),
        "command": " ".join(command[1:]).replace(str(workdir), "$WORKDIR"),
    }
    if not args.keep:
        output.unlink(missing_ok=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, nargs="+", default=[1_000_000], help="sizes to run, smallest first")
    parser.add_argument("--length", type=int, default=512, help="points per series (default: 512)")
    parser.add_argument("-H", "--horizon", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model", default="tsmojo-mini", help="bundled name or model directory")
    parser.add_argument(
        "--tiny-model",
        action="store_true",
        help="use a tiny random model (saved to the workdir): measures the streaming engine itself",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, help="where the input is generated (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep generated inputs and outputs")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    temp = None
    if args.workdir is None:
        temp = tempfile.TemporaryDirectory(prefix="tsmojo_stream_")
        args.workdir = Path(temp.name)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.tiny_model:
        from tsmojo import TSMojoConfig, TSMojoModel

        TSMojoModel(TSMojoConfig.tiny(patch_size=16)).save_pretrained(args.workdir / "tiny-model")
        args.model = str(args.workdir / "tiny-model")
    rows = []
    try:
        for series in sorted(args.series):
            row = run_once(args, series, args.workdir)
            rows.append(row)
            print(
                f"{series:,} series: {row['seconds']}s, {row['series_per_s']} series/s, "
                f"peak RSS {row['peak_rss_mb']:,} MB (polled {row['peak_rss_polled_mb']:,} MB)",
                flush=True,
            )
            if not args.keep:
                (args.workdir / f"bench_{series}x{args.length}.parquet").unlink(missing_ok=True)
    finally:
        if temp is not None:
            temp.cleanup()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    earlier = list(csv.DictReader(open(args.results))) if args.results.exists() else []
    with open(args.results, "w", newline="") as handle:  # rewritten: older rows may lack newer columns
        writer = csv.DictWriter(handle, fieldnames=FIELDS, restval="")
        writer.writeheader()
        writer.writerows([*earlier, *rows])
    print(f"results appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
