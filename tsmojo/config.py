"""Model configuration."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_QUANTILES: tuple[float, ...] = (0.01, *[round(0.05 * i, 2) for i in range(1, 20)], 0.99)


# Fields older checkpoints carry that no model reads: "dropout" was saved but never applied.
RETIRED_FIELDS = ("dropout",)
# What a config saved before a field existed meant by its absence: the architecture it was trained with.
LEGACY_VALUES = {
    "scale_window": 0,
    "rotary_max_period": None,
    "seasonal_hint": False,
    "covariate_hint": False,
    "hint_shortcut": False,
}


@dataclass
class TSMojoConfig:
    """Hyperparameters of :class:`tsmojo.model.TSMojoModel`.

    Lengths ``window``, ``chunk_size``, ``memory_size`` and ``rotary_max_period`` count patches;
    ``context_length``, ``max_context_length`` and ``scale_window`` count time steps.

    Length generalisation: ``scale_window`` sets the scaling on the recent past, so a long history
    does not squeeze the dynamics near the forecast (on tsmojo-mini, whole-context scaling was the
    main reason more context made forecasts worse). ``rotary_max_period`` can bound every rotary
    period by a distance that training contexts cover many times over, so that no query-key
    distance (a memory token thousands of patches back included) shows a rotary phase unseen in
    training; retrofitted onto a trained model it cost accuracy (``recipes/mini_v2_rotary_trial.yaml``),
    so it is off by default until a model is trained with it from scratch.
    """

    patch_size: int = 16  # time steps per patch token
    d_model: int = 128  # width of the residual stream
    num_layers: int = 4  # B'MOJO blocks
    num_heads: int = 4  # heads of the time mixing and of group attention
    d_ff: int = 512  # hidden width of the feed-forward block and of the embedding and head MLPs
    ssm_state: int = 32  # state size of the SSD scan (fading memory)
    window: int = 16  # sliding-window length; the fading band covers the `window` patches before it
    chunk_size: int = 16  # SSD chunk, and the query chunk that shares one eidetic memory
    memory_topk: int = 2  # most surprising tokens each chunk adds to the eidetic memory
    memory_size: int = 16  # eidetic-memory slots each query chunk reads
    max_output_patches: int = 4  # patches the head emits per forward pass
    context_length: int = 2048  # default context in time steps when the caller gives none
    max_context_length: int = 16384  # longest context the API feeds the model; longer ones are cut
    scale_window: int = 512  # time steps at the end of the context that set location and scale (0: all)
    rotary_max_period: float | None = None  # longest rotary period in patches (None: base-10000 rotary)
    seasonal_hint: bool = True  # feed each token the value one detected period earlier (tsmojo.seasonality)
    hint_max_period: int = 1024  # longest period, in time steps, the detection considers
    hint_window: int = 4096  # time steps at the end of the context the detection reads
    # Feed each target row whose group holds known-future covariates a ridge regression of its
    # values on them, fitted over the last `hint_window` steps (tsmojo.covariate_hint).
    covariate_hint: bool = False
    # Move the forecast toward each enabled hint's future values by a gate read from the future
    # tokens (TSMojoModel.hint_shortcut), so that copying a cycle or a regression is exact.
    hint_shortcut: bool = False
    # With the shortcut: multiply the seasonal gate by sigmoid(slope * log seasonal gain), so that
    # it cannot open on a context where copying the last cycle predicted worse than copying the
    # last step (None: the gate is the learnt one alone). Measured as 4,000 steps of mini_r2 with
    # slope 4, it cost the seasonal sets more than it gained on trending ones, so no recipe but that
    # probe sets it (tsmojo/recipes/mini_r2_probe_gain_gate.yaml).
    hint_gate_gain_slope: float | None = None
    # The seasonal hint's future values continue the context's cycle-to-cycle drift
    # (tsmojo.seasonality.seasonal_drift) instead of repeating the last cycle at its level, so that
    # the shortcut cannot damp a trend on a context where a period was found. Switched on for the
    # last 3,900 steps of mini_r2, it lost on the dev aggregate and did not help the steady_trend
    # case, so no recipe but that probe sets it (tsmojo/recipes/mini_r2_probe_drift.yaml).
    seasonal_hint_drift: bool = False
    quantiles: tuple[float, ...] = field(default_factory=lambda: DEFAULT_QUANTILES)  # levels the head emits
    innovation_loss_weight: float = 0.1  # weight of the SSM readout's next-token loss in training

    def __post_init__(self) -> None:
        self.quantiles = tuple(float(q) for q in self.quantiles)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if any(not 0.0 < q < 1.0 for q in self.quantiles) or list(self.quantiles) != sorted(self.quantiles):
            raise ValueError(f"quantiles must be increasing and inside (0, 1), got {self.quantiles}")
        if self.context_length > self.max_context_length:
            raise ValueError(
                f"context_length={self.context_length} exceeds max_context_length={self.max_context_length}"
            )
        if self.rotary_max_period is not None and self.rotary_max_period <= 2 * math.pi:
            raise ValueError(f"rotary_max_period must exceed 2*pi patches, got {self.rotary_max_period}")
        if self.hint_gate_gain_slope is not None and not (self.hint_shortcut and self.seasonal_hint):
            raise ValueError("hint_gate_gain_slope damps the seasonal shortcut: enable seasonal_hint and hint_shortcut")
        if self.seasonal_hint_drift and not self.seasonal_hint:
            raise ValueError("seasonal_hint_drift changes the seasonal hint: enable seasonal_hint")
        if self.hint_shortcut and not (self.seasonal_hint or self.covariate_hint):
            raise ValueError("hint_shortcut needs a hint to pass on: enable seasonal_hint or covariate_hint")
        for name in ("patch_size", "window", "chunk_size", "max_output_patches", "context_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @property
    def horizon(self) -> int:
        """Time steps produced by one forward pass (the head's reach)."""
        return self.max_output_patches * self.patch_size

    @classmethod
    def tiny(cls, **overrides) -> TSMojoConfig:
        """A tiny architecture (a few thousand parameters) that exercises every layer: for smoke
        tests and for benchmarks of the engine around the model, never for forecasting."""
        values = dict(
            d_model=16, num_layers=1, num_heads=2, d_ff=32, ssm_state=4, patch_size=4,
            window=2, chunk_size=4, memory_size=4, max_output_patches=2,
        )  # fmt: skip
        return cls(**{**values, **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TSMojoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {**LEGACY_VALUES, **{k: v for k, v in values.items() if k not in RETIRED_FIELDS}}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TSMojoConfig fields: {sorted(unknown)}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> TSMojoConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
