"""TSMojoPredictor: a GluonTS predictor producing QuantileForecast objects."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from gluonts.dataset.field_names import FieldName
from gluonts.model.forecast import Quantile, QuantileForecast
from gluonts.model.predictor import Predictor

from tsmojo.bundled import DEFAULT_MODEL
from tsmojo.gluonts.dataset import entry_to_input
from tsmojo.hardware import dtype_name
from tsmojo.model import TSMojoModel
from tsmojo.pipeline import TSMojoPipeline
from tsmojo.tasks import parse_task

__all__ = ["TSMojoPredictor"]

_PARAMS_FILE = "tsmojo-predictor.json"


class TSMojoPredictor(Predictor):
    """Zero-shot GluonTS predictor.

    Each dataset entry is one group: its target (``(T,)`` or ``(D, T)``: D targets forecast
    jointly), ``feat_dynamic_real`` as known-future covariates (must span T + H) and
    ``past_feat_dynamic_real`` as past-only covariates. Entries never influence each other
    (unless ``cross_learning=True``: then the whole dataset is one group).

    ``predict`` yields one :class:`QuantileForecast` per entry, in order, with keys for every
    level in ``quantile_levels`` (default: the model's 21 levels 0.01, 0.05, ..., 0.95, 0.99,
    which include 0.1..0.9) plus ``"mean"``. For a (D, T) target the arrays are (keys, H, D).

    ``context_length``: past points per series (default: the model's; at most its
    ``max_context_length``). ``dtype``: ``"auto"`` (bfloat16 where the hardware runs it natively),
    ``"float32"`` or ``"bfloat16"``; ignored when a ready pipeline is passed.
    """

    def __init__(
        self,
        pipeline: TSMojoPipeline | TSMojoModel | str | Path = DEFAULT_MODEL,
        prediction_length: int = 1,
        quantile_levels: Sequence[float] | None = None,
        batch_size: int = 256,
        context_length: int | None = None,
        cross_learning: bool = False,
        device: str = "cpu",
        dtype: str | torch.dtype = "auto",
    ) -> None:
        super().__init__(prediction_length=prediction_length)
        if isinstance(pipeline, TSMojoModel):
            pipeline = TSMojoPipeline(pipeline, dtype=dtype)
        elif not isinstance(pipeline, TSMojoPipeline):
            pipeline = TSMojoPipeline.from_pretrained(pipeline, device=device, dtype=dtype)
        self.pipeline = pipeline
        model_levels = pipeline.model_quantile_levels
        levels = model_levels if quantile_levels is None else quantile_levels
        self.quantile_levels = tuple(sorted({float(q) for q in levels}))
        self.forecast_keys = [Quantile.parse(q).name for q in self.quantile_levels] + ["mean"]
        self.batch_size, self.context_length, self.cross_learning = batch_size, context_length, cross_learning

    @property
    def model(self) -> TSMojoModel:
        return self.pipeline.model

    def predict(self, dataset: Iterable[dict], num_samples: int | None = None, **kwargs) -> Iterator[QuantileForecast]:
        """One QuantileForecast per entry, in order. ``num_samples`` is ignored (no sampling)."""
        chunk: list[dict] = []
        rows = 0
        for entry in dataset:
            chunk.append(entry)
            rows += np.asarray(entry[FieldName.TARGET]).reshape(-1, np.shape(entry[FieldName.TARGET])[-1]).shape[0]
            if not self.cross_learning and rows >= self.batch_size:
                yield from self._predict_chunk(chunk)
                chunk, rows = [], 0
        if chunk:
            yield from self._predict_chunk(chunk)

    def _predict_chunk(self, entries: list[dict]) -> list[QuantileForecast]:
        h = self.prediction_length
        tasks = []
        for i, entry in enumerate(entries):
            try:
                tasks.append(parse_task(entry_to_input(entry, h), i))
            except ValueError as exc:
                item = entry.get(FieldName.ITEM_ID, i)
                raise ValueError(f"item {item!r}: {str(exc).removeprefix(f'input {i}: ')}") from None
        quantiles, means = self.pipeline.forecast_tasks(
            tasks, h, self.quantile_levels, self.batch_size, self.context_length, self.cross_learning
        )
        forecasts = []
        for entry, q, mean in zip(entries, quantiles, means, strict=True):
            arrays = np.concatenate([q, mean[..., None]], axis=-1)  # (D, H, K+1)
            arrays = arrays.transpose(2, 1, 0)  # (K+1, H, D)
            if np.ndim(entry[FieldName.TARGET]) == 1:
                arrays = arrays[..., 0]
            start = entry[FieldName.START] + np.shape(entry[FieldName.TARGET])[-1]
            forecasts.append(
                QuantileForecast(
                    forecast_arrays=arrays,
                    start_date=start,
                    forecast_keys=list(self.forecast_keys),
                    item_id=entry.get(FieldName.ITEM_ID),
                )
            )
        return forecasts

    # -- persistence -------------------------------------------------------------------------
    def serialize(self, path: Path) -> None:
        """Write ``gluonts-config.json``, the model (``config.json`` + ``model.safetensors``) and
        the predictor's parameters (``tsmojo-predictor.json``). No pickles."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        super().serialize(path)
        self.pipeline.save_pretrained(path)
        params = {
            "prediction_length": self.prediction_length,
            "quantile_levels": list(self.quantile_levels),
            "batch_size": self.batch_size,
            "context_length": self.context_length,
            "cross_learning": self.cross_learning,
            "dtype": dtype_name(self.pipeline.dtype),
        }
        (path / _PARAMS_FILE).write_text(json.dumps(params, indent=2))

    @classmethod
    def deserialize(cls, path: Path, device: str | None = None, **kwargs) -> TSMojoPredictor:
        """Load a predictor written by :meth:`serialize` (also reachable through
        ``gluonts.model.predictor.Predictor.deserialize``)."""
        path = Path(path)
        params = json.loads((path / _PARAMS_FILE).read_text())
        dtype = params.pop("dtype", "float32")
        pipeline = TSMojoPipeline.from_pretrained(path, device=device or "cpu", dtype=dtype)
        return cls(pipeline, **params)
