import os
import shutil
import subprocess
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


@pytest.fixture(scope="session")
def display():
    """A private Xvfb display for the GUI tests (.ci/run installs Xvfb; VisPy cannot render under Qt's offscreen
    platform)."""
    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed (apt-get install xvfb; .ci/run does): the GUI tests need a display")
    # -displayfd: Xvfb picks a free display number itself and writes it to the pipe, so concurrent test runs on
    # one machine never share (and kill) each other's server
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(write_end,))
    os.close(write_end)
    with os.fdopen(read_end) as f:
        num = f.readline().strip()
    if not num:
        proc.kill()
        pytest.fail("Xvfb did not start (no display number on -displayfd)")
    yield f":{num}"
    proc.terminate()
    proc.wait(5)
