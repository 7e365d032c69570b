"""The crop pixel frame every layer shares, and its mapping from the 3DMM's model frame.

The 3DMM lives in a right-handed model frame (x right, y up, z toward the camera). Images use crop pixels: x right,
y down, z toward the camera, same scale as x and y (the shared data's convention). A camera-transformed model point
(u, v, w) lands in a crop of side ``size`` at x = u - 1, y = size - v, z = w. engine/geometry/projection.py builds
on these; they live here, below the face model, because the face model and the BFM project with them too.
"""
from __future__ import annotations

import numpy as np

CROP_SIZE = 120


def model_to_crop(v: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    out = np.array(v, dtype=np.float64, copy=True)
    out[..., 0] -= 1.0
    out[..., 1] = size - out[..., 1]
    return out


def crop_to_model(p: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    out = np.array(p, dtype=np.float64, copy=True)
    out[..., 0] += 1.0
    out[..., 1] = size - out[..., 1]
    return out
