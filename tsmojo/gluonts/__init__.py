"""GluonTS integration: :class:`TSMojoPredictor` (zero-shot) and :class:`TSMojoEstimator` (fine-tuning)."""

from tsmojo.gluonts.dataset import entry_to_input, frame_to_entries
from tsmojo.gluonts.estimator import TSMojoEstimator
from tsmojo.gluonts.predictor import TSMojoPredictor

__all__ = ["TSMojoEstimator", "TSMojoPredictor", "entry_to_input", "frame_to_entries"]
