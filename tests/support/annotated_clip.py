"""The shared test clip annotated once per test session (tests/stream/test_stream.py and tests/test_aligner.py both
compare against it): ``python main.py annotate obama.mp4 --method mtcnn3d --formats csv``."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.paths import PROJECT_ROOT, data_root

METHOD = "mtcnn3d"
_CACHE: dict[str, dict] = {}


def clip_path() -> Path:
    p = data_root() / "video" / "obama.mp4"
    if not p.exists():
        pytest.skip(f"{p} missing (set FACEALIGN_DATA to ../shared/data)")
    return p


def engine_pose(openface_r: list[float]) -> np.ndarray:
    """The CSV's pose_Rx/y/z (OpenFace's camera-axes Euler angles, radians) back to the engine's (yaw, pitch, roll)
    degrees: the inverse of engine.geometry.head_pose.csv_pose_radians."""
    from engine.geometry.head_pose import euler_from_rotation, rotation_from_csv_radians

    return euler_from_rotation(rotation_from_csv_radians(*openface_r))


def read_annotate_csv(path: Path) -> dict[tuple[int, int], dict]:
    """(frame, face_id) -> {"xy": (68, 2), "visible": (68,), "pose": (yaw, pitch, roll) degrees, "T": (3,)}."""
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            xy = np.array([[float(row[f"x_{i}"]), float(row[f"y_{i}"])] for i in range(68)])
            vis = np.array([int(row[f"v_{i}"]) for i in range(68)])
            pose = engine_pose([float(row[f"pose_R{a}"]) for a in "xyz"])
            t = np.array([float(row[f"pose_T{a}"]) for a in "xyz"])
            out[(int(row["frame"]), int(row["face_id"]))] = {"xy": xy, "visible": vis, "pose": pose, "T": t}
    return out


def annotated_clip(tmp_root: Path) -> dict[tuple[int, int], dict]:
    """annotate's CSV of the whole test clip with METHOD, read back (computed once per session)."""
    if METHOD not in _CACHE:
        src = clip_path()
        out = tmp_root / "annotate"
        r = subprocess.run([sys.executable, "main.py", "annotate", str(src), "--method", METHOD, "--out", str(out),
                            "--formats", "csv"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        _CACHE[METHOD] = read_annotate_csv(out / "annotations.csv")
    return _CACHE[METHOD]
