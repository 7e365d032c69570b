"""`main.py pose-study`: which rotation should each method report? Candidates per face (engine/geometry/head_pose.py
POSE_SOURCES): the network's own estimate, or the Procrustes rotation of its predicted 68 landmarks, 468 mesh
vertices or all 536 points onto the face model's mean shape.

Chosen on the TRAINING split: a fixed, evenly spaced subset of aflw_train crops, scored against the teacher's camera
rotation (``teacher_params``) decomposed the protocol's way, |angle| <= 99 filter as on AFLW2000-3D. Reported on
aflw2000_dev under the protocol for every candidate, so the choice can be checked but was not made there.
"""
from __future__ import annotations

import json
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
    """(n, 120, 120, 3) BGR crops evenly spaced over aflw_train and their (n, 3, 3) teacher camera rotations."""
    train_dir = Path(train_dir)
    z = np.load(train_dir / "labels.npz")
    idx = np.linspace(0, len(z["names"]) - 1, n).round().astype(int)
    crops = np.stack([cv2.imread(str(train_dir / "images" / str(z["names"][i])), cv2.IMREAD_COLOR) for i in idx])
    rots = np.stack([decompose_camera(p[:12])[1] for p in z["teacher_params"][idx].astype(np.float64)])
    return crops, rots


def study(method: Method, train_dir: str | Path, dev_dir: str | Path, n_train: int = 3000,
          progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Every candidate, raw and with its training-fitted correction (engine/methods/pose_output.py), scored on
    ``n_train`` aflw_train crops against the teacher and on aflw2000_dev protocol crops against Pose_Para."""
    from engine.evaluation.aflw2000 import load_protocol_crops, load_set
    from engine.facemodel import load_face_model
    from engine.methods.pose_output import fit_correction

    mean = load_face_model().mean
    method.pose_output = None          # the network's own rotation, uncorrected: the candidates start from it
    crops, teacher = training_subset(train_dir, n_train)
    pts, net = run_points(method, crops, progress=(lambda i, n: progress("train", i, n)) if progress else None)
    train_c = candidate_rotations(mean, pts, net)
    ds = load_set(dev_dir)
    pts, net = run_points(method, load_protocol_crops(ds),
                          progress=(lambda i, n: progress("dev", i, n)) if progress else None)
    dev_c = candidate_rotations(mean, pts, net)
    teacher_deg = protocol_angles(teacher)
    train, dev, corrections = {}, {}, {}
    for k in POSE_SOURCES:
        c = fit_correction(train_c[k], teacher)
        corrections[k] = c.tolist()
        train[k] = protocol_mae(train_c[k], teacher_deg)
        dev[k] = protocol_mae(dev_c[k], ds.pose_para)
        train[f"{k}+correction"] = protocol_mae(train_c[k] @ c, teacher_deg)
        dev[f"{k}+correction"] = protocol_mae(dev_c[k] @ c, ds.pose_para)
    best = min(train, key=lambda k: train[k]["mean"] if train[k]["mean"] is not None else np.inf)
    return {"method": method.name, "n_train": n_train, "train_vs_teacher": train, "dev_protocol": dev,
            "corrections": corrections, "chosen_on_train": best}


def write_calibration(res: dict, weights_file: Path, path: Path | None = None) -> Path:
    """Store the study's corrections for its method (weights/pose_calibration.json, one entry per method)."""
    from engine.export.atomic import atomic_write_text
    from engine.methods.pose_output import CALIBRATION_FILE, file_sha256, read_calibrations
    from engine.paths import weights_path

    path = path or weights_path(CALIBRATION_FILE)
    doc = read_calibrations(path)
    doc[res["method"]] = {
        "weights": weights_file.name, "weights_sha256": file_sha256(weights_file), "n_train": res["n_train"],
        "corrections": res["corrections"], "chosen_on_train": res["chosen_on_train"],
        "train_mean_mae_deg": {k: round(v["mean"], 3) for k, v in res["train_vs_teacher"].items()},
        "command": f"python main.py pose-study --method {res['method']} --n-train {res['n_train']} --write"}
    atomic_write_text(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return path
