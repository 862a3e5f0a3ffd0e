"""How far a model's seasonal hint gate sits from where the zero-shot benchmark would put it.

    python benchmarks/gate_scale.py [MODEL] [--scales 1,1.5,2,3] [--datasets ...]

The hint shortcut moves each forecast toward the seasonal-naive hint by a learnt gate per future
step (``TSMojoModel.hint_shortcut``). This script multiplies the seasonal gate by each of
``--scales`` at inference and scores the model as ``benchmarks/zero_shot.py`` does (bfloat16 or
float32 as the pipeline picks, one thread): the 12-dataset aggregate (MASE / WQL relative to
seasonal naive) and the relative MASE of each seasonal dataset, then the mean gate on each of those
datasets (as the model sets it, before the scaling).

A diagnostic, not a method: a gate scaled by hand is the same for every series. If the best scale
differs between datasets, the gate copies too little on some kinds of series and enough on others,
which training (data, loss weights, the gate's inputs) has to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import AGGREGATE_DATASETS  # noqa: E402
from benchmarks.zero_shot import add_relative, evaluate, summarize  # noqa: E402
from tsmojo import TSMojoPipeline  # noqa: E402
from tsmojo.bundled import DEFAULT_MODEL  # noqa: E402

SEASONAL_DATASETS = ("tourism_quarterly", "m1_quarterly", "m3_quarterly", "hospital", "ETTh", "m4_hourly")


class SeasonalGateScale:
    """A forward hook on ``model.hint_gate`` that multiplies the seasonal gate's columns (the first
    ``patch_size``: the seasonal hint comes first) by ``scale``, and records their mean."""

    def __init__(self, pipeline: TSMojoPipeline) -> None:
        config = pipeline.model.config
        if not (config.hint_shortcut and config.seasonal_hint):
            raise SystemExit("the model has no seasonal hint shortcut to scale")
        self.columns = config.patch_size
        self.scale = 1.0
        self.sums = [0.0, 0]
        pipeline.model.hint_gate.register_forward_hook(self)

    def __call__(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        seasonal = output[..., : self.columns]
        self.sums[0] += float(seasonal.float().sum())
        self.sums[1] += seasonal.numel()
        return torch.cat([seasonal * self.scale, output[..., self.columns :]], dim=-1)

    def mean_gate(self) -> float:
        total, count = self.sums
        self.sums = [0.0, 0]
        return total / max(count, 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=DEFAULT_MODEL, help="a bundled model name or a model directory")
    parser.add_argument("--scales", default="1,1.5,2,3", help="factors of the seasonal gate")
    parser.add_argument("--datasets", default=",".join(SEASONAL_DATASETS), help="datasets to show one by one")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args(argv)
    scales = [float(v) for v in args.scales.split(",")]
    shown = args.datasets.split(",")
    torch.set_num_threads(args.torch_threads)
    pipeline = TSMojoPipeline.from_pretrained(args.model)
    hook = SeasonalGateScale(pipeline)
    datasets = list(dict.fromkeys([*AGGREGATE_DATASETS, *shown]))
    gates: dict[str, float] = {}
    print("| scale | MASE (12) | WQL (12) | " + " | ".join(shown) + " |")
    print("|---" * (len(shown) + 3) + "|")
    for scale in scales:
        hook.scale = scale
        frames = []
        for name in datasets:  # one at a time, so that the hook's mean gate is that dataset's
            frames.append(evaluate([name], ["tsmojo", "seasonal_naive"], pipeline, verbose=False))
            gates.setdefault(name, hook.mean_gate())  # read before scaling: the same at every scale
        frame = add_relative(pd.concat(frames, ignore_index=True))
        aggregate = summarize(frame).set_index("model").loc["tsmojo"]
        relative = frame[frame["model"] == "tsmojo"].set_index("dataset")["rel_MASE"]
        cells = [f"{relative[name]:.3f}" for name in shown]
        print(
            f"| {scale:g} | {aggregate['gmean_rel_MASE']:.3f} | {aggregate['gmean_rel_WQL']:.3f} | "
            + " | ".join(cells)
            + " |",
            flush=True,
        )
    print("mean seasonal gate (unscaled): " + ", ".join(f"{name} {gates[name]:.2f}" for name in shown))


if __name__ == "__main__":
    main()
