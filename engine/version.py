"""The package's one version: pyproject.toml's ``version``, read back from the installed package's metadata."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

DISTRIBUTION = "facealign-studio"


@lru_cache(maxsize=1)
def package_version() -> str:
    """The installed distribution's version; from a source checkout that was never installed, pyproject.toml's
    (the same single declaration, read directly)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        try:
            import tomllib  # Python 3.11+
        except ImportError:
            return "unknown"
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"
