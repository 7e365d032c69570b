"""A non-editable install (a built wheel, installed apart from this checkout) finds the weights through
$FACEALIGN_WEIGHTS or the user's weights folder, `main.py methods` says which, and the wheel carries no weights."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from engine.paths import PROJECT_ROOT, WEIGHTS_DIR


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel (`pip wheel .`, as `pip install .` does) and installed into a folder of its
    own; the shared environment only lends the dependencies."""
    try:
        import setuptools

        local_backend = int(setuptools.__version__.split(".")[0]) >= 77  # pyproject's build-system requirement
    except ImportError:
        local_backend = False
    # the environment's setuptools when it is recent enough (no download), else pip fetches one as usual
    isolation = ["--no-build-isolation"] if local_backend else []
    root = tmp_path_factory.mktemp("install")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w",
                        str(root / "dist"), str(PROJECT_ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((root / "dist").glob("*.whl"))
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(root / "site"),
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def run_installed(root: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """Python with the installed copy first on the path, run outside the checkout."""
    e = {k: v for k, v in os.environ.items() if k != "FACEALIGN_WEIGHTS"}
    e.update(PYTHONPATH=str(root / "site"), XDG_DATA_HOME=str(root / "xdg"), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=e, capture_output=True, text=True,
                          timeout=600)


METHODS = "import sys, engine, main; print('engine from', engine.__file__); sys.exit(main.main(['methods']))"


def test_the_wheel_carries_code_not_weights(installed):
    names = zipfile.ZipFile(next((installed / "dist").glob("*.whl"))).namelist()
    assert "engine/aligner.py" in names and "engine/stream/osc.py" in names and "main.py" in names
    assert not [n for n in names if n.endswith((".onnx", ".pt", ".npz"))]
    assert next((installed / "dist").glob("*.whl")).stat().st_size < 5_000_000


def test_installed_without_weights_says_where_it_looked(installed):
    r = run_installed(installed, METHODS)
    assert r.returncode == 0, r.stderr
    assert f"engine from {installed / 'site'}" in r.stdout   # the installed copy, not this checkout
    assert f"weights: {installed / 'xdg' / 'facealign' / 'weights'} (from the user weights folder" in r.stdout
    assert "MISSING" in r.stdout and "FACEALIGN_WEIGHTS" in r.stdout


def test_installed_finds_weights_from_the_environment_variable(installed):
    r = run_installed(installed, METHODS, FACEALIGN_WEIGHTS=str(WEIGHTS_DIR))
    assert r.returncode == 0, r.stderr
    assert f"weights: {WEIGHTS_DIR} (from $FACEALIGN_WEIGHTS)" in r.stdout
    assert "MISSING" not in r.stdout
    # the resolved file loads as the model (the full alignment path is tests/test_aligner.py's; here it would
    # recompile the numba tail for the installed copy, ~40 s)
    r = run_installed(installed, "from engine.methods.base import registry; from engine.runtime import OnnxModel; "
                                 "print(OnnxModel(registry()['baseline'].weights_path).output_names)",
                      FACEALIGN_WEIGHTS=str(WEIGHTS_DIR))
    assert r.returncode == 0 and r.stdout.startswith("["), r.stderr[-2000:]


def test_installed_finds_weights_in_the_user_folder(installed):
    user = installed / "xdg" / "facealign" / "weights"
    user.parent.mkdir(parents=True, exist_ok=True)
    if not user.exists():
        user.symlink_to(WEIGHTS_DIR, target_is_directory=True)  # as if copied there
    try:
        r = run_installed(installed, METHODS)
    finally:
        user.unlink()
    assert r.returncode == 0, r.stderr
    assert f"weights: {user} (from the user weights folder)" in r.stdout and "MISSING" not in r.stdout
