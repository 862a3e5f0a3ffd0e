"""The models shipped inside the package (``tsmojo/checkpoints/<name>/``) and the default one.

Kept free of heavy imports so the command line can name its default without loading torch.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_MODEL = "tsmojo-mini-v8"


def bundled_models() -> list[str]:
    """Names of the bundled models (folders holding a ``config.json``), sorted."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())
