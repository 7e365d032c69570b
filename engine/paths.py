"""Where the project finds its data and weights.

Shared data is never copied into the repository: it is read from ``$FACEALIGN_DATA`` or ``../shared/data``
relative to the project root.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = PROJECT_ROOT / "weights"
RESOURCES_DIR = PROJECT_ROOT / "resources"


def data_root() -> Path:
    """Root of the shared datasets (may not exist: callers check)."""
    env = os.environ.get("FACEALIGN_DATA")
    if env:
        return Path(env)
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()


def data_path(*parts: str) -> Path:
    return data_root().joinpath(*parts)


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / name
