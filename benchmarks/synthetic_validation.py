"""Held-out synthetic validation of model directories on the batches a pretraining recipe logs.

    python benchmarks/synthetic_validation.py tsmojo-mini tsmojo-mini-v8 [--recipe tsmojo/recipes/mini_v2.yaml]

Builds the recipe's validation batches (``tsmojo.pretrain.validation_batches``: the training mix
at context 512, then one batch per validation case) with the real pretrain series and panels,
and prints each model's quantile loss per case, in scaled units: the same numbers the training
log reports as ``val_loss`` and ``val_loss/<case>``, so models trained by different runs compare.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsmojo import TSMojoModel  # noqa: E402
from tsmojo.bundled import model_directory  # noqa: E402
from tsmojo.data.real import load_pretrain_panels, load_pretrain_series  # noqa: E402
from tsmojo.data.tasks import TaskSampler  # noqa: E402
from tsmojo.lightning_module import batch_loss  # noqa: E402
from tsmojo.pretrain import PretrainConfig, validation_batches  # noqa: E402

DEFAULT_RECIPE = Path("tsmojo/recipes/mini_v2.yaml")


def validation_losses(models: list[str | Path], recipe: Path = DEFAULT_RECIPE) -> dict[str, dict[str, float]]:
    """Each model's mean quantile loss per validation case (``val_loss`` is the training mix)."""
    torch.set_num_threads(1)
    config = PretrainConfig.from_yaml(recipe)
    sampler = TaskSampler(load_pretrain_series(min_length=config.horizon + 16), real_panels=load_pretrain_panels())
    batches = validation_batches(sampler, config)
    results = {}
    for name in models:
        path = model_directory(name)
        model = TSMojoModel.from_pretrained(path)
        losses: dict[str, list[float]] = {}
        with torch.no_grad():
            for batch in batches:
                quantile_loss = batch_loss(model, batch, weighted=False)[1]
                losses.setdefault(batch.get("case", "val_loss"), []).append(float(quantile_loss))
        results[str(name)] = {case: float(np.mean(values)) for case, values in losses.items()}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="bundled model names or model directories")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    args = parser.parse_args(argv)
    for name, losses in validation_losses(args.models, args.recipe).items():
        print(name, " ".join(f"{case} {value:.4f}" for case, value in losses.items()), flush=True)


if __name__ == "__main__":
    main()
