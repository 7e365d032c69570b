"""A faster ``engine.visibility_model.patch_features`` (a proposal, not applied here: the visibility model's owner
changes its features): the crop's mean and standard deviation from OpenCV on the uint8 blurred image instead of
numpy on a float64 copy, and only the sampled values normalised. Same features to within 1e-14; µs per face of
both, alternating, three rounds, on the bench's fixed crops:

    python -m research.patch_features_speed
"""
from __future__ import annotations

import json
import time

import engine  # noqa: F401  (pins BLAS threads before numpy loads, as main.py does)

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def patch_features_proposed(crops: np.ndarray, landmarks: np.ndarray, face_width: np.ndarray) -> np.ndarray:
    """``patch_features`` with the crop statistics from ``cv2.meanStdDev`` (population std, as numpy's)."""
    from engine.visibility_model import PATCH_HALF, _patch_grid

    crops = np.asarray(crops)
    b, h, w = crops.shape[:3]
    blurred = [cv2.blur(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), (5, 5)) for c in crops]
    stats = np.array([np.ravel(cv2.meanStdDev(g)) for g in blurred])  # (B, 2): mean, std
    grey = np.stack(blurred)
    pts = np.asarray(landmarks, np.float64)[:, :, None, :2] \
        + _patch_grid()[None] * (PATCH_HALF * np.asarray(face_width, np.float64))[:, None, None, None]
    x = np.clip(np.rint(pts[..., 0]), 0, w - 1).astype(np.int64)
    y = np.clip(np.rint(pts[..., 1]), 0, h - 1).astype(np.int64)
    values = (grey[np.arange(b)[:, None, None], y, x] - stats[:, 0, None, None]) / (stats[:, 1, None, None] + 1e-6)
    return np.concatenate([values, values.std(-1, keepdims=True)], -1)


def median_us(fn, repeats: int = 1500) -> float:
    for _ in range(50):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def main() -> None:
    from engine.evaluation.bench import fixed_crops
    from engine.visibility_model import patch_features

    crops = np.stack(fixed_crops())
    rng = np.random.default_rng(0)
    landmarks = 20 + 80 * rng.random((len(crops), 68, 2))
    width = 60 + 20 * rng.random(len(crops))
    report = {}
    for b in (1, len(crops)):
        args = (crops[:b], landmarks[:b], width[:b])
        diff = float(np.abs(patch_features(*args) - patch_features_proposed(*args)).max())
        now, proposed = [], []
        for _ in range(3):
            now.append(median_us(lambda: patch_features(*args)) / b)
            proposed.append(median_us(lambda: patch_features_proposed(*args)) / b)
        report[f"{b} faces per call"] = {"max_abs_difference": diff, "now_us_per_face": [round(v, 1) for v in now],
                                         "proposed_us_per_face": [round(v, 1) for v in proposed]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
