"""`main.py eval`: AFLW2000-3D NME per |yaw| bucket in protocol (crop at roi_box) or e2e mode.

e2e runs the app's own still-image front end on the whole image (``evaluate_e2e``): the app's detector, the crop
settled by repeated landmark re-crops (engine/detect/front_end.py), the kept alignment. A detection failure
scores the mean shape's NME; it is never skipped.

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


SUBJECT_IOU = 0.3  # a detection whose crop box overlaps the protocol crop box this much is the annotated subject


def match_subject(crop_boxes: list[np.ndarray], roi_box: np.ndarray) -> int:
    """Index of the detection that is the annotated face (best IoU of its crop box with the protocol crop box, at
    least SUBJECT_IOU), or -1: the detector missed the subject. A background face, however large, is not it."""
    from engine.detect.tracker import iou

    scores = [iou(np.asarray(b[:4]), roi_box) for b in crop_boxes]
    if not scores or max(scores) < SUBJECT_IOU:
        return -1
    return int(np.argmax(scores))


def bucket_counts(flags: np.ndarray, abs_yaw: np.ndarray) -> dict[str, int]:
    """Sum of ``flags`` (bools or counts) per |yaw| bucket; every |yaw| >= 60 is in the last one, as in NME."""
    return {name: int(flags[(abs_yaw >= lo) & ((abs_yaw < hi) | (hi == 90.0))].sum()) for lo, hi, name in YAW_BUCKETS}


def evaluate(method: Method, data_dir: str | Path, mode: str = "protocol", limit: int | None = None,
             progress: Callable[[int, int], None] | None = None, crops: int | None = None) -> dict:
    """``crops``: e2e only, the crop ensemble's size (None: the front end's, ``ENSEMBLE_CROPS``)."""
    if mode == "e2e":
        return evaluate_e2e(method, data_dir, limit, progress, crops=crops)
    if mode != "protocol":
        raise ValueError(f"unknown mode {mode!r} (protocol or e2e)")
    ds = load_set(data_dir)
    n = len(ds) if limit is None else min(limit, len(ds))
    preds = np.zeros((n, 68, 2))
    rotations = np.full((n, 3, 3), np.nan)
    failed = np.zeros(n, bool)
    ms = []
    for i in range(n):
        img = cv2.imread(str(ds.image_path(i)), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read {ds.image_path(i)}")
        box = ds.roi_box[i]
        t0 = time.perf_counter()
        try:
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
    return _summary(method, ds, n, mode, preds, rotations, failed, ms, data_dir)


def _summary(method: Method, ds, n: int, mode: str, preds: np.ndarray, rotations: np.ndarray, failed: np.ndarray,
             ms: list[float], data_dir) -> dict:
    nme = nme_per_image(preds, ds.pts68[:n, :, :2])
    buckets, counts = bucket_summary(nme, ds.yaw[:n])
    pose_mae = protocol_mae(rotations, ds.pose_para[:n])
    ay = np.abs(ds.yaw[:n])
    return {"method": method.name, "mode": mode, "nme": buckets, "n": counts, "failures": int(failed.sum()),
            "failures_by_bucket": bucket_counts(failed, ay), "pose_mae": pose_mae,
            "ms_per_face_mean": float(np.mean(ms)) if ms else None, "data": str(data_dir),
            "_per_image": nme, "_abs_yaw": ay, "_rotations": rotations}


def evaluate_e2e(method: Method, data_dir: str | Path, limit: int | None = None,
                 progress: Callable[[int, int], None] | None = None, detector=None,
                 crops: int | None = None) -> dict:
    """The app's still-image front end on every whole image: the app's detector (``FaceDetector.detect``, as the
    image-folder mode runs it), the detection that is the annotated subject (``match_subject``), its crop settled
    by ``settle_boxes``, then the kept alignment (a crop ensemble of ``crops`` boxes around the settled one,
    engine/methods/crop_ensemble.py; None: the front end's ``ENSEMBLE_CROPS``). A missed subject, or a crop where the method finds no face,
    scores the mean shape's NME (never skipped); other detections are counted as duplicates (centre inside the
    subject's crop box) or elsewhere. Times are CPU ms (time.process_time: other jobs do not inflate them) per
    image: detector, crop settling, and the kept alignment (the network's share)."""
    from engine.detect.crop_policy import roi_box_from_detection
    from engine.detect.front_end import settle_boxes
    from engine.methods.crop_ensemble import ENSEMBLE_CROPS, align_ensembles

    ensemble = ENSEMBLE_CROPS if crops is None else int(crops)

    ds = load_set(data_dir)
    n = len(ds) if limit is None else min(limit, len(ds))
    own_detector = detector is None
    if own_detector:
        from engine.detect.face_detector import FaceDetector

        detector = FaceDetector()
    preds = np.zeros((n, 68, 2))
    rotations = np.full((n, 3, 3), np.nan)
    missed = np.zeros(n, bool)
    method_failed = np.zeros(n, bool)
    duplicates = np.zeros(n, int)
    elsewhere = np.zeros(n, int)
    steps = np.zeros(n, int)
    converged = np.zeros(n, bool)
    detect_ms, settle_ms, align_ms, wall_ms = [], [], [], []
    try:
        for i in range(n):
            img = cv2.imread(str(ds.image_path(i)), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read {ds.image_path(i)}")
            w0, t0 = time.perf_counter(), time.process_time()
            crops = [roi_box_from_detection(b) for b in detector.detect(img)]
            t1 = time.process_time()
            detect_ms.append((t1 - t0) * 1e3)
            subject = match_subject(crops, ds.roi_box[i])
            g = ds.roi_box[i]
            for j, c in enumerate(crops):
                if j != subject:
                    inside = g[0] <= (c[0] + c[2]) / 2 <= g[2] and g[1] <= (c[1] + c[3]) / 2 <= g[3]
                    duplicates[i] += inside
                    elsewhere[i] += not inside
            res = None
            if subject < 0:
                missed[i] = True
            else:
                try:
                    settled = settle_boxes(method, img, [crops[subject]])[0]
                    t2 = time.process_time()
                    settle_ms.append((t2 - t1) * 1e3)
                    steps[i], converged[i] = settled.steps, settled.converged
                    box = settled.box
                    res = align_ensembles(method, img, [box], ensemble)[0]
                    align_ms.append((time.process_time() - t2) * 1e3)
                except NoFaceError:  # the method found no face in the crop (MediaPipe)
                    res = None
                if res is None:
                    method_failed[i] = True
            wall_ms.append((time.perf_counter() - w0) * 1e3)
            if res is None:
                preds[i] = mean_shape_landmarks(ds.roi_box[i])[:, :2]
            else:
                preds[i] = res.landmarks[:, :2]  # image pixels (the ensemble's average)
                rotations[i] = res.rotation
            if progress:
                progress(i + 1, n)
    finally:
        if own_detector:
            detector.close()
    out = _summary(method, ds, n, "e2e", preds, rotations, missed | method_failed, align_ms, data_dir)
    ay = out["_abs_yaw"]
    found = ~missed
    nme_found, n_found = bucket_summary(out["_per_image"][found], ds.yaw[:n][found])
    out.update({
        "misses": int(missed.sum()), "misses_by_bucket": bucket_counts(missed, ay),
        "method_failures": int(method_failed.sum()),
        "nme_detected": nme_found, "n_detected": n_found,
        "duplicates_by_bucket": bucket_counts(duplicates, ay), "elsewhere_by_bucket": bucket_counts(elsewhere, ay),
        "crop_ensemble": ensemble,
        "subject_rule": f"detection whose crop box has IoU >= {SUBJECT_IOU} with the protocol roi_box",
        "recrop_steps_mean": float(steps[found].mean()) if found.any() else None,
        "recrop_converged_share": float(converged[found].mean()) if found.any() else None,
        "cpu_ms_per_image": {"detect": float(np.mean(detect_ms)) if detect_ms else None,
                             "settle_crop": float(np.mean(settle_ms)) if settle_ms else None,
                             "network": float(np.mean(align_ms)) if align_ms else None},
        "wall_ms_per_image": float(np.median(wall_ms)) if wall_ms else None,
        "detector": getattr(detector, "description", type(detector).__name__),
    })
    return out
