"""The models shipped inside the package (``tsmojo/checkpoints/<name>/``) and the default one.

Kept free of heavy imports so the command line can name its default without loading torch.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_MODEL = "tsmojo-mini-v9"


def bundled_models() -> list[str]:
    """Names of the bundled models (folders holding a ``config.json``), sorted."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


def model_directory(name_or_path: str | Path) -> Path:
    """The directory of a model given as a directory or as a bundled model's name."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    bundled = BUNDLED_DIR / str(name_or_path)
    if not bundled.is_dir():
        raise FileNotFoundError(f"{name_or_path!r} is neither a directory nor a bundled model {bundled_models()}")
    return bundled
