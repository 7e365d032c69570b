import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from engine.paths import data_root  # noqa: E402


def _need(*parts: str) -> Path:
    p = data_root().joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not found at {p} (set FACEALIGN_DATA to ../shared/data)")
    return p


@pytest.fixture(scope="session")
def train_dir() -> Path:
    return _need("aflw_train", "labels.npz").parent


@pytest.fixture(scope="session")
def dev_dir() -> Path:
    return _need("aflw2000_dev", "labels.npz").parent
