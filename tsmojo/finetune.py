"""Fine-tuning a model on tasks: the training stream, the validation batches, the Lightning run.

:meth:`tsmojo.TSMojoPipeline.fit` (and through it the GluonTS estimator) parses its data into
tasks and calls :func:`fine_tune`, which trains a copy of the model with
:class:`tsmojo.lightning_module.TSMojoLightningModule` and keeps the weights with the best
validation WQL.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightning.pytorch as pl
import numpy as np
import torch

from tsmojo.lightning_module import BatchList, TSMojoLightningModule
from tsmojo.model import TSMojoModel
from tsmojo.tasks import Task

__all__ = [
    "FitOptions",
    "KeepBest",
    "WindowStream",
    "collate_windows",
    "fine_tune",
    "validation_batches",
]


def collate_windows(windows: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Windows of :meth:`tsmojo.tasks.Task.window` as one batch (see :mod:`tsmojo.lightning_module`):
    contexts left-padded with NaN to the longest, one group per window."""
    width = max(1, max(c.shape[1] for c, _, _ in windows))
    context = np.concatenate(
        [np.pad(c, ((0, 0), (width - c.shape[1], 0)), constant_values=np.nan) for c, _, _ in windows]
    )
    groups = np.concatenate([np.full(len(r), g) for g, (_, _, r) in enumerate(windows)])
    return {
        "context": torch.as_tensor(context, dtype=torch.float32),
        "future": torch.as_tensor(np.concatenate([f for _, f, _ in windows]), dtype=torch.float32),
        "roles": torch.as_tensor(np.concatenate([r for _, _, r in windows]), dtype=torch.long),
        "group_ids": torch.as_tensor(groups, dtype=torch.long),
    }


class WindowStream(torch.utils.data.IterableDataset):
    """Endless batches of random training windows: a random task, a random cut point that leaves
    at least one context point and (when the series is long enough) a full horizon after it."""

    def __init__(self, tasks: list[Task], horizon: int, context_length: int, batch_size: int, seed: int) -> None:
        usable = [t for t in tasks if t.length >= 2]
        if not usable:
            raise ValueError("fit needs at least one series with 2 or more points")
        if len(usable) < len(tasks):
            dropped = len(tasks) - len(usable)
            warnings.warn(f"fit: {dropped} training series with a single point are not used", stacklevel=4)
        self.tasks, self.horizon, self.context_length = usable, horizon, context_length
        self.batch_size, self.seed = batch_size, seed
        lengths = np.array([t.length for t in usable], dtype=float)
        self.weights = np.sqrt(lengths) / np.sqrt(lengths).sum()

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.seed)
        while True:
            windows = []
            for index in rng.choice(len(self.tasks), size=self.batch_size, p=self.weights):
                task = self.tasks[index]
                low = min(task.length - 1, 16)
                high = max(low, task.length - self.horizon)
                end = int(rng.integers(low, high + 1))
                windows.append(task.window(end, self.horizon, self.context_length))
            yield collate_windows(windows)


def validation_batches(
    tasks: list[Task], horizon: int, context_length: int, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches scoring each validation series on its last ``horizon`` points."""
    windows = [t.window(t.length - horizon, horizon, context_length) for t in tasks if t.length > horizon]
    if not windows:
        raise ValueError(f"validation series must be longer than prediction_length={horizon}")
    if len(windows) < len(tasks):
        warnings.warn(
            f"fit: {len(tasks) - len(windows)} validation series not longer than prediction_length={horizon} "
            "are not scored",
            stacklevel=4,
        )
    for start in range(0, len(windows), batch_size):
        yield collate_windows(windows[start : start + batch_size])


class KeepBest(pl.Callback):
    """Keeps (in memory) the weights with the lowest ``val_wql`` seen so far, and every score."""

    def __init__(self) -> None:
        self.state: dict | None = None
        self.score = math.inf
        self.history: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get("val_wql")
        if value is None or trainer.sanity_checking:
            return
        score = float(value)
        self.history.append(score)
        if score < self.score:
            self.score = score
            model = cast(TSMojoLightningModule, pl_module).model
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fine_tune` trains; the meaning of each field is in :meth:`tsmojo.TSMojoPipeline.fit`."""

    num_steps: int
    learning_rate: float
    batch_size: int
    trainable: str
    context_length: int | None
    warmup_steps: int | None
    weight_decay: float
    validate_every: int
    patience: int | None
    seed: int
    output_dir: str | Path | None
    trainer_kwargs: dict | None


def fine_tune(
    model: TSMojoModel,
    tasks: list[Task],
    validation_tasks: list[Task] | None,
    prediction_length: int,
    options: FitOptions,
) -> tuple[TSMojoModel, dict]:
    """Train a copy of ``model`` (``model`` is left untouched) on windows of ``tasks``, keeping
    the weights with the best WQL on the last ``prediction_length`` points of ``validation_tasks``.
    Returns the trained copy (float32, in training mode, every weight trainable) and its history:
    ``{"best_val_wql", "val_wql" (every check), "steps"}``."""
    device = next(model.parameters()).device
    model = copy.deepcopy(model).float().train()
    config = model.config
    num_steps, batch_size, seed = options.num_steps, options.batch_size, options.seed
    context_length = min(options.context_length or config.context_length, config.max_context_length)
    warmup_steps = max(1, num_steps // 10) if options.warmup_steps is None else options.warmup_steps
    module = TSMojoLightningModule(
        model,
        learning_rate=options.learning_rate,
        weight_decay=options.weight_decay,
        warmup_steps=warmup_steps,
        max_steps=num_steps,
        trainable=options.trainable,
    )
    train_data = WindowStream(tasks, prediction_length, context_length, batch_size, seed)
    train_loader = torch.utils.data.DataLoader(train_data, batch_size=None, num_workers=0)
    callbacks: list = []
    val_loader = None
    best = KeepBest()
    if validation_tasks:
        batches = list(validation_batches(validation_tasks, prediction_length, context_length, batch_size))
        val_loader = torch.utils.data.DataLoader(BatchList(batches), batch_size=None, num_workers=0)
        callbacks.append(best)
        if options.patience is not None:
            callbacks.append(pl.callbacks.EarlyStopping(monitor="val_wql", mode="min", patience=options.patience))
    with contextlib.ExitStack() as stack:
        root = options.output_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="tsmojo-fit-"))
        stack.enter_context(torch.random.fork_rng(devices=[device] if device.type == "cuda" else []))
        torch.manual_seed(seed)
        kwargs: dict[str, Any] = {  # Trainer arguments, which options.trainer_kwargs may override
            "max_steps": num_steps,
            "accelerator": "gpu" if device.type == "cuda" else "cpu",
            "devices": [device.index or 0] if device.type == "cuda" else 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(root),
            "num_sanity_val_steps": 0,
            "check_val_every_n_epoch": None,
            "val_check_interval": min(options.validate_every, num_steps),
            "limit_val_batches": None if val_loader is not None else 0,
            "callbacks": callbacks,
        }
        kwargs.update(options.trainer_kwargs or {})
        trainer = pl.Trainer(**kwargs)
        trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    if best.state is not None:
        model.load_state_dict(best.state)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model, {"best_val_wql": best.score, "val_wql": best.history, "steps": trainer.global_step}
