"""The zero-shot aggregate over several test windows per series, to tell models apart more surely.

    python benchmarks/earlier_windows.py MODEL [MODEL ...] [--windows 3] [--datasets a,b,...] [--output-name NAME]

MODEL is a bundled model name or a model directory, or an ensemble of them joined by ``+``
(``tsmojo-mini-v8+DIR``): the mean of its members' forecasts, quantile level by quantile level, in
data units. Each member is loaded and run once per window, whatever the number of ensembles it
is in, so comparing a model with its ensembles costs one forecast per distinct model.

``zero_shot.py`` scores one window per series (the benchmark's protocol, comparable with published
results). Its 12-dataset WQL can turn on a few series: WQL sums quantile losses over a dataset and
divides by the sum of ``|y|``, so a series of large scale carries its dataset (``wql_gap.py``; on
fred_md one series makes 99% of a gap between two of our models). A checkpoint chosen on that one
window may be chosen on a handful of series. This script also scores the windows that end 1, 2, ...
horizons earlier (:func:`benchmarks.common.earlier_window`): the same series, the same metric code
and the same seasonal naive, so a difference that holds over several windows is a difference
between models.

Per window it prints each model's geometric mean over the datasets of MASE and WQL relative to
seasonal naive (window 0 is ``zero_shot.py``'s number) and then the geometric mean over every
(dataset, window) pair. Series too short for an earlier window (no context point left) are left
out of that window and counted in the report. These windows are still evaluation data: use them to
choose between checkpoints, never to train.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from gluonts.model.forecast import QuantileForecast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    AGGREGATE_DATASETS,
    RESULTS_DIR,
    earlier_window,
    geometric_mean,
    load_dataset,
    score_forecasts,
)
from benchmarks.zero_shot import run_model, tsmojo_forecasts  # noqa: E402
from tsmojo import TSMojoPipeline  # noqa: E402

ENSEMBLE_SEPARATOR = "+"


def ensemble_members(model: str) -> list[str]:
    """The models whose mean forecast ``model`` names: itself, or the parts joined by ``+``."""
    return model.split(ENSEMBLE_SEPARATOR)


def mean_forecast(forecasts: Sequence[QuantileForecast]) -> QuantileForecast:
    """The level-by-level mean of several forecasts of one series (same keys, start and item)."""
    first = forecasts[0]
    if any(f.forecast_keys != first.forecast_keys for f in forecasts):
        raise ValueError(f"series {first.item_id!r}: the ensemble's members forecast different quantile levels")
    values = np.mean([f.forecast_array for f in forecasts], axis=0)
    return QuantileForecast(
        forecast_arrays=values, start_date=first.start_date, forecast_keys=first.forecast_keys, item_id=first.item_id
    )


def window_scores(
    models: Sequence[str], datasets: Sequence[str], windows: int, batch_size: int = 256, verbose: bool = True
) -> pd.DataFrame:
    """One row per (model, dataset, window): MASE and WQL relative to seasonal naive on that
    window, and the number of series scored and left out. A model may be an ensemble
    (``ensemble_members``)."""
    rows = []
    members = list(dict.fromkeys(member for model in models for member in ensemble_members(model)))
    # Loaded once: the predictor built for each (dataset, window) then reuses the pipeline.
    pipelines = {member: TSMojoPipeline.from_pretrained(member) for member in members}
    for name in datasets:
        full = load_dataset(name)
        for back in range(windows):
            dataset, left_out = earlier_window(full, back)
            naive = run_model(dataset, "seasonal_naive")
            forecasts = {member: tsmojo_forecasts(dataset, pipelines[member], batch_size)[0] for member in members}
            for model in models:
                per_series = zip(*(forecasts[member] for member in ensemble_members(model)), strict=True)
                scores = score_forecasts(dataset, [mean_forecast(series) for series in per_series])
                rows.append(
                    dict(
                        model=model,
                        dataset=name,
                        window=back,
                        rel_MASE=scores["MASE"] / naive["MASE"],
                        rel_WQL=scores["WQL"] / naive["WQL"],
                        n_series=len(dataset),
                        left_out=len(left_out),
                    )
                )
                if verbose:
                    row = rows[-1]
                    print(
                        f"{name:18s} window {back} {model[-28:]:28s} MASE {row['rel_MASE']:.3f} "
                        f"WQL {row['rel_WQL']:.3f} ({len(dataset)} series, {len(left_out)} left out)",
                        flush=True,
                    )
    return pd.DataFrame(rows)


def aggregate(scores: pd.DataFrame) -> pd.DataFrame:
    """Geometric means of the relative scores per (model, window), then per model over every
    (dataset, window) pair (``window == "all"``)."""

    def means(model: str, window: str, frame: pd.DataFrame) -> dict:
        mase, wql = geometric_mean(frame["rel_MASE"]), geometric_mean(frame["rel_WQL"])
        return dict(model=model, window=window, MASE=mase, WQL=wql)

    rows = []
    for model, frame in scores.groupby("model", sort=False):
        rows += [means(str(model), str(back), window) for back, window in frame.groupby("window")]
        rows.append(means(str(model), "all", frame))
    return pd.DataFrame(rows)


def markdown(scores: pd.DataFrame, summary: pd.DataFrame, command: str) -> str:
    lines = [f"# Zero-shot scores over {scores['window'].nunique()} windows per series", "", f"`{command}`", ""]
    lines += ["Geometric mean over the datasets of model / seasonal naive (window 0 is `zero_shot.py`'s).", ""]
    lines += ["| model | window | MASE | WQL |", "|---|---|---|---|"]
    lines += [f"| {r.model} | {r.window} | {r.MASE:.3f} | {r.WQL:.3f} |" for r in summary.itertuples()]
    for metric in ("rel_MASE", "rel_WQL"):
        table = scores.pivot_table(index="model", columns="dataset", values=metric, aggfunc=geometric_mean, sort=False)
        table = table[list(dict.fromkeys(scores["dataset"]))]
        lines += ["", f"### {metric[4:]} per dataset, geometric mean over the windows", ""]
        lines += ["| model | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
        lines += [f"| {m} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for m, row in table.iterrows()]
    counts = scores.drop_duplicates(["dataset", "window"])
    counts = counts[counts["left_out"] > 0]
    lines += ["", "Series left out of an earlier window (no context point left): "]
    lines[-1] += ", ".join(f"{r.dataset} window {r.window}: {r.left_out}" for r in counts.itertuples()) or "none."
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "models", nargs="+", help="bundled model names or model directories, or ensembles of them joined by +"
    )
    parser.add_argument("--windows", type=int, default=3, help="windows per series: the last and the ones before it")
    parser.add_argument("--datasets", default=",".join(AGGREGATE_DATASETS), help="comma-separated; default: the 12")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--torch-threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--output-name", help="file stem of the .md and .csv reports; default: print only")
    args = parser.parse_args(argv)
    if args.windows < 1:
        parser.error("--windows must be at least 1")
    torch.set_num_threads(args.torch_threads)
    start = time.perf_counter()
    scores = window_scores(args.models, args.datasets.split(","), args.windows, args.batch_size)
    summary = aggregate(scores)
    command = "python benchmarks/earlier_windows.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = markdown(scores, summary, command)
    print(report)
    print(f"{time.perf_counter() - start:.0f} s")
    if args.output_name:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{args.output_name}.md").write_text(report)
        scores.to_csv(out / f"{args.output_name}.csv", index=False)
    return summary


if __name__ == "__main__":
    main()
