"""`main.py eval`: AFLW2000-3D NME per |yaw| bucket in protocol (crop at roi_box) or e2e mode.

e2e runs the app's own path on the whole image: BlazeFace finds the face, the method aligns the detector's crop,
then the tracker's step re-crops from those landmarks and aligns again (what the app does from a video's second
frame on). A detection failure scores the mean shape's NME; it is never skipped.

Pose MAE follows the field's protocol (FSA-Net's labels as SynergyNet's ``benchmark_FOE`` scores them; the
decomposition and the |angle| <= 99 filter are in engine/geometry/head_pose.py): each result's camera-from-head
rotation is decomposed the protocol's way and compared with Pose_Para in degrees. A face the method or the detector
did not find has no pose and is left out of the pose MAE (``pose_mae["n_missing"]`` counts them).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.detect.crop_policy import roi_box_from_landmarks
from engine.evaluation.aflw2000 import crop_image, load_set
from engine.evaluation.nme import YAW_BUCKETS, bucket_summary, nme_per_image
from engine.geometry.projection import crop_to_image
from engine.geometry.head_pose import protocol_mae
from engine.methods.base import Method, NoFaceError


def mean_shape_landmarks(roi_box: np.ndarray) -> np.ndarray:
    """The failure prediction: the training-set mean parameters' 68 points placed in the crop box."""
    from engine.facemodel import N_MESH, load_face_model
    from engine.paths import weights_path

    stats = weights_path("param_stats.npz")
    if not stats.exists():
        raise FileNotFoundError(f"{stats} missing; run `python main.py build-face-model`")
    return crop_to_image(load_face_model().points(np.load(stats)["mean"])[N_MESH:], roi_box)


def evaluate(method: Method, data_dir: str | Path, mode: str = "protocol", limit: int | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    ds = load_set(data_dir)
    n = len(ds) if limit is None else min(limit, len(ds))
    preds = np.zeros((n, 68, 2))
    rotations = np.full((n, 3, 3), np.nan)
    failed = np.zeros(n, bool)
    detector = None
    if mode == "e2e":
        from engine.detect.face_detector import FaceDetector

        detector = FaceDetector()
    elif mode != "protocol":
        raise ValueError(f"unknown mode {mode!r} (protocol or e2e)")
    ms = []
    for i in range(n):
        img = cv2.imread(str(ds.image_path(i)), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read {ds.image_path(i)}")
        box = ds.roi_box[i] if detector is None else detector.best_crop_box(img)
        res = None
        if box is not None:
            t0 = time.perf_counter()
            try:
                res = method.align(crop_image(img, box))
                if detector is not None:
                    # the tracker's step: re-crop from the landmarks just found (the training crops' policy)
                    box = roi_box_from_landmarks(crop_to_image(res.landmarks, box)[:, :2])
                    res = method.align(crop_image(img, box))
            except NoFaceError:  # the method found no face in the crop (MediaPipe)
                res = None
            ms.append((time.perf_counter() - t0) * 1e3)
        if res is None:
            failed[i] = True
            preds[i] = mean_shape_landmarks(ds.roi_box[i])[:, :2]
        else:
            preds[i] = crop_to_image(res.landmarks, box)[:, :2]
            rotations[i] = res.rotation
        if progress:
            progress(i + 1, n)
    nme = nme_per_image(preds, ds.pts68[:n, :, :2])
    buckets, counts = bucket_summary(nme, ds.yaw[:n])
    pose_mae = protocol_mae(rotations, ds.pose_para[:n])
    ay = np.abs(ds.yaw[:n])
    fail_by_bucket = {name: int((failed & (ay >= lo) & ((ay < hi) | (hi == 90.0))).sum()) for lo, hi, name in YAW_BUCKETS}
    return {"method": method.name, "mode": mode, "nme": buckets, "n": counts, "failures": int(failed.sum()),
            "failures_by_bucket": fail_by_bucket, "pose_mae": pose_mae,
            "ms_per_face_mean": float(np.mean(ms)) if ms else None, "data": str(data_dir),
            "_per_image": nme, "_abs_yaw": ay, "_rotations": rotations}
