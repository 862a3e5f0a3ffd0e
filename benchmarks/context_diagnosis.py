"""Why more context hurts: relative MASE by context length with the scaling window or the eidetic
memory changed at inference.

    python benchmarks/context_diagnosis.py tsmojo-mini --datasets m4_weekly,m4_hourly,ETTh \
        --contexts 256,1024,2048 --scale-window 256 --no-memory

``--scale-window N`` takes location and scale from the last N points only (0: the whole context);
``--no-memory`` empties the eidetic memory (``memory_size = 0``). Each prints one line per dataset:
MASE relative to seasonal naive at each context (``model.forecast`` in float32, the windows and
metrics of ``benchmarks/common.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    EVAL_QUANTILES,
    load_dataset,
    quantile_forecasts,
    score_forecasts,
    seasonal_naive_values,
)
from tsmojo import TSMojoModel  # noqa: E402
from tsmojo.bundled import model_directory  # noqa: E402


def relative_mase(model: TSMojoModel, name: str, context_length: int) -> float:
    dataset = load_dataset(name)
    levels = torch.tensor(model.config.quantiles)
    columns = [int((levels - q).abs().argmin()) for q in EVAL_QUANTILES]
    pieces = []
    for first in range(0, len(dataset), 256):
        contexts = dataset.contexts[first : first + 256]
        length = min(context_length, max(len(c) for c in contexts))
        batch = torch.full((len(contexts), length), float("nan"))
        for row, context in enumerate(contexts):
            values = np.asarray(context[-length:], dtype=np.float32)
            batch[row, length - len(values) :] = torch.from_numpy(values)
        pieces.append(model.forecast(batch, dataset.prediction_length)[..., columns].numpy())
    scores = score_forecasts(dataset, quantile_forecasts(dataset, np.concatenate(pieces), EVAL_QUANTILES))
    naive = score_forecasts(dataset, quantile_forecasts(dataset, seasonal_naive_values(dataset), EVAL_QUANTILES))
    return scores["MASE"] / naive["MASE"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="bundled model name or model directory")
    parser.add_argument("--datasets", default="m4_weekly,m4_hourly,ETTh")
    parser.add_argument("--contexts", default="256,1024,2048")
    parser.add_argument("--scale-window", type=int, help="override the model's scale_window (0: whole context)")
    parser.add_argument("--no-memory", action="store_true", help="empty the eidetic memory")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    path = model_directory(args.model)
    model = TSMojoModel.from_pretrained(path)
    contexts = [int(c) for c in args.contexts.split(",")]
    model.config.max_context_length = max(contexts + [model.config.max_context_length])
    if args.scale_window is not None:
        model.config.scale_window = args.scale_window
    if args.no_memory:
        model.config.memory_size = 0  # the blocks share this config object
    for name in args.datasets.split(","):
        scores = " ".join(f"{c}:{relative_mase(model, name, c):.3f}" for c in contexts)
        print(f"{name:15s} scale_window={model.config.scale_window} memory={model.config.memory_size} {scores}")


if __name__ == "__main__":
    main()
