"""TSMojoEstimator: fine-tunes a pretrained TSMojo model on a GluonTS dataset."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gluonts.model.estimator import Estimator

from tsmojo.bundled import DEFAULT_MODEL
from tsmojo.gluonts.dataset import entry_to_input
from tsmojo.gluonts.predictor import TSMojoPredictor
from tsmojo.pipeline import TSMojoPipeline

__all__ = ["TSMojoEstimator"]


class TSMojoEstimator(Estimator):
    """Fine-tuning estimator in the style of GluonTS' ``PyTorchLightningEstimator``.

    Args:
        prediction_length: H of the training windows and of the returned predictor.
        context_length: longest context (default: the model's).
        model: bundled model name, model directory or a :class:`TSMojoPipeline` to start from.
        batch_size: training windows (groups) per step.
        num_batches_per_epoch: steps per "epoch"; validation (when given) runs once per epoch.
        trainer_kwargs: ``max_epochs`` (default 10) or ``max_steps`` set the number of steps
            (``max_steps`` wins); other keys go to ``lightning.pytorch.Trainer``.
        lr, weight_decay, warmup_steps: AdamW with warm-up and cosine decay.
        trainable: ``"all"`` or ``"head"`` (quantile head + last block).
        patience: early stopping after this many validations without improvement of the
            validation WQL (needs ``validation_data``); the best weights are always kept.
        quantile_levels, predictor_batch_size, cross_learning: passed to the predictor.
        output_dir: where Lightning may write and where the fine-tuned model is saved; a
            temporary directory (removed afterwards) when None, so the cwd stays clean.
        seed, device: random seed of window sampling; ``"cpu"``, ``"cuda"`` or ``"auto"``.

    Entries follow :class:`TSMojoPredictor`'s mapping: a (D, T) target is one group, the first T
    values of ``feat_dynamic_real`` are known-future covariates, ``past_feat_dynamic_real``
    past-only covariates.
    """

    def __init__(
        self,
        prediction_length: int,
        context_length: int | None = None,
        model: str | Path | TSMojoPipeline = DEFAULT_MODEL,
        batch_size: int = 32,
        num_batches_per_epoch: int = 50,
        trainer_kwargs: dict[str, Any] | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int | None = None,
        trainable: str = "all",
        patience: int | None = None,
        quantile_levels: Sequence[float] | None = None,
        predictor_batch_size: int = 256,
        cross_learning: bool = False,
        output_dir: str | Path | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        super().__init__()
        self.prediction_length, self.context_length = prediction_length, context_length
        self.model = model
        self.batch_size, self.num_batches_per_epoch = batch_size, num_batches_per_epoch
        self.trainer_kwargs = dict(trainer_kwargs or {})
        self.lr, self.weight_decay, self.warmup_steps = lr, weight_decay, warmup_steps
        self.trainable, self.patience = trainable, patience
        self.quantile_levels, self.predictor_batch_size = quantile_levels, predictor_batch_size
        self.cross_learning, self.output_dir, self.seed, self.device = cross_learning, output_dir, seed, device

    def _pipeline(self) -> TSMojoPipeline:
        if isinstance(self.model, TSMojoPipeline):
            return self.model
        return TSMojoPipeline.from_pretrained(self.model, device=self.device)

    def _inputs(self, data: Iterable[dict]) -> list[dict]:
        return [entry_to_input(entry, training=True) for entry in data]

    def train(
        self, training_data: Iterable[dict], validation_data: Iterable[dict] | None = None, **kwargs
    ) -> TSMojoPredictor:
        """Fine-tune a copy of the starting model; return its predictor."""
        return self._fit(self._pipeline(), training_data, validation_data)

    def train_from(
        self,
        predictor: TSMojoPredictor,
        training_data: Iterable[dict],
        validation_data: Iterable[dict] | None = None,
        **kwargs,
    ) -> TSMojoPredictor:
        """Fine-tune a copy of ``predictor``'s model."""
        return self._fit(predictor.pipeline, training_data, validation_data)

    def _fit(self, pipeline: TSMojoPipeline, training_data, validation_data) -> TSMojoPredictor:
        trainer_kwargs = dict(self.trainer_kwargs)
        max_epochs = trainer_kwargs.pop("max_epochs", 10)
        num_steps = trainer_kwargs.pop("max_steps", None) or self.num_batches_per_epoch * max_epochs
        validation = None if validation_data is None else self._inputs(validation_data)
        tuned = pipeline.fit(
            self._inputs(training_data),
            prediction_length=self.prediction_length,
            validation=validation,
            num_steps=num_steps,
            learning_rate=self.lr,
            batch_size=self.batch_size,
            trainable=self.trainable,
            context_length=self.context_length,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            validate_every=self.num_batches_per_epoch,
            patience=self.patience,
            seed=self.seed,
            output_dir=self.output_dir,
            trainer_kwargs=trainer_kwargs,
        )
        return TSMojoPredictor(
            tuned,
            prediction_length=self.prediction_length,
            quantile_levels=self.quantile_levels,
            batch_size=self.predictor_batch_size,
            context_length=self.context_length,
            cross_learning=self.cross_learning,
        )
