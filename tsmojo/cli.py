"""The ``tsmojo`` command line: forecast, evaluate, plot, pretrain.

Run ``tsmojo COMMAND --help`` for the options and examples of each command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tsmojo.bundled import DEFAULT_MODEL
from tsmojo.hardware import tune_cpu_allocator

EXIT_OK, EXIT_SERIES_FAILED, EXIT_USAGE = 0, 1, 2

MAIN_EPILOG = """\
examples:
  tsmojo forecast datasets/examples/monthly_sales.csv -o forecasts.csv -H 18
  tsmojo evaluate datasets/examples/monthly_sales.csv -H 12 --windows 3 --seasonality 12 -o backtest.csv
  tsmojo plot datasets/examples/monthly_sales.csv -H 18 --sample 3 -o plots/
  tsmojo pretrain --help
"""

FORECAST_EPILOG = """\
examples:
  # a CSV with columns unique_id, ds, y: 18 months ahead, forecasts + a plot
  tsmojo forecast datasets/examples/monthly_sales.csv -o forecasts.csv -H 18

  # other column names, known-future covariates, 1%/99% quantiles too
  tsmojo forecast datasets/examples/energy_history.csv --future-covariates datasets/examples/energy_future.csv \\
      --id-column region --timestamp-column time --target demand -H 48 -o energy_forecasts.csv \\
      --quantiles 0.01,0.1,0.5,0.9,0.99

  # a large Parquet file, streamed 1,000 series at a time; continue after a crash with --resume
  tsmojo forecast big.parquet -o big_forecasts.parquet -H 24 --batch-size 1000 --resume

output: one row per series and future timestamp, with the input's id and timestamp column names,
"predictions" (the median) and one column per quantile ("0.1", ...); --nixtla-names writes
"tsmojo", "tsmojo-q-10", ... instead. Series that cannot be forecast are listed with the reason in
OUTPUT.errors.csv; the exit code is then 1 unless --allow-errors.
"""

EVALUATE_EPILOG = """\
examples:
  # 3 rolling windows of 12 months, the last one ending at the end of each series
  tsmojo evaluate datasets/examples/monthly_sales.csv -H 12 --windows 3 --step 12 --seasonality 12 -o backtest.csv

writes TABLE (one row per series: MASE, WQL, SQL over its windows) and TABLE_aggregate.csv (all
series together, then each window index); metrics follow GluonTS (see tsmojo/backtest.py).
"""

PLOT_EPILOG = """\
examples:
  # forecast 3 random series with 1%/10%/90%/99% bands and draw them
  tsmojo plot datasets/examples/monthly_sales.csv -H 18 --sample 3 -o plots/

  # draw forecasts already computed by `tsmojo forecast` (with --quantiles 0.01,0.1,0.5,0.9,0.99)
  tsmojo plot datasets/examples/monthly_sales.csv -f forecasts.csv --ids airline_passengers,a10 -o plots/
"""


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one quantile level")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input columns")
    group.add_argument("--id-column", help="series id column (default: unique_id, item_id or id)")
    group.add_argument("--timestamp-column", help="timestamp column (default: ds or timestamp)")
    group.add_argument("--target", help="column(s) to forecast, comma-separated (default: y or target)")
    group.add_argument("--freq", help="pandas frequency alias (H, D, MS, W-SUN...); default: inferred per series")
    group.add_argument("--fill-gaps", action="store_true", help="insert missing timestamps as NaN instead of failing")


def _add_model_options(parser: argparse.ArgumentParser, default_batch: int = 256) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model", default=DEFAULT_MODEL, help="bundled model name or model directory (default: %(default)s)"
    )
    group.add_argument("--context-length", type=_positive_int, help="use at most this many past points per series")
    group.add_argument(
        "--batch-size",
        type=_positive_int,
        default=default_batch,
        help="series per model batch and per streamed chunk (default: %(default)s)",
    )
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    group.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="compute precision; auto is bfloat16 where the CPU or GPU runs it natively (default: %(default)s)",
    )


# Per command: its line in `tsmojo --help`, its description, its examples, and what its input file is.
COMMAND_TEXTS = {
    "forecast": (
        "forecast every series of a CSV/Parquet file",
        "Forecast every series of a long-format CSV or Parquet file (streamed in chunks).",
        FORECAST_EPILOG,
        "long-format .csv or .parquet file, rows grouped by series",
    ),
    "evaluate": (
        "rolling-origin backtest: MASE, WQL, SQL",
        "Rolling-origin backtest of the model on the series of a file.",
        EVALUATE_EPILOG,
        "long-format .csv or .parquet file",
    ),
    "plot": (
        "fan charts (PNG) of forecasts",
        "PNG fan charts: history, median, 10-90%% and 1-99%% bands.",
        PLOT_EPILOG,
        "the history: long-format .csv or .parquet file",
    ),
}


def _add_command(commands, name: str) -> argparse.ArgumentParser:
    """The subcommand ``name``, whose first argument is the long-format file it reads."""
    summary, description, epilog, input_help = COMMAND_TEXTS[name]
    command = commands.add_parser(
        name, help=summary, epilog=epilog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    command.add_argument("input", type=Path, help=input_help)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tsmojo",
        description="Zero-shot probabilistic time-series forecasting.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from tsmojo import __version__
    from tsmojo.metrics import DEFAULT_QUANTILE_LEVELS

    parser.add_argument("--version", action="version", version=f"tsmojo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    forecast = _add_command(commands, "forecast")
    forecast.add_argument("-o", "--output", type=Path, required=True, help="forecasts file, .csv or .parquet")
    forecast.add_argument("-H", "--horizon", type=_positive_int, required=True, help="steps to forecast")
    _add_data_options(forecast)
    forecast.add_argument(
        "--future-covariates",
        type=Path,
        metavar="FILE",
        help="known-future covariates: id, timestamp and covariate columns for the H future steps",
    )
    forecast.add_argument(
        "--quantiles",
        type=_float_list,
        default=list(DEFAULT_QUANTILE_LEVELS),
        help="comma-separated quantile levels (default: 0.1,...,0.9)",
    )
    forecast.add_argument(
        "--min-length",
        type=_positive_int,
        default=3,
        help="series with fewer observed values are reported as too short (default: %(default)s)",
    )
    _add_model_options(forecast)
    run = forecast.add_argument_group("run")
    run.add_argument("--engine", choices=["local", "ray"], default="local", help="local (default) or ray (Ray Data)")
    run.add_argument(
        "--ray-address", help="join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local one"
    )
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted run without redoing finished chunks"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar and no messages except errors")
    run.add_argument("--allow-errors", action="store_true", help="exit 0 even if some series could not be forecast")
    run.add_argument("--nixtla-names", action="store_true", help="name columns tsmojo, tsmojo-q-10, ... (Nixtla style)")
    run.add_argument("--no-plot", action="store_true", help="do not write OUTPUT-stem.png")

    evaluate = _add_command(commands, "evaluate")
    evaluate.add_argument("-H", "--horizon", type=_positive_int, required=True, help="steps per window")
    evaluate.add_argument("--windows", type=_positive_int, default=1, help="windows per series (default: 1)")
    evaluate.add_argument("--step", type=_positive_int, help="distance between window starts (default: H)")
    evaluate.add_argument("--seasonality", type=_positive_int, default=1, help="m of the seasonal error (default: 1)")
    evaluate.add_argument("-o", "--output", type=Path, required=True, help="per-series table (.csv)")
    evaluate.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _add_data_options(evaluate)
    _add_model_options(evaluate)

    plot = _add_command(commands, "plot")
    plot.add_argument("-f", "--forecasts", type=Path, help="forecasts from `tsmojo forecast`; default: forecast now")
    which = plot.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", help="comma-separated series ids")
    which.add_argument("--sample", type=_positive_int, metavar="N", help="N series picked at random (see --seed)")
    plot.add_argument("--seed", type=int, default=0, help="seed of --sample (default: 0)")
    plot.add_argument("-H", "--horizon", type=_positive_int, help="steps to forecast (needed without --forecasts)")
    plot.add_argument("--history", type=_positive_int, help="past points to show (default: max(60, 5*H))")
    plot.add_argument("-o", "--output", type=Path, required=True, help="directory for the PNGs")
    _add_data_options(plot)
    _add_model_options(plot)

    commands.add_parser("pretrain", help="pretrain a model (see tsmojo pretrain --help)", add_help=False)
    return parser


# -- helpers ---------------------------------------------------------------------------------------


def _say(args, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, flush=True)


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _targets(args) -> list[str] | None:
    return [t.strip() for t in args.target.split(",") if t.strip()] if args.target else None


def _read_all(path: Path, id_column: str | None):
    import pandas as pd

    from tsmojo.frames import resolve_columns
    from tsmojo.io import InputError, input_columns, iter_frames

    if not path.is_file():
        raise InputError(f"{path} does not exist")
    if id_column is None:
        try:
            id_column = resolve_columns(pd.DataFrame(columns=input_columns(path)))[0]
        except ValueError:
            id_column = None
    return pd.concat(list(iter_frames(path, id_column=id_column)), ignore_index=True)


def _resolve(df, args):
    from tsmojo.frames import resolve_columns
    from tsmojo.io import InputError

    try:
        return resolve_columns(df, args.id_column, args.timestamp_column, _targets(args))
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _pipeline(args):
    from tsmojo.pipeline import TSMojoPipeline

    return TSMojoPipeline.from_pretrained(args.model, device=args.device, dtype=args.dtype)


# -- commands --------------------------------------------------------------------------------------


def cmd_forecast(args) -> int:
    from tsmojo.batch import ForecastJob, run_forecast

    job = ForecastJob(
        input=args.input,
        output=args.output,
        prediction_length=args.horizon,
        id_column=args.id_column,
        timestamp_column=args.timestamp_column,
        target=_targets(args),
        future_covariates=args.future_covariates,
        freq=args.freq,
        quantiles=tuple(args.quantiles),
        model=args.model,
        context_length=args.context_length,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        fill_gaps=args.fill_gaps,
        min_length=args.min_length,
        nixtla_names=args.nixtla_names,
        resume=args.resume,
        quiet=args.quiet,
        plot_series=0 if args.no_plot else 4,
    )
    if args.engine == "ray":
        from tsmojo.ray_engine import run_forecast_ray

        summary = run_forecast_ray(job, address=args.ray_address, log=_warn)
    else:
        summary = run_forecast(job, log=_warn)
    rate = summary.num_series / summary.seconds if summary.seconds > 0 else float("nan")
    _say(
        args,
        f"Forecasts for {summary.num_forecast:,} of {summary.num_series:,} series written to {summary.output} "
        f"({summary.seconds:.1f}s, {rate:,.1f} series/s)",
    )
    if summary.plot_forecasts is not None and summary.columns is not None and not args.no_plot:
        from tsmojo.plotting import default_history_points, plot_forecast_grid

        id_column, timestamp_column, targets = summary.columns
        forecasts = summary.plot_forecasts
        if "target_name" in forecasts.columns:
            forecasts = forecasts[forecasts["target_name"] == targets[0]]
        png = summary.output.with_name(summary.output.name.split(".")[0] + ".png")
        try:
            plot_forecast_grid(
                summary.plot_history,
                forecasts,
                png,
                id_column,
                timestamp_column,
                targets[0],
                history_points=default_history_points(args.horizon),
            )
            _say(args, f"Plot of the first {forecasts[id_column].nunique()} series written to {png}")
        except Exception as exc:  # noqa: BLE001 - a plot must never fail a forecast run
            _warn(f"warning: could not draw {png}: {exc}")
    if summary.num_errors:
        _warn(f"{summary.num_errors:,} series could not be forecast; ids and reasons in {summary.errors_path}")
        return EXIT_OK if args.allow_errors else EXIT_SERIES_FAILED
    return EXIT_OK


def cmd_evaluate(args) -> int:
    import pandas as pd

    from tsmojo.backtest import rolling_backtest
    from tsmojo.frames import FREQ_ATTR, tasks_from_clean_frame, validate_long_frame
    from tsmojo.io import InputError
    from tsmojo.metrics import DEFAULT_QUANTILE_LEVELS

    df = _read_all(args.input, args.id_column)
    id_column, timestamp_column, targets = _resolve(df, args)
    if len(targets) != 1:
        raise InputError("evaluate takes a single --target column")
    target = targets[0]
    clean, errors = validate_long_frame(
        df, id_column, timestamp_column, targets, freq=args.freq, fill_gaps=args.fill_gaps
    )
    freqs = clean.attrs.pop(FREQ_ATTR)
    clean.attrs = {}
    failed = [(e.series_id, e.reason) for e in errors]  # (id, reason) rows of the errors file
    covariates = [c for c in clean.columns if c not in (id_column, timestamp_column, target)]
    if covariates:
        clean = clean.drop(columns=covariates)
    pipeline = _pipeline(args)

    def predict(contexts: pd.DataFrame, window_freqs: dict) -> pd.DataFrame:
        # the windows are slices of the clean series: validated already
        prepared = tasks_from_clean_frame(contexts, window_freqs, id_column, timestamp_column, [target])
        return pipeline.forecast_frame(
            prepared, args.horizon, DEFAULT_QUANTILE_LEVELS, args.batch_size, args.context_length
        )

    result = rolling_backtest(
        clean,
        predict,
        id_column,
        timestamp_column,
        target,
        args.horizon,
        windows=args.windows,
        step=args.step,
        seasonality=args.seasonality,
        context_length=args.context_length,
        freqs=freqs,
    )
    failed += result.errors
    rank = {v: i for i, v in enumerate(pd.unique(df[id_column]))}
    per_series = result.per_series.sort_values(id_column, key=lambda ids: ids.map(rank), kind="stable")
    output = args.output
    aggregate_path = output.with_name(output.name.split(".")[0] + "_aggregate.csv")
    per_series.to_csv(output, index=False, lineterminator="\n")
    result.aggregate.to_csv(aggregate_path, index=False, lineterminator="\n")
    _say(args, result.aggregate.to_string(index=False))
    _say(args, f"Per-series metrics written to {output}, aggregate to {aggregate_path}")
    if failed:
        errors_path = output.with_name(output.name + ".errors.csv")
        pd.DataFrame(failed, columns=[id_column, "reason"]).to_csv(errors_path, index=False, lineterminator="\n")
        _warn(f"{len(failed):,} series could not be evaluated; ids and reasons in {errors_path}")
    return EXIT_OK


def cmd_plot(args) -> int:
    import numpy as np
    import pandas as pd

    from tsmojo.frames import FREQ_ATTR, tasks_from_clean_frame, validate_long_frame
    from tsmojo.io import InputError
    from tsmojo.plotting import default_history_points, save_fan_charts

    df = _read_all(args.input, args.id_column)
    id_column, timestamp_column, targets = _resolve(df, args)
    target = targets[0]
    all_ids = list(pd.unique(df[id_column].dropna()))
    if args.ids:
        wanted = [i.strip() for i in args.ids.split(",") if i.strip()]
        by_text = {str(i): i for i in all_ids}
        unknown = [i for i in wanted if i not in by_text]
        if unknown:
            raise InputError(f"--ids: no series {unknown} in {args.input}")
        ids = [by_text[i] for i in wanted]
    else:
        rng = np.random.default_rng(args.seed)
        picked = sorted(rng.choice(len(all_ids), size=min(args.sample, len(all_ids)), replace=False))
        ids = [all_ids[i] for i in picked]
    history = df[df[id_column].isin(ids)]
    if args.forecasts is not None:
        forecasts = _read_all(args.forecasts, id_column)
        forecasts = forecasts[forecasts[id_column].astype(str).isin({str(i) for i in ids})]
        horizon = int(forecasts.groupby(id_column).size().max()) if len(forecasts) else 1
    else:
        if args.horizon is None:
            raise InputError("plot needs -H/--horizon to forecast (or --forecasts FILE)")
        horizon = args.horizon
        clean, errors = validate_long_frame(
            history, id_column, timestamp_column, targets, freq=args.freq, fill_gaps=args.fill_gaps
        )
        for error in errors:
            _warn(f"series {error.series_id!r} skipped: {error.reason}")
        if clean.empty:
            raise InputError("none of the chosen series can be forecast")
        freqs = clean.attrs.pop(FREQ_ATTR)
        clean.attrs = {}
        # the other target columns, if any, are covariates of the one drawn (as in predict_df)
        prepared = tasks_from_clean_frame(clean, freqs, id_column, timestamp_column, [target])
        forecasts = _pipeline(args).forecast_frame(
            prepared, horizon, [0.01, 0.1, 0.5, 0.9, 0.99], args.batch_size, args.context_length
        )
        ids = [i for i in ids if i in set(clean[id_column])]
    if "target_name" in forecasts.columns:
        forecasts = forecasts[forecasts["target_name"] == target]
    paths = save_fan_charts(
        history,
        forecasts,
        args.output,
        id_column,
        timestamp_column,
        target,
        ids,
        history_points=args.history or default_history_points(horizon),
    )
    for path in paths:
        _say(args, str(path))
    _say(args, f"{len(paths)} plot(s) written to {args.output}")
    return EXIT_OK


def _os_error_text(exc: OSError, command: str) -> str:
    """One line saying what failed and what to do."""
    import errno

    where = f" {exc.filename}" if exc.filename else ""
    what = f"{exc.strerror or exc}{':' + where if where else ''}"
    if exc.errno == errno.ENOSPC:
        hint = "free some space, then rerun" + (
            " with --resume (finished chunks are kept)" if command == "forecast" else ""
        )
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        hint = "write to a directory you can write to (-o)"
    elif exc.errno == errno.EISDIR:
        hint = "-o must name a file, not a directory"
    else:
        hint = "check the paths and rerun"
    return f"{what}; {hint}"


def cmd_pretrain(argv: list[str]) -> int:
    from tsmojo import pretrain  # lazy: pulls in Lightning

    return int(pretrain.main(argv) or 0)


COMMANDS = {"forecast": cmd_forecast, "evaluate": cmd_evaluate, "plot": cmd_plot}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    tune_cpu_allocator()
    if argv and argv[0] == "pretrain":
        return cmd_pretrain(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    from tsmojo.io import InputError

    try:
        return COMMANDS[args.command](args)
    except (InputError, FileNotFoundError, ValueError) as exc:  # ValueError: e.g. an unknown --freq
        _warn(f"tsmojo {args.command}: error: {exc}")
        return EXIT_USAGE
    except OSError as exc:  # read-only file system, full disk, a directory where a file goes...
        _warn(f"tsmojo {args.command}: error: {_os_error_text(exc, args.command)}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _warn("interrupted; rerun with --resume to continue" if args.command == "forecast" else "interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
