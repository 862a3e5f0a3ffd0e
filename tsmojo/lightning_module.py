"""Lightning wrapper used for pretraining and for fine-tuning (GluonTS estimator, pipeline.fit).

A batch is a dict of tensors:
    context  (B, L)  float, NaN where missing
    future   (B, H)  float: the truth for target rows, the known values for known-future covariates
    roles    (B,)    int: 0 target, 1 past-only covariate, 2 known-future covariate
    group_ids (B,)   int: rows sharing an id are forecast jointly
    target_weights (B,) float, optional: loss weight of each row (pretraining batches have it)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch.optim.swa_utils import AveragedModel

from tsmojo.metrics import pinball, quantile_loss_sums, weighted_point_mean, wql_from_sums
from tsmojo.model import FUTURE_COVARIATE, TARGET, TSMojoModel, loss_points
from tsmojo.seasonality import seasonal_gain

MODEL_CONFIG_KEY = "tsmojo_model_config"  # the checkpoint entry that holds the model's settings


class BatchList(torch.utils.data.Dataset):
    """Ready-made batches as a map-style dataset (for a ``DataLoader`` with ``batch_size=None``)."""

    def __init__(self, batches: list[dict]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        return self.batches[index]


@torch.no_grad()
def seasonal_copy_weights(
    model: TSMojoModel, batch: dict[str, torch.Tensor], exponent: float, max_weight: float
) -> torch.Tensor:
    """Loss weight of each row (B,): how much better copying the last cycle predicts its context
    than copying the last step, to the power ``exponent``, normalised to a mean of 1 over the
    target rows, then capped at ``max_weight``.

    The training loss is a pinball loss in scaled units, so a near-periodic series, which seasonal
    naive copies almost exactly, adds almost nothing to it, and the model loses to seasonal naive
    on such series. The gain is the one-step naive error over the seasonal-naive error (the period
    the seasonal hint detects), both over the last ``hint_window`` scaled steps; it counts only
    above 1, and rows without a detected period count 1. Dividing by the seasonal-naive error
    alone (the MASE scaling) would favour random walks as much, since their one-step error is small
    against their spread; the gain singles out the rows where copying a cycle is what pays.
    """
    cfg = model.config
    context = batch["context"].float()
    loc, scale = model.scale_stats(context, batch.get("scale_windows"))
    scaled = model.to_model_space(context, loc, scale)[:, -cfg.hint_window :]
    gain = seasonal_gain(scaled, model.seasonal_period(scaled))
    gain = torch.where(torch.isfinite(gain), gain, torch.ones_like(gain))
    weights = gain.clamp(min=1.0) ** exponent
    targets = batch["roles"] == TARGET
    mean = weights[targets].mean() if bool(targets.any()) else weights.new_tensor(1.0)
    return (weights / mean).clamp(max=max_weight)


DISTILL_TARGETS = ("mean", "best")


@torch.no_grad()
def teacher_prediction(
    teachers: Sequence[TSMojoModel],
    batch: dict[str, torch.Tensor],
    num_patches: int,
    known: torch.Tensor,
    target: str = "mean",
) -> torch.Tensor:
    """What a student learns to forecast besides the truth: the ``teachers``' quantiles for
    ``batch`` in model space (B, steps, Q), before the forecast bound.

    ``target="mean"``: their mean, level by level. Averaging quantiles (not mixing the
    distributions) keeps the ensemble's intervals as sharp as its members'. ``target="best"``:
    per row, the forecast of the teacher with the lowest pinball loss against that row's future.
    Teachers that err on different kinds of series (one damps trends, the other copies seasons)
    average their errors in the mean; the best-of target keeps each one's forecasts where they
    are right, and the student has to learn from the context which kind of series it faces.

    Every teacher scales a row as the student does (the batch's ``scale_windows``, or the shared
    ``scale_window``), so their model spaces are the student's."""
    if target not in DISTILL_TARGETS:
        raise ValueError(f"distill target must be one of {DISTILL_TARGETS}, got {target!r}")
    predictions = []
    for teacher in teachers:
        output = teacher(
            batch["context"],
            group_ids=batch["group_ids"],
            roles=batch["roles"],
            future_covariates=known,
            num_output_patches=num_patches,
            scale_windows=batch.get("scale_windows"),
        )
        assert output.prediction is not None
        predictions.append(output.prediction.float())
    stacked = torch.stack(predictions)  # (teachers, B, steps, Q)
    if target == "mean" or len(teachers) == 1:
        return stacked.mean(0)
    first = teachers[0]
    loc, scale = first.scale_stats(batch["context"].float(), batch.get("scale_windows"))
    future, observed = first.loss_target(batch["future"], batch["roles"], stacked.shape[2], loc, scale)
    levels = first.quantile_levels.to(stacked.device)
    row_loss = (pinball(future, stacked, levels).mean(-1) * observed).sum(-1)  # (teachers, B)
    best = row_loss.argmin(0)
    return stacked[best, torch.arange(stacked.shape[1], device=stacked.device)]


def batch_loss(
    model: TSMojoModel,
    batch: dict[str, torch.Tensor],
    weighted: bool = True,
    seasonal_weight_exponent: float = 0.0,
    max_seasonal_weight: float = 10.0,
    teachers: Sequence[TSMojoModel] = (),
    distill_weight: float = 0.0,
    distill_target: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, quantile loss) of ``model`` on a training batch. With ``weighted``, target rows
    count by the batch's ``target_weights`` where it has them, times their
    :func:`seasonal_copy_weights` when ``seasonal_weight_exponent`` is not 0.

    With ``teachers`` and a ``distill_weight`` w, the total puts weight 1 - w on the quantile loss
    against the truth and w on the mean absolute distance, level by level in model space, from
    the teachers' forecast that ``distill_target`` picks (:func:`teacher_prediction`), over the
    same weighted points."""
    future, roles = batch["future"], batch["roles"]
    target_weights = batch.get("target_weights") if weighted else None
    if weighted and seasonal_weight_exponent:
        seasonal = seasonal_copy_weights(model, batch, seasonal_weight_exponent, max_seasonal_weight)
        target_weights = seasonal if target_weights is None else target_weights.to(seasonal.device) * seasonal
    num_patches = min(model.config.max_output_patches, -(-future.shape[1] // model.config.patch_size))
    known = torch.where((roles == FUTURE_COVARIATE)[:, None], future, torch.full_like(future, float("nan")))
    output = model(
        batch["context"],
        group_ids=batch["group_ids"],
        roles=roles,
        future_covariates=known,
        num_output_patches=num_patches,
        future_target=future,
        target_weights=target_weights,
        scale_windows=batch.get("scale_windows"),
    )
    assert output.loss is not None and output.quantile_loss is not None and output.prediction is not None
    if not (teachers and distill_weight):
        return output.loss, output.quantile_loss
    target = teacher_prediction(teachers, batch, num_patches, known, distill_target)
    _, weight = loss_points(future, roles, output.prediction.shape[1], target_weights)
    distill_loss = weighted_point_mean((output.prediction.float() - target).abs().mean(-1), weight)
    return output.loss + distill_weight * (distill_loss - output.quantile_loss), output.quantile_loss


def validation_levels(model: TSMojoModel) -> torch.Tensor:
    """Mask of the model's quantile levels that validation scores: those from 0.1 to 0.9."""
    levels = model.quantile_levels
    return (levels >= 0.1 - 1e-9) & (levels <= 0.9 + 1e-9)


@torch.no_grad()
def validation_wql_sums(model: TSMojoModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sums behind the WQL of the model's forecasts for the target rows of ``batch``, over the
    model's levels from 0.1 to 0.9: per level the summed quantile loss, then the summed ``|y|``
    (see :func:`tsmojo.metrics.quantile_loss_sums`), as one vector so that batches add up."""
    future, roles = batch["future"], batch["roles"]
    known = torch.where((roles == FUTURE_COVARIATE)[:, None], future, torch.full_like(future, float("nan")))
    forecast = model.forecast(batch["context"], future.shape[1], batch["group_ids"], roles, known)
    keep = validation_levels(model)
    rows = roles == TARGET
    loss_sums, abs_target_sum = quantile_loss_sums(future[rows], forecast[rows][..., keep], model.quantile_levels[keep])
    return torch.cat([loss_sums, abs_target_sum[None]])


class TSMojoLightningModule(pl.LightningModule):
    """Trains a :class:`TSMojoModel` with AdamW, linear warm-up and cosine decay."""

    def __init__(
        self,
        model: TSMojoModel,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 200,
        max_steps: int = 100_000,
        min_lr_ratio: float = 0.1,
        trainable: str = "all",
        seasonal_weight_exponent: float = 0.0,
        lr_scales: dict[str, float] | None = None,
        ema_decay: float = 0.0,
        teachers: Sequence[TSMojoModel] = (),
        distill_weight: float = 0.0,
        distill_target: str = "mean",
    ) -> None:
        super().__init__()
        self.model = model
        # Frozen models whose mean forecast the training loss also follows (batch_loss). Kept in
        # a tuple, not as submodules, so that checkpoints and the optimizer never hold them.
        if not 0.0 <= distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
        if distill_target not in DISTILL_TARGETS:
            raise ValueError(f"distill_target must be one of {DISTILL_TARGETS}, got {distill_target!r}")
        for teacher in teachers:
            if not torch.equal(teacher.quantile_levels.cpu(), model.quantile_levels.cpu()):
                raise ValueError("a teacher must forecast the student's quantile levels")
            teacher.eval().requires_grad_(False)
        self.teachers = tuple(teachers)
        self.distill_weight, self.distill_target = distill_weight, distill_target
        # A moving average of the weights, validated and exported in their place (see
        # averaged_model): one run's exports five minutes apart moved the 12-dataset MASE by up to
        # 0.02, more than the differences between the candidates compared on it.
        self.ema_decay = ema_decay
        self.ema: AveragedModel | None = None
        if ema_decay > 0:
            if not ema_decay < 1:
                raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
            self.ema = AveragedModel(model, avg_fn=self.ema_step, use_buffers=False)
            self.ema.requires_grad_(False)
        self.seasonal_weight_exponent = seasonal_weight_exponent  # see seasonal_copy_weights
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.lr_scales = dict(lr_scales or {})  # see parameter_groups
        self.warmup_steps, self.max_steps, self.min_lr_ratio = warmup_steps, max_steps, min_lr_ratio
        self.set_trainable(trainable)
        self.parameter_groups()  # a prefix that names no trainable weight fails here, not at the first step
        self.save_hyperparameters(ignore=["model", "teachers"])
        # WQL is a ratio of sums over the whole validation set: the sums are collected per batch
        # and divided once at the end (a mean of per-batch ratios would weight batches wrongly).
        self._wql_sums: torch.Tensor | None = None
        self.skipped_steps = 0  # optimizer steps skipped for non-finite gradients, this run

    def set_trainable(self, trainable: str) -> None:
        """``all``: every weight; ``head``: the quantile head and the last block only;
        ``hint_gate``: the hint shortcut's gate only (``TSMojoConfig.hint_shortcut``), which
        teaches a trained model when to copy its hints without moving anything it learned."""
        last_block = f"blocks.{len(self.model.blocks) - 1}."
        prefixes = {"all": ("",), "head": ("head.", "final_norm.", last_block), "hint_gate": ("hint_gate.",)}
        if trainable not in prefixes:
            raise ValueError(f"trainable must be one of {sorted(prefixes)}, got {trainable!r}")
        if trainable == "hint_gate" and not self.model.config.hint_shortcut:
            raise ValueError("trainable='hint_gate' needs a model with hint_shortcut enabled")
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad = name.startswith(prefixes[trainable])

    def ema_step(self, averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor | int) -> torch.Tensor:
        """One update of a moving-average weight. The decay ramps up as (1 + n) / (10 + n) to
        ``ema_decay``, so that the average of a run from scratch soon forgets its random start."""
        decay = min(self.ema_decay, (1.0 + float(updates)) / (10.0 + float(updates)))
        return averaged + (1.0 - decay) * (current - averaged)

    @property
    def averaged_model(self) -> TSMojoModel:
        """The model that validation scores and pretraining exports: the moving average of the
        weights when ``ema_decay`` > 0, else the trained weights themselves."""
        return self.model if self.ema is None else self.ema.module  # type: ignore[return-value]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def on_fit_start(self) -> None:
        for teacher in self.teachers:
            teacher.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # A run started from another model (--init-from) has settings its recipe does not hold:
        # --resume rebuilds the model from these (tsmojo.pretrain.resumed_model_config).
        checkpoint[MODEL_CONFIG_KEY] = self.model.config.to_dict()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, quantile_loss = batch_loss(
            self.model,
            batch,
            seasonal_weight_exponent=self.seasonal_weight_exponent,
            teachers=self.teachers,
            distill_weight=self.distill_weight,
            distill_target=self.distill_target,
        )
        size = batch["context"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        self.log("train_quantile_loss", quantile_loss, batch_size=size)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skips an update whose gradients are not finite: one overflowing batch would otherwise
        turn every weight into NaN (clipping cannot rescale a NaN norm). AdamW leaves parameters
        without a gradient alone, moments and weight decay included."""
        gradients = [p.grad for p in self.model.parameters() if p.grad is not None]
        finite = bool(torch.stack([torch.isfinite(g).all() for g in gradients]).all()) if gradients else True
        if not finite:
            for parameter in self.model.parameters():
                parameter.grad = None
            self.skipped_steps += 1
        self.log("skipped_steps", float(self.skipped_steps), reduce_fx="max")

    def on_validation_epoch_start(self) -> None:
        self._wql_sums = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Batches without a ``case`` log ``val_loss`` and add to ``val_wql`` (logged when the
        validation ends); a batch of a named validation case logs ``val_loss/<case>``."""
        # Unweighted, so that validation losses compare across runs with other loss weights.
        _, quantile_loss = batch_loss(self.averaged_model, batch, weighted=False)
        size = batch["context"].shape[0]
        if "case" in batch:
            self.log(f"val_loss/{batch['case']}", quantile_loss, batch_size=size, sync_dist=True)
            return
        self.log("val_loss", quantile_loss, prog_bar=True, batch_size=size, sync_dist=True)
        sums = validation_wql_sums(self.averaged_model, batch)
        self._wql_sums = sums if self._wql_sums is None else self._wql_sums + sums

    def on_validation_epoch_end(self) -> None:
        num_levels = int(validation_levels(self.model).sum())
        # Every process joins the reduction (with zeros if it saw no batch), or DDP would hang.
        seen = self._wql_sums is not None
        sums = self._wql_sums if self._wql_sums is not None else torch.zeros(num_levels + 1, device=self.device)
        batches = torch.tensor([float(seen)], device=sums.device)
        totals = self.trainer.strategy.reduce(torch.cat([sums, batches]), reduce_op="sum")
        if totals[-1] > 0:
            self.log("val_wql", wql_from_sums(totals[:num_levels], totals[num_levels].clamp(min=1e-8)))
        self._wql_sums = None

    def parameter_groups(self) -> list[dict]:
        """The trainable weights as optimizer groups: those whose names start with a prefix of
        ``lr_scales`` train at the learning rate times its scale, the rest at the learning rate.

        A weight added to a trained model at zero (a hint gate, ``pretrain --init-from``) moves
        about one learning rate per step under AdamW; at a continuation's low rate it would stay
        near zero for thousands of steps while the trained weights around it barely change."""
        named = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
        for prefix in self.lr_scales:
            if not any(name.startswith(prefix) for name, _ in named):
                raise ValueError(f"lr_scales: no trainable weight's name starts with {prefix!r}")
        groups: dict[float, list[torch.nn.Parameter]] = {}
        for name, parameter in named:
            scale = next((s for prefix, s in self.lr_scales.items() if name.startswith(prefix)), 1.0)
            groups.setdefault(scale, []).append(parameter)
        return [{"params": params, "lr": self.learning_rate * scale} for scale, params in groups.items()]

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.learning_rate, weight_decay=self.weight_decay)

        def schedule(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
