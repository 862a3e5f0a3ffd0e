"""tsmojo: zero-shot probabilistic time-series forecasting with B'MOJO hybrid-memory blocks."""

from tsmojo.config import TSMojoConfig
from tsmojo.hardware import tune_cpu_allocator
from tsmojo.model import TSMojoModel, TSMojoOutput
from tsmojo.pipeline import TSMojoPipeline

__version__ = "0.1.0"

__all__ = ["TSMojoConfig", "TSMojoModel", "TSMojoOutput", "TSMojoPipeline", "__version__", "tune_cpu_allocator"]
