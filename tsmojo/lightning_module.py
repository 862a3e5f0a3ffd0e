"""Lightning wrapper used for pretraining and for fine-tuning (GluonTS estimator, pipeline.fit).

A batch is a dict of tensors:
    context  (B, L)  float, NaN where missing
    future   (B, H)  float: the truth for target rows, the known values for known-future covariates
    roles    (B,)    int: 0 target, 1 past-only covariate, 2 known-future covariate
    group_ids (B,)   int: rows sharing an id are forecast jointly
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch

from tsmojo.model import FUTURE_COVARIATE, TARGET, TSMojoModel


def batch_loss(model: TSMojoModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, quantile loss) of ``model`` on a training batch."""
    future, roles = batch["future"], batch["roles"]
    num_patches = min(model.config.max_output_patches, -(-future.shape[1] // model.config.patch_size))
    known = torch.where((roles == FUTURE_COVARIATE)[:, None], future, torch.full_like(future, float("nan")))
    output = model(
        batch["context"],
        group_ids=batch["group_ids"],
        roles=roles,
        future_covariates=known,
        num_output_patches=num_patches,
        future_target=future,
    )
    return output.loss, output.quantile_loss


@torch.no_grad()
def weighted_quantile_loss(model: TSMojoModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """WQL of the model's forecasts for the target rows of ``batch``, over the model's quantiles
    from 0.1 to 0.9 (the GluonTS definition: summed pinball loss / summed |y|)."""
    future, roles = batch["future"], batch["roles"]
    known = torch.where((roles == FUTURE_COVARIATE)[:, None], future, torch.full_like(future, float("nan")))
    forecast = model.forecast(batch["context"], future.shape[1], batch["group_ids"], roles, known)
    levels = model.quantile_levels
    keep = (levels >= 0.1 - 1e-9) & (levels <= 0.9 + 1e-9)
    forecast, levels = forecast[..., keep], levels[keep]
    rows = roles == TARGET
    truth, forecast = future[rows], forecast[rows]
    observed = ~torch.isnan(truth)
    truth_filled = torch.nan_to_num(truth)[..., None]
    error = truth_filled - forecast
    pinball = 2 * torch.maximum(levels * error, (levels - 1) * error) * observed[..., None]
    return pinball.sum() / len(levels) / truth_filled.abs().sum().clamp(min=1e-8)


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
    ) -> None:
        super().__init__()
        self.model = model
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.warmup_steps, self.max_steps, self.min_lr_ratio = warmup_steps, max_steps, min_lr_ratio
        self.set_trainable(trainable)
        self.save_hyperparameters(ignore=["model"])

    def set_trainable(self, trainable: str) -> None:
        """``all``: every weight; ``head``: the quantile head and the last block only."""
        if trainable not in ("all", "head"):
            raise ValueError(f"trainable must be 'all' or 'head', got {trainable!r}")
        for name, parameter in self.model.named_parameters():
            last_block = f"blocks.{len(self.model.blocks) - 1}."
            parameter.requires_grad = trainable == "all" or name.startswith(("head.", "final_norm.", last_block))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, quantile_loss = batch_loss(self.model, batch)
        size = batch["context"].shape[0]
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        self.log("train_quantile_loss", quantile_loss, batch_size=size)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Batches without a ``case`` log ``val_loss`` and ``val_wql``; a batch of a named
        validation case logs ``val_loss/<case>``."""
        _, quantile_loss = batch_loss(self.model, batch)
        size = batch["context"].shape[0]
        if "case" in batch:
            self.log(f"val_loss/{batch['case']}", quantile_loss, batch_size=size, sync_dist=True)
            return
        self.log("val_loss", quantile_loss, prog_bar=True, batch_size=size, sync_dist=True)
        self.log("val_wql", weighted_quantile_loss(self.model, batch), batch_size=size, sync_dist=True)

    def configure_optimizers(self):
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)

        def schedule(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
