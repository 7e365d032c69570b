"""UV position maps of the face model: x, y, z of the surface at every texel of an S x S map.

The 468 mesh vertices and the 68 landmarks are laid out by their BFM UVs (scaled into the map with a margin) and
triangulated in UV (Delaunay), so the map covers the jaw contour that lies beyond Face Mesh's oval. A map is a
fixed linear function of the 536 points: every covered texel is a barycentric mix of three of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.facemodel import LMK68_GROUPS, N_MESH, FaceModel
from engine.geometry.mesh import rasterize


@dataclass(frozen=True)
class UVLayout:
    size: int
    texel_uv: np.ndarray      # (536, 2) texel coordinates (x right, y down) of the 468 + 68 points
    triangles: np.ndarray     # (T, 3) UV triangulation of the 536 points
    tri_id: np.ndarray        # (S, S) triangle per texel, -1 outside
    bary: np.ndarray          # (S, S, 3)
    face_mask: np.ndarray     # (S, S) bool: texel inside a Face Mesh triangle (the face proper)
    weights: np.ndarray       # (S, S) float32 loss weights (PRNet's 16 : 4 : 3 : 0)
    nearest: np.ndarray       # (S, S, 2) nearest covered texel (row, col): uncovered texels copy it

    @property
    def covered(self) -> np.ndarray:
        return self.tri_id >= 0

    def grid_faces(self) -> np.ndarray:
        """Triangles over the face texels (row-major indices into ``map[face_mask]``): the map as a dense mesh."""
        idx = np.full(self.face_mask.shape, -1)
        idx[self.face_mask] = np.arange(int(self.face_mask.sum()))
        a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
        t1 = np.stack([a, c, b], -1).reshape(-1, 3)
        t2 = np.stack([b, c, d], -1).reshape(-1, 3)
        t = np.concatenate([t1, t2])
        return t[(t >= 0).all(1)].astype(np.int32)

    def matrix(self) -> np.ndarray:
        """(S*S, 536) float32 matrix M with map = M @ points (rows of uncovered texels copy their nearest)."""
        t = self.tri_id[self.nearest[..., 0], self.nearest[..., 1]].ravel()
        b = self.bary[self.nearest[..., 0], self.nearest[..., 1]].reshape(-1, 3)
        m = np.zeros((self.size * self.size, len(self.texel_uv)), np.float32)
        rows = np.arange(len(t))
        for k in range(3):
            np.add.at(m, (rows, self.triangles[t, k]), b[:, k])
        return m

    def render(self, points: np.ndarray) -> np.ndarray:
        """(..., 536, C) points -> (..., S, S, C) position map.

        Texels outside the layout copy the nearest covered texel, so a bilinear read at the layout's edge stays
        on the surface (their loss weight is 0).
        """
        t = self.tri_id[self.nearest[..., 0], self.nearest[..., 1]]
        b = self.bary[self.nearest[..., 0], self.nearest[..., 1]]
        vals = points[..., self.triangles[t], :]     # (..., S, S, 3, C)
        return (vals * b[..., None]).sum(-2)

    def sample(self, pmap: np.ndarray, uv: np.ndarray | None = None) -> np.ndarray:
        """Bilinear read of an (S, S, C) map at texel coordinates (default: the 536 points)."""
        uv = self.texel_uv if uv is None else uv
        x, y = uv[:, 0], uv[:, 1]
        x0 = np.clip(np.floor(x).astype(int), 0, self.size - 2)
        y0 = np.clip(np.floor(y).astype(int), 0, self.size - 2)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        return (pmap[y0, x0] * (1 - fx) * (1 - fy) + pmap[y0, x0 + 1] * fx * (1 - fy)
                + pmap[y0 + 1, x0] * (1 - fx) * fy + pmap[y0 + 1, x0 + 1] * fx * fy)


def build_layout(fm: FaceModel, size: int = 64, margin: float = 2.0) -> UVLayout:
    from scipy.spatial import Delaunay

    uv = np.concatenate([fm.uv, fm.lmk_uv]).astype(np.float64)
    lo, hi = uv.min(0), uv.max(0)
    scale = (size - 1 - 2 * margin) / (hi - lo).max()
    tex = (uv - lo) * scale + margin
    tex[:, 1] = size - 1 - tex[:, 1]  # v up -> row down
    tex[:, 0] += (size - 1 - 2 * margin - (hi - lo)[0] * scale) / 2  # centre horizontally
    tri = Delaunay(tex, qhull_options="QJ").simplices.astype(np.int32)
    # drop sliver triangles along the hull that span outside the face (long edges)
    e = np.stack([np.linalg.norm(tex[tri[:, i]] - tex[tri[:, (i + 1) % 3]], axis=1) for i in range(3)], 1)
    tri = tri[e.max(1) < 0.25 * size]
    z = np.zeros((len(tex), 1))
    tri_id, bary = rasterize(np.concatenate([tex, z], 1), tri, size, size)
    face_id, _ = rasterize(np.concatenate([tex[:N_MESH], z[:N_MESH]], 1), fm.triangles, size, size)
    face = face_id >= 0
    weights = np.where(face, 3.0, 0.0)
    # eyes, nose and mouth regions: inside the UV hull of each group's landmarks
    from matplotlib.path import Path as MplPath

    ys, xs = np.mgrid[0:size, 0:size]
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    lm = tex[N_MESH:]
    for group in ("eyes", "nose", "mouth"):
        idx = list(LMK68_GROUPS[group])
        parts = [idx[:6], idx[6:]] if group == "eyes" else [idx]
        for part in parts:
            from scipy.spatial import ConvexHull

            hull = lm[part][ConvexHull(lm[part]).vertices]
            inside = MplPath(hull).contains_points(grid, radius=1.0).reshape(size, size)
            weights[inside & (tri_id >= 0)] = 4.0
    for x, y in lm:  # the 68 landmarks: the texels around each
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        weights[max(y0, 0):y0 + 2, max(x0, 0):x0 + 2] = 16.0
    from scipy.ndimage import distance_transform_edt

    _, near = distance_transform_edt(tri_id < 0, return_indices=True)
    return UVLayout(size, tex, tri, tri_id, bary, face, weights.astype(np.float32),
                    np.stack([near[0], near[1]], axis=-1))
