"""`main.py pose-study`: which rotation should each method report? Candidates per face (engine/geometry/head_pose.py
POSE_SOURCES): the network's own estimate, or the Procrustes rotation of its predicted 68 landmarks, 468 mesh
vertices or all 536 points onto the face model's mean shape.

Chosen on the TRAINING split: a fixed, evenly spaced subset of aflw_train crops, scored against the teacher's camera
rotation (``teacher_params``) decomposed the protocol's way, |angle| <= 99 filter as on AFLW2000-3D. Reported on
aflw2000_dev under the protocol for every candidate, so the choice can be checked but was not made there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.facemodel import N_MESH
from engine.geometry.head_pose import POSE_SOURCES, procrustes_rotations, protocol_angles, protocol_mae
from engine.geometry.rotation import decompose_camera
from engine.methods.base import Method, NoFaceError


def run_points(method: Method, crops: np.ndarray, batch: int = 32,
               progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, 536, 3) crop-pixel points (NaN where no face) and (N, 3, 3) network rotations of ``method`` on crops."""
    n = len(crops)
    pts = np.full((n, N_MESH + 68, 3), np.nan)
    rot = np.full((n, 3, 3), np.nan)
    for s in range(0, n, batch):
        try:
            results = method.align_batch(list(crops[s:s + batch]))
        except NoFaceError:
            results = [None] * len(crops[s:s + batch])
        for j, r in enumerate(results):
            if r is not None:
                pts[s + j] = np.concatenate([r.mesh, r.landmarks])
                rot[s + j] = r.rotation
        if progress:
            progress(min(s + batch, n), n)
    return pts, rot


def candidate_rotations(mean_points: np.ndarray, points: np.ndarray, network: np.ndarray) -> dict[str, np.ndarray]:
    """Every POSE_SOURCES candidate's (N, 3, 3) rotations (NaN rows where the method found no face)."""
    out = {"network": network}
    ok = ~np.isnan(points[:, 0, 0])
    for src in POSE_SOURCES[1:]:
        r = np.full((len(points), 3, 3), np.nan)
        if ok.any():
            r[ok] = procrustes_rotations(mean_points, points[ok], src)
        out[src] = r
    return out


def training_subset(train_dir: str | Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 120, 120, 3) BGR crops evenly spaced over aflw_train and their (n, 3) teacher rotations' protocol
    angles (pitch, yaw, roll degrees)."""
    train_dir = Path(train_dir)
    z = np.load(train_dir / "labels.npz")
    idx = np.linspace(0, len(z["names"]) - 1, n).round().astype(int)
    crops = np.stack([cv2.imread(str(train_dir / "images" / str(z["names"][i])), cv2.IMREAD_COLOR) for i in idx])
    rots = np.stack([decompose_camera(p[:12])[1] for p in z["teacher_params"][idx].astype(np.float64)])
    return crops, protocol_angles(rots)


def study(method: Method, train_dir: str | Path, dev_dir: str | Path, n_train: int = 3000,
          progress: Callable[[str, int, int], None] | None = None) -> dict:
    from engine.evaluation.aflw2000 import load_protocol_crops, load_set

    mean = method.fm.mean if hasattr(method, "fm") else None
    if mean is None:
        from engine.facemodel import load_face_model

        mean = load_face_model().mean
    crops, teacher = training_subset(train_dir, n_train)
    pts, net = run_points(method, crops, progress=(lambda i, n: progress("train", i, n)) if progress else None)
    train = {k: protocol_mae(r, teacher) for k, r in candidate_rotations(mean, pts, net).items()}
    ds = load_set(dev_dir)
    dcrops = load_protocol_crops(ds)
    pts, net = run_points(method, dcrops, progress=(lambda i, n: progress("dev", i, n)) if progress else None)
    dev = {k: protocol_mae(r, ds.pose_para) for k, r in candidate_rotations(mean, pts, net).items()}
    best = min(train, key=lambda k: train[k]["mean"] if train[k]["mean"] is not None else np.inf)
    return {"method": method.name, "n_train": n_train, "train_vs_teacher": train, "dev_protocol": dev,
            "chosen_on_train": best, "shipped": getattr(method.info, "pose_source", "network")}
