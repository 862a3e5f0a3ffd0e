"""Fast zero-shot score of a model directory, for pretraining snapshots and context-length choice.

    CTX=1024 python benchmarks/snapshot_eval.py MODEL_DIR [dataset,dataset,...]

Same windows, seasonality and GluonTS metrics as ``zero_shot.py`` (via ``benchmarks/common.py``),
but it calls ``TSMojoModel.forecast`` directly with a context cut at ``$CTX`` points, so snapshots
of a run can be compared without touching the checkpoint's config. It prints per-dataset MASE
and WQL (relative to seasonal naive in brackets) and their geometric means over the 12 aggregate
datasets. ``benchmarks/results/snapshots.csv`` and the context-length table of the model card come
from it; on the final weights it matches ``zero_shot.py`` (0.858 / 0.679 at context 256).
"""

import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    AGGREGATE_DATASETS,
    EVAL_QUANTILES,
    load_dataset,
    quantile_forecasts,
    score_forecasts,
    seasonal_naive_values,
)
from tsmojo import TSMojoModel  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    context_length = int(os.environ.get("CTX", 2048))
    model = TSMojoModel.from_pretrained(sys.argv[1])
    model.config.context_length = context_length  # CTX, not the checkpoint's default cut, sets the context
    names = sys.argv[2].split(",") if len(sys.argv) > 2 else AGGREGATE_DATASETS
    levels = torch.tensor(model.config.quantiles)
    columns = [int((levels - q).abs().argmin()) for q in EVAL_QUANTILES]
    relative_mase, relative_wql = [], []
    for name in names:
        dataset = load_dataset(name)
        start = time.time()
        pieces = []
        for first in range(0, len(dataset), 256):
            contexts = dataset.contexts[first : first + 256]
            length = min(context_length, max(len(c) for c in contexts))
            batch = torch.full((len(contexts), length), float("nan"))
            for row, context in enumerate(contexts):
                context = np.asarray(context[-length:], dtype=np.float32)
                batch[row, length - len(context) :] = torch.from_numpy(context)
            pieces.append(model.forecast(batch, dataset.prediction_length)[..., columns].numpy())
        scores = score_forecasts(dataset, quantile_forecasts(dataset, np.concatenate(pieces), EVAL_QUANTILES))
        naive = score_forecasts(dataset, quantile_forecasts(dataset, seasonal_naive_values(dataset), EVAL_QUANTILES))
        relative_mase.append(scores["MASE"] / naive["MASE"])
        relative_wql.append(scores["WQL"] / naive["WQL"])
        print(
            f"{name:20s} MASE {scores['MASE']:.3f} ({relative_mase[-1]:.3f})  "
            f"WQL {scores['WQL']:.3f} ({relative_wql[-1]:.3f})  {time.time() - start:.1f}s",
            flush=True,
        )

    def geometric_mean(values: list[float]) -> float:
        return math.exp(float(np.mean(np.log(values))))

    print(f"GEOMEAN relative MASE {geometric_mean(relative_mase):.3f} WQL {geometric_mean(relative_wql):.3f}")


if __name__ == "__main__":
    main()
