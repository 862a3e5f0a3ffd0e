"""Model configuration."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_QUANTILES: tuple[float, ...] = (0.01, *[round(0.05 * i, 2) for i in range(1, 20)], 0.99)


@dataclass
class TSMojoConfig:
    """Hyperparameters of :class:`tsmojo.model.TSMojoModel`.

    Lengths ``window``, ``chunk_size`` and ``memory_size`` count patches, not time steps.
    """

    patch_size: int = 16
    d_model: int = 128
    num_layers: int = 4
    num_heads: int = 4
    d_ff: int = 512
    ssm_state: int = 32
    window: int = 16
    chunk_size: int = 16
    memory_topk: int = 2
    memory_size: int = 16
    max_output_patches: int = 4
    context_length: int = 2048
    quantiles: tuple[float, ...] = field(default_factory=lambda: DEFAULT_QUANTILES)
    innovation_loss_weight: float = 0.1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.quantiles = tuple(float(q) for q in self.quantiles)
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
        if any(not 0.0 < q < 1.0 for q in self.quantiles) or list(self.quantiles) != sorted(self.quantiles):
            raise ValueError(f"quantiles must be increasing and inside (0, 1), got {self.quantiles}")
        for name in ("patch_size", "window", "chunk_size", "max_output_patches"):
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
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown TSMojoConfig fields: {sorted(unknown)}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> TSMojoConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
