"""Where the project finds its data and weights.

Shared data is never copied into the repository: it is read from ``$FACEALIGN_DATA`` or ``../shared/data``
relative to the project root.

Weights (~70 MB) are not package data, so a wheel does not carry a second copy of them. They are looked up, first
found wins: ``$FACEALIGN_WEIGHTS``; ``weights/`` of the source checkout the code runs from; the user's weights
folder (``$XDG_DATA_HOME/facealign/weights``, by default ``~/.local/share/facealign/weights``). So a checkout
works as it is, and after a non-editable ``pip install .`` either point ``FACEALIGN_WEIGHTS`` at a checkout's
``weights/`` or copy that folder to the user's weights folder. ``python main.py methods`` prints which one is used.
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = PROJECT_ROOT / "weights"   # the source checkout's weights (absent in an installed package)
RESOURCES_DIR = PROJECT_ROOT / "resources"
WEIGHTS_ENV = "FACEALIGN_WEIGHTS"


def data_root() -> Path:
    """Root of the shared datasets (may not exist: callers check)."""
    env = os.environ.get("FACEALIGN_DATA")
    if env:
        return Path(env)
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()


def data_path(*parts: str) -> Path:
    return data_root().joinpath(*parts)


def user_weights_dir() -> Path:
    """The per-user weights folder an installed package falls back to."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "facealign" / "weights"


def weights_location() -> tuple[Path, str]:
    """(the weights folder in use, where it came from: the setting that chose it, in words)."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser(), f"${WEIGHTS_ENV}"
    if WEIGHTS_DIR.is_dir():
        return WEIGHTS_DIR, "the source checkout"
    return user_weights_dir(), "the user weights folder"


def weights_dir() -> Path:
    return weights_location()[0]


def weights_path(name: str) -> Path:
    return weights_dir() / name
