"""Frontalization: sample the face's texture through its fitted mesh and render it from the front.

A frontal raster of the face model's mean shape (triangle + barycentrics per output pixel) is computed once, and
from it a sampling map that depends only on the topology (``FrontalSampler``: a sparse matrix from the mesh's
vertices to each face pixel's source position). Per frame that is one sparse product, one cv2.remap and a
per-triangle facing test. Pixels whose triangle faces away from the camera, or is seen so obliquely that its
texture is smeared or is the background beside the cheek (``min_facing``), blend in the mirrored pixel from the
other half of the face, which is symmetric in the frontal raster.
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


# cosine of the angle between a triangle's normal and the view direction below which the mirrored side is blended
# in (about 60 degrees; fully at 90 and beyond, where the mirrored side faces the camera better). At 40 degrees of
# yaw the far cheek's outer band is seen so obliquely that its projection is as likely background as skin (the grey
# band on aflw2000_dev images 591, 640, 714, 740, all about 40 degrees: research/frontalize_far_cheek.py)
MIN_FACING = 0.5


class FrontalSampler:
    """What a frontal raster needs per frame, precomputed once: for each face pixel its triangle and a row of a
    sparse (pixels x vertices) matrix holding its barycentrics, and the flat index of its mirrored pixel."""

    def __init__(self, raster: FrontalRaster, triangles: np.ndarray, n_vertices: int | None = None) -> None:
        from scipy import sparse

        s = raster.size
        flat_tri = raster.tri_id.reshape(-1)
        self.size = s
        self.inside = np.flatnonzero(flat_tri >= 0)
        self.tri = flat_tri[self.inside].astype(np.int64)
        self.triangles = np.asarray(triangles, np.int64)
        n_vertices = int(self.triangles.max()) + 1 if n_vertices is None else n_vertices
        bary = raster.bary.reshape(-1, 3)[self.inside]
        rows = np.repeat(np.arange(len(self.inside)), 3)
        self.weights = sparse.csr_matrix((bary.reshape(-1), (rows, self.triangles[self.tri].reshape(-1))),
                                         shape=(len(self.inside), n_vertices))
        ys, xs = np.divmod(np.arange(s * s), s)
        self.mirror = ys * s + raster.mirror_x[xs]   # flat index of each pixel's mirror
        self.outside = np.ones(s * s, bool)
        self.outside[self.inside] = False

    def __call__(self, image: np.ndarray, mesh: np.ndarray, min_facing: float = MIN_FACING) -> np.ndarray:
        """(S, S, 3) frontal view of the face in ``image`` given its fitted mesh (V, 3) in image pixels."""
        s = self.size
        src = self.weights @ np.asarray(mesh[:, :2], np.float64)
        map_x = np.full(s * s, -1.0, np.float32)
        map_y = np.full(s * s, -1.0, np.float32)
        map_x[self.inside], map_y[self.inside] = src[:, 0], src[:, 1]
        out = cv2.remap(image, map_x.reshape(s, s), map_y.reshape(s, s), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT)
        flat = out.reshape(s * s, -1)
        n = face_normals(mesh, self.triangles)
        if min_facing <= 0:  # the former rule: only pixels of triangles turned away take the mirrored pixel
            seen = np.zeros(s * s, bool)
            seen[self.inside] = n[self.tri, 2] > 0
            hidden = ~seen
            hidden[self.outside] = False
            fill = hidden & seen[self.mirror]
            flat[fill] = flat[self.mirror[fill]]
            flat[self.outside] = 0
            return out
        # how squarely each pixel's triangle faces the camera (cosine); below min_facing the mirrored pixel is
        # blended in, fully at 0 and beyond, where the mirrored side faces the camera better. A ramp rather than
        # a threshold: a per-triangle cut left a ragged patchwork along the far cheek
        cos = n[:, 2] / np.maximum(np.linalg.norm(n, axis=1), 1e-12)
        facing = np.full(s * s, -1.0)
        facing[self.inside] = cos[self.tri]
        mirror_facing = facing[self.mirror]
        weight = np.clip((min_facing - facing) / min_facing, 0.0, 1.0)
        weight[(mirror_facing <= facing) | (mirror_facing <= 0) | self.outside] = 0.0
        blend = weight > 0
        w = weight[blend, None]
        flat[blend] = (flat[blend] * (1 - w) + flat[self.mirror[blend]] * w + 0.5).astype(np.uint8)
        flat[self.outside] = 0
        return out


def frontalize(image: np.ndarray, mesh: np.ndarray, triangles: np.ndarray, raster: FrontalRaster,
               min_facing: float = 0.0) -> np.ndarray:
    """(S, S, 3) frontal view of the face in ``image`` given its fitted mesh (468, 3) in image pixels. Builds the
    sampling map each call: a caller with many frames keeps a ``FrontalSampler`` instead."""
    return FrontalSampler(raster, triangles, len(mesh))(image, mesh, min_facing)


def frontalize_per_pixel(image: np.ndarray, mesh: np.ndarray, triangles: np.ndarray,
                         raster: FrontalRaster) -> np.ndarray:
    """The former per-frame implementation (gathers every pixel's triangle corners each frame, 13-37 ms): kept as
    the reference the sampler is tested against."""
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
