"""The rotation a method reports: its declared source (``MethodInfo.pose_source``, engine/geometry/head_pose.py
POSE_SOURCES) times a fixed head-frame correction fitted on the training split.

Why a correction: the students learned the teacher's rotations, but the rotation of a Procrustes fit onto the mean
shape (or a network's own pose head) sits a degree or two off the teacher's camera on average (the mean shape's
frame is not every fitted face's). One rotation C per method and source, R_reported = R_source @ C, is fitted by
``python main.py pose-study --method NAME --write`` on aflw_train crops (C = the rotation nearest the mean of
R_source^T R_teacher) and stored in weights/pose_calibration.json with the sha256 of the weights it was fitted
on; it is applied when that study chose "SOURCE+correction" on the training split for the declared source. Weights that changed since then get no correction and a warning (re-run the study), never a stale one.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from engine.geometry.head_pose import POSE_SOURCES, procrustes_rotations
from engine.geometry.rotation import nearest_rotation
from engine.paths import weights_path

CALIBRATION_FILE = "pose_calibration.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fit_correction(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(3, 3) C minimising sum |R_source C - R_target|^2 over (N, 3, 3) pairs (NaN rows skipped)."""
    ok = ~np.isnan(source.reshape(len(source), -1)).any(1) & ~np.isnan(target.reshape(len(target), -1)).any(1)
    return nearest_rotation(np.einsum("nji,njk->ik", source[ok], target[ok]))


def read_calibrations(path: Path | None = None) -> dict:
    p = path or weights_path(CALIBRATION_FILE)
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


class PoseOutput:
    """Turns a batch's points and network rotations into the rotations the method reports."""

    def __init__(self, name: str, source: str, weights_file: Path, mean_points: np.ndarray,
                 calibrations: dict | None = None) -> None:
        if source not in POSE_SOURCES:
            raise ValueError(f"method {name!r}: pose source {source!r} is not one of {POSE_SOURCES}")
        self.source = source
        self.mean_points = np.asarray(mean_points, np.float64)
        self.correction: np.ndarray | None = None
        entry = (read_calibrations() if calibrations is None else calibrations).get(name)
        # the correction applies only where the training split chose it for this source (else the raw rotation won)
        if entry is not None and entry.get("chosen_on_train") == f"{source}+correction":
            if weights_file.exists() and entry.get("weights_sha256") == file_sha256(weights_file):
                self.correction = np.asarray(entry["corrections"][source], np.float64)
            else:
                warnings.warn(f"{CALIBRATION_FILE}: method {name!r}'s pose correction was fitted on other weights "
                              f"than {weights_file.name}; reporting the uncorrected {source} rotation (re-run "
                              f"`python main.py pose-study --method {name} --write`)", stacklevel=2)

    def rotations(self, points: np.ndarray, network: np.ndarray) -> np.ndarray:
        """(B, 3, 3) reported rotations of (B, 536, 3) crop-pixel points and (B, 3, 3) network rotations."""
        r = network if self.source == "network" else procrustes_rotations(self.mean_points, points, self.source)
        return r if self.correction is None else r @ self.correction
