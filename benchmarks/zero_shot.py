"""Zero-shot benchmark of tsmojo against seasonal naive, statsforecast baselines and published models.

Examples::

    python benchmarks/zero_shot.py                       # the 17 datasets, all models
    python benchmarks/zero_shot.py --quick               # 4 small datasets
    python benchmarks/zero_shot.py --datasets m1_yearly,hospital --models tsmojo,seasonal_naive
    python benchmarks/zero_shot.py --datasets /path/to/folder_in_eval_format

tsmojo is run through ``tsmojo.gluonts.TSMojoPredictor`` (the GluonTS route); every measured model
is scored by the same GluonTS metric code (``benchmarks/common.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    AGGREGATE_DATASETS,
    ALL_DATASETS,
    EVAL_QUANTILES,
    QUICK_DATASETS,
    REPRODUCIBLE_SEASONAL_NAIVE,
    RESULTS_DIR,
    STATS_MAX_CONTEXT,
    STATS_MODELS,
    EvalDataset,
    geometric_mean,
    load_dataset,
    load_published,
    quantile_forecasts,
    score_forecasts,
    seasonal_naive_values,
    stats_forecast_values,
)
from tsmojo.bundled import BUNDLED_DIR, DEFAULT_MODEL  # noqa: E402

if TYPE_CHECKING:
    from tsmojo import TSMojoPipeline

DEFAULT_MODEL_PATH = BUNDLED_DIR / DEFAULT_MODEL
MEASURED_MODELS = ("tsmojo", "seasonal_naive", *STATS_MODELS)
# Published models shown beside ours (names as normalised by ``load_published``).
PUBLISHED_MODELS = (
    "tirex",
    "chronos_bolt_tiny",
    "chronos_bolt_small",
    "chronos_bolt_base",
    "timesfm-2.0",
    "timesfm",
    "moirai_large",
    "auto_ets",
    "auto_arima",
    "auto_theta",
    "seasonal_naive",
)
SN_TOLERANCE = 1e-3


# ----------------------------------------------------------------------------------------------
# tsmojo through GluonTS
# ----------------------------------------------------------------------------------------------
def make_tsmojo_predictor(
    prediction_length: int, model_path: str | Path | TSMojoPipeline, batch_size: int, tsmojo_options: dict | None = None
):
    """``TSMojoPredictor`` of ``tsmojo.gluonts`` (its default 21 quantile levels include 0.1..0.9).
    ``model_path``: a bundled model name, a model directory or a loaded pipeline (reused as is).
    ``tsmojo_options``: further predictor arguments (``context_length``, ``dtype``)."""
    from tsmojo.gluonts import TSMojoPredictor

    return TSMojoPredictor(
        model_path, prediction_length=prediction_length, batch_size=batch_size, **(tsmojo_options or {})
    )


def tsmojo_forecasts(
    dataset: EvalDataset,
    model_path: str | Path | TSMojoPipeline,
    batch_size: int = 256,
    tsmojo_options: dict | None = None,
) -> tuple[list, float]:
    """Forecasts of the GluonTS predictor on the test windows and the seconds they took."""
    predictor = make_tsmojo_predictor(dataset.prediction_length, model_path, batch_size, tsmojo_options)
    inputs = list(dataset.test_data().input)
    start = time.perf_counter()
    forecasts = list(predictor.predict(inputs))
    return forecasts, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------
# Running models
# ----------------------------------------------------------------------------------------------
def _cache_path(cache_dir: Path, dataset: EvalDataset, model: str, stats_max_context: int) -> Path:
    suffix = f"_ctx{stats_max_context}" if model in STATS_MODELS else ""
    return cache_dir / f"{dataset.name}__{len(dataset)}__{model}{suffix}.json"


def run_model(
    dataset: EvalDataset,
    model: str,
    model_path: str | Path | TSMojoPipeline = DEFAULT_MODEL_PATH,
    batch_size: int = 256,
    n_jobs: int = 2,
    stats_max_context: int = STATS_MAX_CONTEXT,
    cache_dir: str | Path | None = None,
    tsmojo_options: dict | None = None,
) -> dict:
    """Forecast ``dataset`` with ``model`` and score it: a row of the results table.

    Baseline rows (deterministic) are cached as JSON in ``cache_dir`` when given, so that a new
    tsmojo checkpoint can be scored without re-fitting the statistical models.
    """
    cache = None
    if cache_dir is not None and model != "tsmojo":
        cache = _cache_path(Path(cache_dir), dataset, model, stats_max_context)
        if cache.is_file():
            return json.loads(cache.read_text())
    if model == "tsmojo":
        forecasts, seconds = tsmojo_forecasts(dataset, model_path, batch_size, tsmojo_options)
    else:
        start = time.perf_counter()
        if model == "seasonal_naive":
            values = seasonal_naive_values(dataset)
        elif model in STATS_MODELS:
            values = stats_forecast_values(dataset, model, max_context=stats_max_context, n_jobs=n_jobs)
        else:
            raise ValueError(f"unknown model {model!r}; choose from {MEASURED_MODELS}")
        seconds = time.perf_counter() - start
        forecasts = quantile_forecasts(dataset, values, EVAL_QUANTILES)
    scores = score_forecasts(dataset, forecasts)
    row = {
        "dataset": dataset.name,
        "model": model,
        **scores,
        "source": "measured",
        "wall_time_s": seconds,
        "series_per_s": len(dataset) / seconds if seconds > 0 else float("nan"),
        "n_series": len(dataset),
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(row, indent=1))
    return row


def evaluate(
    datasets: Sequence[str],
    models: Sequence[str],
    model_path: str | Path = DEFAULT_MODEL_PATH,
    batch_size: int = 256,
    n_jobs: int = 2,
    max_series: int | None = None,
    stats_max_context: int = STATS_MAX_CONTEXT,
    verbose: bool = True,
    cache_dir: str | Path | None = None,
    cached_only: Sequence[str] = (),
    tsmojo_options: dict | None = None,
) -> pd.DataFrame:
    """Measured rows for every (dataset, model).

    Models run one after the other over all datasets, cheapest first (AutoARIMA last), so that a
    run cut short still covers every dataset for the fast models. Models in ``cached_only`` are
    only read from ``cache_dir``; datasets without a cached row are left out for them.
    """
    loaded = {name: load_dataset(name, max_series=max_series) for name in datasets}
    cost = {"tsmojo": 0, "seasonal_naive": 1, "auto_theta": 2, "auto_ets": 3, "auto_arima": 4}
    rows = []
    for model in sorted(models, key=lambda m: cost.get(m, 5)):
        for dataset in loaded.values():
            if model in cached_only:
                path = _cache_path(Path(cache_dir), dataset, model, stats_max_context) if cache_dir else None
                if path is None or not path.is_file():
                    print(f"{dataset.name:20s} {model:15s} not cached: left out", flush=True)
                    continue
            row = run_model(
                dataset, model, model_path, batch_size, n_jobs, stats_max_context, cache_dir, tsmojo_options
            )
            rows.append(row)
            if verbose:
                print(
                    f"{dataset.name:20s} {model:15s} MASE {row['MASE']:.4f} WQL {row['WQL']:.4f} "
                    f"{row['wall_time_s']:8.2f} s {row['series_per_s']:9.1f} series/s",
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    order = {name: i for i, name in enumerate(loaded)}
    return frame.sort_values("dataset", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
def add_relative(frame: pd.DataFrame) -> pd.DataFrame:
    """rel_MASE, rel_WQL: model / seasonal naive of the same source (measured or published)."""
    frame = frame.copy()
    base = frame[frame["model"] == "seasonal_naive"].set_index(["source", "dataset"])[["MASE", "WQL"]]
    keys = pd.MultiIndex.from_frame(frame[["source", "dataset"]])
    for metric in ("MASE", "WQL"):
        frame[f"rel_{metric}"] = frame[metric].to_numpy() / base[metric].reindex(keys).to_numpy()
    return frame


def published_rows(datasets: Sequence[str], models: Sequence[str] = PUBLISHED_MODELS) -> pd.DataFrame:
    pub = load_published()
    pub = pub[pub["dataset"].isin(datasets) & pub["model"].isin(models)].copy()
    pub["source"] = "published"
    return pub.drop(columns=["benchmark"])


def summarize(frame: pd.DataFrame, datasets: Sequence[str] = AGGREGATE_DATASETS) -> pd.DataFrame:
    """Geometric mean of the relative scores over ``datasets`` per (model, source).

    A model missing a dataset gets no aggregate (NaN) rather than a mean over fewer datasets.
    """
    rows = []
    for (model, source), group in frame.groupby(["model", "source"], sort=False):
        group = group[group["dataset"].isin(datasets)]
        complete = set(group["dataset"]) >= set(datasets)
        rows.append(
            {
                "model": model,
                "source": source,
                "n_datasets": group["dataset"].nunique(),
                "gmean_rel_MASE": geometric_mean(group["rel_MASE"]) if complete else float("nan"),
                "gmean_rel_WQL": geometric_mean(group["rel_WQL"]) if complete else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def markdown_report(
    frame: pd.DataFrame, datasets: Sequence[str], command: str, check_seasonal_naive: bool = True
) -> str:
    """Markdown: aggregate table, per-dataset relative scores, seasonal-naive check, timings."""
    measured = frame[frame["source"] == "measured"]
    lines = [f"Reproduce: `{command}`", ""]
    core = [d for d in AGGREGATE_DATASETS if d in datasets] or list(datasets)
    agg12 = summarize(frame, core)
    agg_all = summarize(measured, datasets)
    on_all = set(datasets) != set(core)
    totals = measured.groupby("model")[["wall_time_s", "n_series"]].sum()
    lines.append("### Aggregate: geometric mean of model / seasonal naive (lower is better)")
    lines.append("")
    header = f"| model | source | MASE ({len(core)}) | WQL ({len(core)}) |"
    sep = "|---|---|---|---|"
    if on_all:
        header += f" MASE ({len(datasets)}) | WQL ({len(datasets)}) |"
        sep += "---|---|"
    header += " forecast wall time (s) | series/s |"
    sep += "---|---|"
    lines += [header, sep]
    agg12 = agg12.sort_values(["gmean_rel_MASE"], na_position="last")
    for _, row in agg12.iterrows():
        cells = [row["model"], row["source"], _fmt(row["gmean_rel_MASE"]), _fmt(row["gmean_rel_WQL"])]
        if on_all:
            match = agg_all[(agg_all["model"] == row["model"]) & (agg_all["source"] == row["source"])]
            cells += (
                [_fmt(match["gmean_rel_MASE"].iloc[0]), _fmt(match["gmean_rel_WQL"].iloc[0])]
                if len(match)
                else [
                    "-",
                    "-",
                ]
            )
        if row["source"] == "measured" and row["model"] in totals.index:
            wall = totals.loc[row["model"], "wall_time_s"]
            cells += [_fmt(wall, 1), _fmt(totals.loc[row["model"], "n_series"] / wall, 1)]
        else:
            cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Measured models are relative to our seasonal naive, published ones to the published seasonal naive "
        "(they differ only on tourism_yearly, see shared/datasets/README.md). '-' = a dataset is missing."
    )
    for metric in ("MASE", "WQL"):
        lines += ["", f"### Relative {metric} per dataset (model / seasonal naive)", ""]
        present = [d for d in datasets if d in set(frame["dataset"])]
        lines.append("| model | source | " + " | ".join(present) + " |")
        lines.append("|---|---|" + "---|" * len(present))
        for (model, source), group in frame.groupby(["model", "source"], sort=False):
            values = group.set_index("dataset")[f"rel_{metric}"]
            cells = [_fmt(values.get(d, float("nan"))) for d in present]
            lines.append(f"| {model} | {source} | " + " | ".join(cells) + " |")
    lines += ["", "### Absolute scores of the measured models", ""]
    lines.append("| dataset | model | MASE | WQL | wall time (s) | series/s |")
    lines.append("|---|---|---|---|---|---|")
    for _, row in measured.iterrows():
        lines.append(
            f"| {row['dataset']} | {row['model']} | {_fmt(row['MASE'], 4)} | {_fmt(row['WQL'], 4)} | "
            f"{_fmt(row['wall_time_s'], 2)} | {_fmt(row['series_per_s'], 1)} |"
        )
    check = seasonal_naive_check(frame) if check_seasonal_naive else pd.DataFrame()
    if len(check):
        lines += ["", "### Seasonal naive: ours vs published", ""]
        lines.append("| dataset | MASE ours | MASE published | diff | WQL ours | WQL published | diff | flag |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for _, row in check.iterrows():
            lines.append(
                f"| {row['dataset']} | {_fmt(row['MASE_ours'], 4)} | {_fmt(row['MASE_published'], 4)} | "
                f"{row['MASE_diff']:+.4f} | {_fmt(row['WQL_ours'], 4)} | {_fmt(row['WQL_published'], 4)} | "
                f"{row['WQL_diff']:+.4f} | {row['flag']} |"
            )
    stats = [m for m in STATS_MODELS if m in set(measured["model"])]
    if stats and check_seasonal_naive:
        pub = frame[frame["source"] == "published"].set_index(["dataset", "model"])
        lines += ["", "### Our statsforecast baselines vs the published (fev) runs: MASE ours / published", ""]
        lines.append("| model | " + " | ".join(present) + " |")
        lines.append("|---|" + "---|" * len(present))
        for model in stats:
            ours = measured[measured["model"] == model].set_index("dataset")["MASE"]
            cells = []
            for d in present:
                ref = pub["MASE"].get((d, model), float("nan"))
                cells.append(_fmt(ours.get(d, float("nan")) / ref))
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seasonal_naive_check(frame: pd.DataFrame) -> pd.DataFrame:
    """Our seasonal naive against the published one, per dataset; flags differences > 1e-3."""
    ours = frame[(frame["model"] == "seasonal_naive") & (frame["source"] == "measured")].set_index("dataset")
    pub = frame[(frame["model"] == "seasonal_naive") & (frame["source"] == "published")].set_index("dataset")
    rows = []
    for dataset in ours.index.intersection(pub.index):
        row = {"dataset": dataset}
        worst = 0.0
        for metric in ("MASE", "WQL"):
            a, b = float(ours.loc[dataset, metric]), float(pub.loc[dataset, metric])
            row |= {f"{metric}_ours": a, f"{metric}_published": b, f"{metric}_diff": a - b}
            worst = max(worst, abs(a - b))
        expected = dataset in REPRODUCIBLE_SEASONAL_NAIVE
        if worst <= SN_TOLERANCE:
            row["flag"] = "ok"
        else:
            row["flag"] = "MISMATCH (expected to reproduce)" if expected else "differs (known, see README)"
        rows.append(row)
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, path: Path, datasets: Sequence[str] = AGGREGATE_DATASETS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    agg = summarize(frame, datasets).dropna(subset=["gmean_rel_MASE"])
    agg = agg.sort_values("gmean_rel_MASE")
    labels = [
        f"{m} ({'ours' if s == 'measured' else 'pub.'})" for m, s in zip(agg["model"], agg["source"], strict=True)
    ]
    colors = [
        "tab:red" if m == "tsmojo" else ("tab:blue" if s == "measured" else "tab:gray")
        for m, s in zip(agg["model"], agg["source"], strict=True)
    ]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.35 * len(agg) + 1.5), sharey=True)
    for ax, metric in zip(axes, ("gmean_rel_MASE", "gmean_rel_WQL"), strict=True):
        ax.barh(labels, agg[metric], color=colors)
        ax.axvline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel(f"{metric.split('_')[-1]} relative to seasonal naive (geo. mean, {len(datasets)} datasets)")
        for y, v in enumerate(agg[metric]):
            ax.text(v, y, f" {v:.3f}", va="center", fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("Zero-shot benchmark (lower is better); red: tsmojo, blue: measured here, gray: published")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# API for the model card
# ----------------------------------------------------------------------------------------------
def aggregate_for_model(
    model_path: str | Path = DEFAULT_MODEL_PATH,
    datasets: Sequence[str] = AGGREGATE_DATASETS,
    batch_size: int = 256,
    verbose: bool = False,
) -> dict:
    """Zero-shot aggregate of the tsmojo model in ``model_path`` on ``datasets`` (default: the 12).

    Runs tsmojo and seasonal naive on the same windows. Returns ``{"gmean_rel_MASE",
    "gmean_rel_WQL", "per_dataset": DataFrame(dataset, model, MASE, WQL, rel_MASE, rel_WQL, ...)}``.
    """
    measured = add_relative(
        evaluate(datasets, ("tsmojo", "seasonal_naive"), model_path, batch_size=batch_size, verbose=verbose)
    )
    ours = measured[measured["model"] == "tsmojo"]
    return {
        "gmean_rel_MASE": geometric_mean(ours["rel_MASE"]),
        "gmean_rel_WQL": geometric_mean(ours["rel_WQL"]),
        "per_dataset": measured,
    }


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK_DATASETS)}")
    parser.add_argument("--datasets", help="comma-separated names (or eval-format folders); default: all 17")
    parser.add_argument("--models", default=",".join(MEASURED_MODELS), help="comma-separated measured models")
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_PATH), help="tsmojo model directory")
    parser.add_argument("--batch-size", type=int, default=256, help="tsmojo series per forward pass")
    parser.add_argument("--context-length", type=int, help="tsmojo context (default: the model's own default)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="tsmojo precision")
    parser.add_argument("--n-jobs", type=int, default=2, help="statsforecast processes")
    parser.add_argument("--stats-max-context", type=int, default=STATS_MAX_CONTEXT)
    parser.add_argument("--max-series", type=int, help="first N series per dataset (smoke runs only)")
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--output-name", help="file stem; default zero_shot (zero_shot_quick with --quick)")
    parser.add_argument("--no-published", action="store_true", help="do not join published results")
    parser.add_argument(
        "--cached-only",
        default="auto_arima",
        help="comma-separated models only read from the cache, never fitted (datasets without a cached row are "
        "left out of their rows). Default auto_arima: its cold fits take hours on 2 cores (m4_hourly alone ~8 h); "
        "pass '' to fit it",
    )
    parser.add_argument(
        "--cache-dir",
        default=str(RESULTS_DIR / "cache"),
        help="reuse baseline rows (seasonal naive, statsforecast) stored here; '' disables",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads for tsmojo (1: fastest on a shared 2-core machine)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    if args.datasets:
        datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    else:
        datasets = list(QUICK_DATASETS if args.quick else ALL_DATASETS)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    stem = args.output_name or ("zero_shot_quick" if args.quick else "zero_shot")
    if args.max_series and not args.output_name:
        stem += f"_max{args.max_series}"
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shown = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python benchmarks/zero_shot.py", *(shlex.quote(a) for a in shown)])
    if "seasonal_naive" not in models:
        models.append("seasonal_naive")  # the reference of every relative score

    import torch

    torch.set_num_threads(args.torch_threads)
    start = time.perf_counter()
    measured = evaluate(
        datasets,
        models,
        args.model_path,
        args.batch_size,
        args.n_jobs,
        args.max_series,
        args.stats_max_context,
        cache_dir=args.cache_dir or None,
        cached_only=[m.strip() for m in args.cached_only.split(",") if m.strip()],
        tsmojo_options={"context_length": args.context_length, "dtype": args.dtype},
    )
    total = time.perf_counter() - start
    names = list(dict.fromkeys(measured["dataset"]))
    frame = measured
    if not args.no_published:
        frame = pd.concat([measured, published_rows(names)], ignore_index=True)
    frame = add_relative(frame)

    columns = ["dataset", "model", "MASE", "WQL", "rel_MASE", "rel_WQL", "source"]
    columns += ["wall_time_s", "series_per_s", "n_series"]
    frame[columns].to_csv(output_dir / f"{stem}.csv", index=False, float_format="%.6g")
    report = markdown_report(frame, names, command, check_seasonal_naive=not args.max_series)
    report += f"\nTotal benchmark wall time: {total:.0f} s on {os.cpu_count()} CPU cores.\n"
    (output_dir / f"{stem}.md").write_text(report)
    plot(frame, output_dir / f"{stem}.png", [d for d in AGGREGATE_DATASETS if d in names] or names)

    check = seasonal_naive_check(frame) if not args.max_series else pd.DataFrame()
    if len(check):
        print("\nSeasonal naive, ours - published:")
        for _, row in check.iterrows():
            print(f"  {row['dataset']:20s} MASE {row['MASE_diff']:+.5f} WQL {row['WQL_diff']:+.5f}  {row['flag']}")
    print("\n" + report)
    print(f"wrote {output_dir / stem}.{{csv,md,png}} in {total:.0f} s")
    print(f"reproduce: {command}")
    return frame


if __name__ == "__main__":
    main()
