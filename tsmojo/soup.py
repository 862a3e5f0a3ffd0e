"""Uniform weight averaging of checkpoints ("model soup").

Runs that continue from one parent model stay in one loss basin, so the mean of their weights is
itself a model, and often a better one than any of them: the averaged errors of runs that saw
different batches or learning rates partly cancel. tsmojo-mini-v5 and -v6 (no longer bundled) were such means.

    python -m tsmojo.soup OUTPUT MODEL [MODEL ...]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .model import TRAINING_SUMMARY_FILE, TSMojoModel, read_training_summary


def average_checkpoints(sources: Sequence[str | Path], destination: str | Path) -> TSMojoModel:
    """Average the weights of ``sources`` (model directories of one architecture) into ``destination``.

    The mean is taken in float32. ``destination/training_summary.json`` lists each source's
    training summary under ``averaged_from`` and keeps the first source's ``pretrain_config``.
    """
    if len(sources) < 2:
        raise ValueError(f"averaging needs at least two models, got {len(sources)}")
    models = [TSMojoModel.from_pretrained(source) for source in sources]
    first = models[0]
    for source, model in zip(sources[1:], models[1:]):
        if model.config.to_dict() != first.config.to_dict():
            raise ValueError(f"{source}: its config differs from {sources[0]}'s; only one architecture can be averaged")
    states = [model.state_dict() for model in models]
    mean = {name: torch.stack([state[name].float() for state in states]).mean(0) for name in states[0]}
    first.load_state_dict({name: value.to(states[0][name].dtype) for name, value in mean.items()})
    first.save_pretrained(destination)

    summaries = [(str(source), read_training_summary(source)) for source in sources]
    merged: dict = {
        "parameters": sum(p.numel() for p in first.parameters()),
        "averaged_from": [
            {"path": source, **{k: v for k, v in summary.items() if k != "pretrain_config"}}
            for source, summary in summaries
        ],
    }
    if "pretrain_config" in summaries[0][1]:
        merged["pretrain_config"] = summaries[0][1]["pretrain_config"]
    (Path(destination) / TRAINING_SUMMARY_FILE).write_text(json.dumps(merged, indent=2))
    return first


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="model directory to write")
    parser.add_argument("models", nargs="+", type=Path, help="model directories to average (two or more)")
    args = parser.parse_args(argv)
    average_checkpoints(args.models, args.output)
    print(f"averaged {len(args.models)} models -> {args.output}")


if __name__ == "__main__":
    main()
