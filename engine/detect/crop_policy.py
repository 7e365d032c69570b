"""One crop policy, shared by training, evaluation and the live app.

The training crops follow 3DDFA's protocol: a square centred on the landmarks' box with side = its diagonal
(``roi_box_from_landmarks``). A detector box is mapped to that frame with a calibration measured on the training
crops themselves (weights/crop_policy.json, ``python main.py calibrate-crop``).
"""
from __future__ import annotations

import json
from functools import lru_cache

import cv2
import numpy as np

from engine.geometry.projection import CROP_SIZE
from engine.paths import weights_path

POLICY_FILE = "crop_policy.json"


def roi_box_from_landmarks(pts: np.ndarray) -> np.ndarray:
    """3DDFA's crop box from landmarks: a square around the points' box, side = its diagonal."""
    x0, y0 = pts[:, 0].min(), pts[:, 1].min()
    x1, y1 = pts[:, 0].max(), pts[:, 1].max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = np.sqrt(2.0) * max(x1 - x0, y1 - y0)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def crop_image(img: np.ndarray, roi_box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Crop (padding with black outside the image) and resize to size x size, as 3DDFA's crop_img does."""
    x0, y0, x1, y1 = [float(v) for v in roi_box[:4]]
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    m = np.array([[1 / sx, 0, -x0 / sx], [0, 1 / sy, -y0 / sy]], dtype=np.float64)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


@lru_cache(maxsize=1)
def detector_calibration() -> dict[str, float]:
    p = weights_path(POLICY_FILE)
    if p.exists():
        return json.loads(p.read_text())
    return {"dx": 0.0, "dy": 0.1, "scale": 1.7}  # uncalibrated fallback; `main.py calibrate-crop` measures it


def roi_box_from_detection(box: np.ndarray) -> np.ndarray:
    """Crop box (x0, y0, x1, y1) for a detector box, in the training crops' framing."""
    c = detector_calibration()
    x0, y0, x1, y1 = [float(v) for v in box[:4]]
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + c["dx"] * w
    cy = (y0 + y1) / 2 + c["dy"] * h
    side = c["scale"] * (w + h) / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2])


def detection_for_crop(roi_box: np.ndarray, calibration: dict[str, float] | None = None) -> np.ndarray:
    """The square detector box that ``roi_box_from_detection`` maps to ``roi_box`` (its inverse): lets a second
    detector's boxes, and tests, speak BlazeFace's framing."""
    c = detector_calibration() if calibration is None else calibration
    x0, y0, x1, y1 = [float(v) for v in roi_box[:4]]
    w = (x1 - x0) / c["scale"]
    cx, cy = (x0 + x1) / 2 - c["dx"] * w, (y0 + y1) / 2 - c["dy"] * w
    return np.array([cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2])


def fit_crop_policy(detect, n_images: int, pad: float = 0.5, seed: int = 0) -> dict[str, float]:
    """A detector's crop policy from padded training crops, the crop itself being the target box: the medians
    (robust to misses) of the box-to-crop offset and scale over the images where ``detect`` (an image -> (K, 5)
    boxes, best first) found a face."""
    from engine.paths import data_path

    lab = np.load(data_path("aflw_train", "labels.npz"))
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(lab["names"]), size=min(n_images, len(lab["names"])), replace=False)
    rows = []
    for i in pick:
        img = cv2.imread(str(data_path("aflw_train", "images", lab["names"][i])))
        p = int(pad * 120)
        big = cv2.copyMakeBorder(img, p, p, p, p, cv2.BORDER_REPLICATE)
        boxes = detect(cv2.resize(big, None, fx=2, fy=2)) / np.array([2, 2, 2, 2, 1.0])
        if len(boxes) == 0:
            continue
        b = boxes[np.argmax(boxes[:, 4])]
        w, h = b[2] - b[0], b[3] - b[1]
        rows.append(((p + 59.5 - (b[0] + b[2]) / 2) / w, (p + 59.5 - (b[1] + b[3]) / 2) / h, 120 / ((w + h) / 2)))
    r = np.array(rows)
    return {"dx": float(np.median(r[:, 0])), "dy": float(np.median(r[:, 1])), "scale": float(np.median(r[:, 2])),
            "n": int(len(r)), "of": int(len(pick)),
            "spread_scale_iqr": float(np.subtract(*np.percentile(r[:, 2], [75, 25])))}


def calibrate(n_images: int = 2000, pad: float = 0.5, seed: int = 0, log=print) -> dict[str, float]:
    """BlazeFace's crop policy (``fit_crop_policy``), written to weights/crop_policy.json."""
    from engine.mp_runtime import BlazeFaceRunner

    det = BlazeFaceRunner(full_range=False, min_score=0.5)
    try:
        out = fit_crop_policy(det, n_images, pad, seed)
    finally:
        det.close()
    weights_path(POLICY_FILE).write_text(json.dumps(out, indent=1))
    detector_calibration.cache_clear()
    log(f"crop policy from {out['n']}/{out['of']} detections: {out}")
    return out
