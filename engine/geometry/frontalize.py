"""Frontalization: sample the face's texture through its fitted mesh and render it from the front.

A frontal raster of the face model's mean shape (triangle + barycentrics per output pixel) is computed once; per
frame each output pixel's source position is the same barycentric mix of the fitted mesh's projected vertices,
read with cv2.remap. Pixels whose triangle faces away from the camera (self-occluded) take the mirrored pixel
from the other half of the face, which is symmetric in the frontal raster.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from engine.geometry.mesh import face_normals, rasterize, rasterize_painter


@dataclass(frozen=True)
class FrontalRaster:
    size: int
    tri_id: np.ndarray   # (S, S) int32, -1 outside the face
    bary: np.ndarray     # (S, S, 3)
    mirror_x: np.ndarray  # (S,) column index mirrored about the face's midline


def frontal_raster(frontal_mesh_pixel_frame: np.ndarray, triangles: np.ndarray, size: int = 192,
                   margin: float = 0.06, fast: bool = False) -> FrontalRaster:
    """Raster of a frontal mesh (pixel frame: y down, z toward the camera) scaled into size x size: the mean
    shape once, or (``fast``, a few ms) a method's own pose-free shape every frame."""
    v = np.asarray(frontal_mesh_pixel_frame, dtype=np.float64).copy()
    lo, hi = v[:, :2].min(0), v[:, :2].max(0)
    s = (1 - 2 * margin) * size / (hi - lo).max()
    centre = (lo + hi) / 2
    v[:, :2] = (v[:, :2] - centre) * s + size / 2
    v[:, 2] *= s
    tri_id, bary = (rasterize_painter if fast else rasterize)(v, triangles, size, size)
    mid = size / 2
    mirror = np.clip(np.round(2 * mid - 1 - np.arange(size)).astype(int), 0, size - 1)
    return FrontalRaster(size, tri_id, bary, mirror)


def frontalize(image: np.ndarray, mesh: np.ndarray, triangles: np.ndarray, raster: FrontalRaster) -> np.ndarray:
    """(S, S, 3) frontal view of the face in ``image`` given its fitted mesh (468, 3) in image pixels."""
    inside = raster.tri_id >= 0
    t = np.where(inside, raster.tri_id, 0)
    corners = mesh[triangles[t]]                                  # (S, S, 3, 3)
    src = (corners[..., :2] * raster.bary[..., None]).sum(-2)     # (S, S, 2)
    out = cv2.remap(image, src[..., 0].astype(np.float32), src[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT)
    facing = face_normals(mesh, triangles)[:, 2] > 0
    seen = inside & facing[t]
    hidden = inside & ~seen
    mirrored = out[:, raster.mirror_x]
    mirror_ok = seen[:, raster.mirror_x]
    fill = hidden & mirror_ok
    out[fill] = mirrored[fill]
    out[~inside] = 0
    return out
