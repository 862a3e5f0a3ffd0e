"""Which series make the WQL difference between two models on the dev datasets.

    python benchmarks/wql_gap.py BASELINE CANDIDATE [--datasets a,b,...] [--top 5] [--output FILE]

BASELINE and CANDIDATE are bundled model names or model directories. WQL divides the quantile
losses summed over a dataset by the sum of ``|y|``, so each series adds its own losses over that
common sum, and a few series of large scale can carry a dataset's score: on fred_md, one series of
about two million makes 99% of the gap between tsmojo-mini-v8 and a fork of mini_r2
(``results/wql_gap_r2_late_short.md``). For each dataset this prints both
models' WQL and the series with the largest part of the gap, so a difference can be read as broad
or as a handful of series before it is acted on.

Forecasts come from ``TSMojoPipeline.predict`` on the test windows of ``zero_shot.py`` at its
quantile levels (``EVAL_QUANTILES``), with the pipeline's defaults (context and dtype), so the
dataset WQL printed is the one ``zero_shot.py`` reports. The last table gives both models'
geometric mean of WQL relative to seasonal naive over the datasets, as ``zero_shot.py`` does, and
the same with each model's single worst series per dataset (against the other model) given the
other's loss: how much of the aggregate gap one series per dataset makes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    AGGREGATE_DATASETS,
    EVAL_QUANTILES,
    EvalDataset,
    geometric_mean,
    load_dataset,
    seasonal_naive_values,
)
from tsmojo import TSMojoPipeline  # noqa: E402
from tsmojo.metrics import quantile_loss_sums  # noqa: E402


def series_wql_parts(
    labels: Sequence[np.ndarray], forecasts: Sequence[np.ndarray], levels: Sequence[float]
) -> np.ndarray:
    """Each series' part of the dataset's WQL, (N,): its quantile losses, averaged over the levels,
    over the dataset's sum of observed ``|y|``. The parts sum to the dataset's WQL.

    labels: N arrays (H,), NaN where missing; forecasts: N arrays (H, Q) at ``levels`` (Q,)."""
    sums = [
        quantile_loss_sums(np.asarray(y, float), np.asarray(f, float), levels)
        for y, f in zip(labels, forecasts, strict=True)
    ]
    total_abs = sum(float(abs_sum) for _, abs_sum in sums)
    if total_abs == 0:
        raise ValueError("the labels hold no observed nonzero value: WQL is undefined")
    return np.array([float(np.mean(loss_sums)) / total_abs for loss_sums, _ in sums])


def gap_table(dataset: EvalDataset, baseline: np.ndarray, candidate: np.ndarray, top: int) -> pd.DataFrame:
    """The ``top`` series of ``dataset`` by how much more WQL the candidate's forecasts carry than
    the baseline's (``baseline``, ``candidate``: the parts of :func:`series_wql_parts`)."""
    gap = candidate - baseline
    total = float(gap.sum())
    frame = pd.DataFrame(
        {
            "item_id": dataset.item_ids,
            "context_length": [len(c) for c in dataset.contexts],
            "last_value": [float(c[~np.isnan(c)][-1]) if (~np.isnan(c)).any() else np.nan for c in dataset.contexts],
            "baseline": baseline,
            "candidate": candidate,
            "gap": gap,
            "share_of_gap": gap / total if total else np.nan,
        }
    )
    return frame.sort_values("gap", ascending=total < 0).head(top).reset_index(drop=True)


def worst_series_swapped(baseline: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both models' WQL parts, each with its single worst series against the other (the largest
    excess of its part over the other's) given the other's part."""
    swapped_baseline, swapped_candidate = baseline.copy(), candidate.copy()
    worst_baseline, worst_candidate = int(np.argmax(baseline - candidate)), int(np.argmax(candidate - baseline))
    swapped_baseline[worst_baseline] = candidate[worst_baseline]
    swapped_candidate[worst_candidate] = baseline[worst_candidate]
    return swapped_baseline, swapped_candidate


def model_forecasts(pipeline: TSMojoPipeline, dataset: EvalDataset) -> list[np.ndarray]:
    """(H, Q) forecasts of ``pipeline`` at ``EVAL_QUANTILES`` for each test window of ``dataset``."""
    quantiles, _ = pipeline.predict(dataset.contexts, dataset.prediction_length, quantile_levels=list(EVAL_QUANTILES))
    return [q[0] for q in quantiles]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="bundled model name or model directory")
    parser.add_argument("candidate", help="bundled model name or model directory")
    parser.add_argument("--datasets", default=",".join(AGGREGATE_DATASETS), help="comma-separated eval datasets")
    parser.add_argument("--top", type=int, default=5, help="series listed per dataset")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--output", type=Path, help="also write the report to this markdown file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> str:
    args = parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    lines = [
        f"# WQL gap: {args.candidate} against {args.baseline}",
        "",
        f"`python benchmarks/wql_gap.py {args.baseline} {args.candidate} --datasets {args.datasets} --top {args.top}`",
        "",
        "Per series: its part of the dataset's WQL (its quantile losses over the dataset's sum of |y|) "
        "for each model, the difference, and that difference's share of the dataset's gap.",
    ]
    relative: dict[str, list[float]] = {
        "baseline": [],
        "candidate": [],
        "baseline, swapped": [],
        "candidate, swapped": [],
    }
    pipelines = {
        "baseline": TSMojoPipeline.from_pretrained(args.baseline),
        "candidate": TSMojoPipeline.from_pretrained(args.candidate),
    }
    for name in args.datasets.split(","):
        dataset = load_dataset(name)
        parts = {
            role: series_wql_parts(dataset.labels, model_forecasts(pipeline, dataset), EVAL_QUANTILES)
            for role, pipeline in pipelines.items()
        }
        naive = series_wql_parts(dataset.labels, list(seasonal_naive_values(dataset)), EVAL_QUANTILES).sum()
        swapped = worst_series_swapped(parts["baseline"], parts["candidate"])
        for key, values in (*parts.items(), ("baseline, swapped", swapped[0]), ("candidate, swapped", swapped[1])):
            relative[key].append(float(values.sum()) / naive)
        table = gap_table(dataset, parts["baseline"], parts["candidate"], args.top)
        lines += [
            "",
            f"## {dataset.name}: WQL {parts['baseline'].sum():.4f} (baseline) against {parts['candidate'].sum():.4f} "
            f"(candidate), {len(dataset)} series",
            "",
            "| item_id | context length | last value | baseline | candidate | gap | share of gap |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {row.item_id} | {row.context_length} | {row.last_value:.4g} | {row.baseline:.5f} | "
            f"{row.candidate:.5f} | {row.gap:+.5f} | {row.share_of_gap:.0%} |"
            for row in table.itertuples()
        ]
    lines += [
        "",
        f"## Relative WQL (to seasonal naive), geometric mean over {len(relative['baseline'])} datasets",
        "",
        "| | baseline | candidate |",
        "|---|---|---|",
        f"| as measured | {geometric_mean(relative['baseline']):.3f} | {geometric_mean(relative['candidate']):.3f} |",
        f"| each model's worst series per dataset given the other's loss | "
        f"{geometric_mean(relative['baseline, swapped']):.3f} | {geometric_mean(relative['candidate, swapped']):.3f} |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        args.output.write_text(report)
    return report


if __name__ == "__main__":
    main()
