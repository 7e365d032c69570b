"""Model frame <-> crop pixels.

The 3DMM lives in a right-handed model frame (x right, y up, z toward the camera). Images use crop pixels:
x right, y down, z toward the camera, same scale as x and y (the shared data's convention). The mapping from a
camera-transformed model point (u, v, w) to a crop of side ``size`` is x = u - 1, y = size - v, z = w.
"""
from __future__ import annotations

import numpy as np

# the frame itself is defined below the face model (engine/crop_frame.py); re-exported here for geometry's callers
from engine.crop_frame import CROP_SIZE, crop_to_model, model_to_crop  # noqa: F401


def project(camera: np.ndarray, points_model: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Apply a 3x4 camera to (N, 3) model points; return (N, 3) crop-pixel points."""
    camera = np.asarray(camera, dtype=np.float64).reshape(3, 4)
    v = np.asarray(points_model, dtype=np.float64) @ camera[:, :3].T + camera[:, 3]
    return model_to_crop(v, size)


def crop_to_image(points: np.ndarray, roi_box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """Map crop-pixel points (N, 2 or 3) back into the original image given the crop box (x0, y0, x1, y1).

    z is scaled like x so depth stays in the image's pixel units.
    """
    x0, y0, x1, y1 = [float(v) for v in roi_box[:4]]
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * sx + x0
    out[..., 1] = out[..., 1] * sy + y0
    if out.shape[-1] > 2:
        out[..., 2] = out[..., 2] * (sx + sy) / 2
    return out


def image_to_crop(points: np.ndarray, roi_box: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    x0, y0, x1, y1 = [float(v) for v in roi_box[:4]]
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    out = np.array(points, dtype=np.float64, copy=True)
    out[..., 0] = (out[..., 0] - x0) / sx
    out[..., 1] = (out[..., 1] - y0) / sy
    if out.shape[-1] > 2:
        out[..., 2] = out[..., 2] / ((sx + sy) / 2)
    return out
