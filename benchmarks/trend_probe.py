"""How much of a steady trend a model carries forward, by context length.

    python benchmarks/trend_probe.py MODEL [MODEL ...] [--lengths 32,36,...] [--horizon 12] [--series 200]

Each series is a noisy straight line (random level, slope of either sign and noise, seed 0), as
many points of history as the longest of ``--lengths`` and ``--horizon`` more. Every model
forecasts the same series cut to each of ``--lengths`` points of history. For each series, the rise
ratio is the forecast median's change from the last observed value to the last step of the horizon,
over the true change: 1 carries the trend on, 0 forecasts it flat. The script prints the median
ratio over the series and the share of series below 0.3 (a trend forecast as almost flat), per
model and context length.

A model should not care whether a line's history has 39, 40 or 41 points. One that does has
learned the length as a feature of its training data: 862 of the real pretraining series have 104
points, which before ``TaskSampler._real`` cut them at random gave most draws of them a 40-point
context before the 64-step training horizon (``tsmojo/recipes/mini_v17_length_fix.yaml``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsmojo import TSMojoPipeline  # noqa: E402


def noisy_lines(count: int, history: int, horizon: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` noisy straight lines: history (count, history) and future (count, horizon)."""
    rng = np.random.default_rng(seed)
    steps = np.arange(history + horizon)
    slope = rng.uniform(0.5, 3.0, count) * rng.choice([-1.0, 1.0], count)
    level, noise = rng.uniform(50.0, 500.0, count), rng.uniform(0.5, 3.0, count)
    lines = level[:, None] + slope[:, None] * steps + noise[:, None] * rng.standard_normal((count, steps.size))
    return lines[:, :history], lines[:, history:]


def rise_ratios(pipeline: TSMojoPipeline, history: np.ndarray, future: np.ndarray, length: int) -> np.ndarray:
    """Per series: the forecast median's rise over the horizon against the true rise."""
    contexts = history[:, -length:]
    quantiles, _ = pipeline.predict(list(contexts), future.shape[1], quantile_levels=[0.5])
    median = np.stack([q[0, :, 0] for q in quantiles])
    last = contexts[:, -1]
    return (median[:, -1] - last) / (future[:, -1] - last)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="bundled model names or model directories")
    parser.add_argument("--lengths", default="32,36,38,39,40,41,42,44,48,56,64", help="context lengths")
    parser.add_argument("--horizon", type=int, default=12)
    parser.add_argument("--series", type=int, default=200)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args(argv)
    lengths = [int(v) for v in args.lengths.split(",")]
    if min(lengths) < 2:
        parser.error("--lengths must be at least 2")
    torch.set_num_threads(args.torch_threads)
    history, future = noisy_lines(args.series, max(lengths), args.horizon)
    print(f"median rise ratio / share of series below 0.3; {args.series} lines, horizon {args.horizon}")
    print("| model | " + " | ".join(str(n) for n in lengths) + " |")
    print("|---" * (len(lengths) + 1) + "|")
    for model in args.models:
        pipeline = TSMojoPipeline.from_pretrained(model)
        cells = []
        for length in lengths:
            ratios = rise_ratios(pipeline, history, future, length)
            cells.append(f"{np.median(ratios):.2f} / {np.mean(ratios < 0.3):.2f}")
        print(f"| {model} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
