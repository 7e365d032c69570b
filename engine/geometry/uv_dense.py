"""Dense UV position maps of the full 3DMM face (PRNet's layout): the BFM's no-neck surface (38,365 vertices,
76,073 triangles) drawn into an S x S map by the BFM's own UV coordinates, x, y, z in crop pixels per texel.

The map is linear in the vertices, so everything is precomputed once per resolution:
- per texel the UV triangle under its centre and the barycentric weights (``DenseUVLayout``);
- per texel the model-frame mean and the 40 + 10 bases mixed with those weights (``texel_basis``), so a label's map is
  ``camera(texel_mean + texel_bases @ coefficients)`` with no rasterisation per sample.

Texel convention (PRNet's): texel x = u (S - 1), texel y = (1 - v) (S - 1), texel centres at integers. The BFM's UVs
are mirror-symmetric (u -> 1 - u maps every vertex's UV onto its mirror twin's), so a mirrored face's map is the
map with its columns reversed; ``valid`` is made symmetric so that holds texel for texel.

Reading points (the 68 landmarks, the face model's 468 vertices) from a map: a bilinear read at a vertex's UV is
off by up to half a pixel where the UV parametrisation is stretched (nose sides) and undefined where its cell
leaves the surface (inner lips, jaw end). Each point is instead read as a fixed linear combination of the valid
texels around its UV, with weights that sum to one, fitted by least squares so the read-out equals the vertex on
ground-truth maps of real labels (``fit_readout``); the fit is measured on labels it did not see.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.bfm import bfm_vertices, camera_to_crop, keypoint_rows, noneck_rows  # noqa: F401 (re-exported)
from engine.facemodel import LMK68_GROUPS

N_COEF = 50  # 40 identity + 10 expression
# ONNX metadata of a dense-layout PRNet file (numpy-only here: the app reads it without torch)
LAYOUT_KEY = "uv_layout"
DENSE_LAYOUT = "bfm-noneck"


@dataclass(frozen=True)
class DenseUVLayout:
    size: int
    valid: np.ndarray          # (S, S) bool: texel on the no-neck surface (and its mirror texel too)
    texel_vertex: np.ndarray   # (T, 3) BFM vertex indices (of all 53,215) of the triangle under each valid texel
    texel_bary: np.ndarray     # (T, 3) float64 barycentric weights; valid texels in row-major order
    point_uv: np.ndarray       # (P, 2) texel coordinates of the read-out points (468 face-model vertices + 68)
    readout_index: np.ndarray  # (P, K) flat texel indices (row * S + col) of each point's read-out support
    readout_weight: np.ndarray  # (P, K) float32 weights (sum 1; padding has weight 0)
    loss_weight: np.ndarray    # (S, S) float32: PRNet's 16 (landmarks) : 4 (eyes, nose, mouth) : 3 (face) : 0

    @property
    def flat_valid(self) -> np.ndarray:
        """(T,) flat texel indices of the valid texels, row-major (the order of ``texel_vertex``)."""
        return np.flatnonzero(self.valid.ravel())

    def grid_faces(self) -> np.ndarray:
        """(F, 3) triangles over the valid texels (two per grid cell whose corners are valid; indices into
        ``map[valid]``): the map as a dense mesh, counter-clockwise in the image for a frontal face."""
        return grid_faces(self.valid)

    def read(self, pmap: np.ndarray) -> np.ndarray:
        """(..., S, S, C) maps -> (..., P, C) read-out points."""
        flat = pmap.reshape(*pmap.shape[:-3], self.size * self.size, pmap.shape[-1])
        return (flat[..., self.readout_index, :] * self.readout_weight[..., None]).sum(-2)


def grid_faces(valid: np.ndarray) -> np.ndarray:
    """Triangles over the True texels of an (S, S) mask (row-major indices into ``map[valid]``)."""
    idx = np.full(valid.shape, -1)
    idx[valid] = np.arange(int(valid.sum()))
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    t = np.concatenate([np.stack([a, c, b], -1).reshape(-1, 3), np.stack([b, c, d], -1).reshape(-1, 3)])
    return t[(t >= 0).all(1)].astype(np.int32)


def uv_to_texel(uv: np.ndarray, size: int) -> np.ndarray:
    """(N, 2) UVs in [0, 1] (v up) -> texel coordinates (x right, y down)."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[:, 0] * (size - 1), (1.0 - uv[:, 1]) * (size - 1)], 1)


def locate_texels(tex: np.ndarray, tris: np.ndarray, size: int, candidates: int = 32
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Point location of every texel centre in a planar 2D triangulation.

    tex: (V, 2) vertex positions in texels; tris: (T, 3). Returns (tri_id (S*S,) int, -1 where no triangle
    contains the centre; bary (S*S, 3) float64). Candidates are the ``candidates`` triangles with the nearest
    centroids; the BFM's UV triangles are far smaller than a texel, so the containing one is always among them.
    """
    from scipy.spatial import cKDTree

    a, b, c = tex[tris[:, 0]], tex[tris[:, 1]], tex[tris[:, 2]]
    ys, xs = np.mgrid[0:size, 0:size]
    q = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    _, j = cKDTree((a + b + c) / 3).query(q, k=candidates)
    A, B, C = a[j], b[j], c[j]
    den = (B[..., 0] - A[..., 0]) * (C[..., 1] - A[..., 1]) - (C[..., 0] - A[..., 0]) * (B[..., 1] - A[..., 1])
    den = np.where(np.abs(den) < 1e-12, np.nan, den)
    x, y = q[:, None, 0], q[:, None, 1]
    l1 = ((x - A[..., 0]) * (C[..., 1] - A[..., 1]) - (C[..., 0] - A[..., 0]) * (y - A[..., 1])) / den
    l2 = ((B[..., 0] - A[..., 0]) * (y - A[..., 1]) - (x - A[..., 0]) * (B[..., 1] - A[..., 1])) / den
    l0 = 1.0 - l1 - l2
    inside = np.nan_to_num(np.minimum(np.minimum(l0, l1), l2), nan=-1.0) >= -1e-9
    found = inside.any(1)
    k = np.argmax(inside, 1)
    r = np.arange(len(q))
    tri_id = np.where(found, j[r, k], -1)
    bary = np.where(found[:, None], np.stack([l0[r, k], l1[r, k], l2[r, k]], 1), 0.0)
    return tri_id, bary


def uv_mirror_permutation(uv: np.ndarray) -> tuple[np.ndarray, float]:
    """(V,) index of the vertex whose UV is the mirror (1 - u, v) of each vertex's, and the largest UV gap."""
    from scipy.spatial import cKDTree

    uv = np.asarray(uv, np.float64)
    d, j = cKDTree(uv).query(np.stack([1.0 - uv[:, 0], uv[:, 1]], 1))
    return j, float(d.max())


@dataclass(frozen=True)
class TexelBasis:
    """The 3DMM mixed to texels (model frame): texel positions = mean + bases @ coefficients."""
    mean: np.ndarray    # (T, 3) float32
    bases: np.ndarray   # (T, 3, 50) float32 (40 identity then 10 expression)


def texel_basis(layout: DenseUVLayout, bfm: dict[str, np.ndarray]) -> TexelBasis:
    mean = bfm["mean"].reshape(-1, 3)
    w = np.concatenate([bfm["w_shp"].reshape(-1, 3, 40), bfm["w_exp"].reshape(-1, 3, 10)], -1)
    bary = layout.texel_bary
    tm = sum(bary[:, k, None] * mean[layout.texel_vertex[:, k]].astype(np.float64) for k in range(3))
    tb = sum(bary[:, k, None, None] * w[layout.texel_vertex[:, k]].astype(np.float64) for k in range(3))
    return TexelBasis(tm.astype(np.float32), tb.astype(np.float32))


def render_maps(layout: DenseUVLayout, basis: TexelBasis, params: np.ndarray) -> np.ndarray:
    """(..., 62) teacher parameters -> (..., S, S, 3) position maps in crop pixels (0 at invalid texels)."""
    params = np.asarray(params, np.float64)
    offsets = params[..., 12:62] @ basis.bases.reshape(-1, N_COEF).T.astype(np.float64)     # (..., T*3)
    shape = basis.mean + offsets.reshape(*params.shape[:-1], -1, 3)
    vals = camera_to_crop(shape, params)
    out = np.zeros((*params.shape[:-1], layout.size * layout.size, 3))
    out[..., layout.flat_valid, :] = vals
    return out.reshape(*params.shape[:-1], layout.size, layout.size, 3)


def map_from_vertices(layout: DenseUVLayout, vertices: np.ndarray) -> np.ndarray:
    """The direct rasterisation: (53215, 3) crop-pixel vertices -> (S, S, 3) map (each valid texel the barycentric
    mix of its UV triangle's vertices; 0 elsewhere). The reference the precomputed bases are tested against."""
    vals = (vertices[layout.texel_vertex] * layout.texel_bary[..., None]).sum(1)
    out = np.zeros((layout.size * layout.size, 3))
    out[layout.flat_valid] = vals
    return out.reshape(layout.size, layout.size, 3)


def _support(valid: np.ndarray, xy: np.ndarray, min_count: int = 6) -> np.ndarray:
    """Flat indices of the valid texels in the smallest window (6x6, 8x8, ...) around a texel point holding at
    least ``min_count`` of them. (4x4 windows left a 64x64 map's worst read-out at 0.65 px, 6x6 at 0.21 px.)"""
    s = valid.shape[0]
    x0, y0 = int(np.floor(xy[0])), int(np.floor(xy[1]))
    for r in range(3, 8):
        ys, xs = np.mgrid[max(y0 - r + 1, 0):min(y0 + r, s - 1) + 1, max(x0 - r + 1, 0):min(x0 + r, s - 1) + 1]
        ok = valid[ys, xs]
        if ok.sum() >= min_count:
            return (ys[ok] * s + xs[ok]).ravel()
    raise ValueError(f"no valid texels near texel point {xy}")


def fit_readout(valid: np.ndarray, point_uv: np.ndarray, support_maps: Callable, ridge: float = 1e-4
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per point, weights over its support texels (summing to 1) that best reproduce the point on ground-truth
    maps: argmin_w sum_n |sum_t w_t m_nt - p_n|^2 + ridge * tr(G)/K * |w - w_idw|^2 subject to sum w = 1, where
    w_idw are inverse-distance weights (the ridge keeps the weights smooth, so a predicted map's texel noise is not
    amplified).

    support_maps(point, flat_indices) -> ((N, K, 3) map values at those texels, (N, 3) the point's true position).
    Returns (index (P, K), weight (P, K)), padded with weight 0.
    """
    s = valid.shape[0]
    supports = [_support(valid, xy) for xy in point_uv]
    kmax = max(len(t) for t in supports)
    index = np.zeros((len(point_uv), kmax), np.int64)
    weight = np.zeros((len(point_uv), kmax), np.float32)
    for p, (xy, sup) in enumerate(zip(point_uv, supports)):
        vals, target = support_maps(p, sup)
        a = (vals - target[:, None, :]).transpose(1, 0, 2).reshape(len(sup), -1)  # (K, 3N): sum w = 1 => exact
        g = a @ a.T
        dist = np.hypot(sup % s - xy[0], sup // s - xy[1])
        w0 = 1.0 / (dist + 0.5)
        w0 /= w0.sum()
        lam = ridge * np.trace(g) / len(sup)
        k = len(sup)
        kkt = np.zeros((k + 1, k + 1))
        kkt[:k, :k] = 2 * (g + lam * np.eye(k))
        kkt[:k, k] = kkt[k, :k] = 1.0
        rhs = np.concatenate([2 * lam * w0, [1.0]])
        w = np.linalg.solve(kkt, rhs)[:k]
        index[p, :k] = sup
        weight[p, :k] = w
    return index, weight


def region_weights(valid: np.ndarray, landmark_uv: np.ndarray, landmark_texels: np.ndarray) -> np.ndarray:
    """PRNet's loss mask on the layout: 16 on the 68 landmarks' texels (``landmark_texels``, flat indices), 4 inside
    the eyes, nose and mouth (UV hulls of their landmarks with a margin of S/64 texels), 3 on the rest of the face, 0
    outside it (the no-neck layout has no neck)."""
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull

    s = valid.shape[0]
    w = np.where(valid, 3.0, 0.0)
    ys, xs = np.mgrid[0:s, 0:s]
    grid = np.stack([xs.ravel(), ys.ravel()], 1)
    for group in ("eyes", "nose", "mouth"):
        idx = list(LMK68_GROUPS[group])
        for part in ([idx[:6], idx[6:]] if group == "eyes" else [idx]):
            hull = landmark_uv[part][ConvexHull(landmark_uv[part]).vertices]
            inside = MplPath(hull).contains_points(grid, radius=max(1.0, s / 64)).reshape(s, s)
            w[inside & valid] = 4.0
    flat = w.reshape(-1)
    flat[landmark_texels] = 16.0
    return (flat.reshape(s, s) * valid).astype(np.float32)


def build_dense_layout(bfm: dict[str, np.ndarray], face_model_bfm_index: np.ndarray, size: int,
                       fit_params: np.ndarray) -> DenseUVLayout:
    """The layout at ``size``: texel location on the no-neck UV triangles, symmetric valid mask, read-out of the
    face model's 468 vertices (``face_model_bfm_index``) and the 68 keypoints fitted on ``fit_params`` (N, 62)."""
    nn_idx = noneck_rows(bfm)
    tex = uv_to_texel(bfm["uv"][nn_idx], size)
    tri_id, bary = locate_texels(tex, bfm["noneck_tri"], size)
    covered = (tri_id >= 0).reshape(size, size)
    valid = covered & covered[:, ::-1]  # mirror-closed, so a flip maps valid texels onto valid texels
    flat = np.flatnonzero(valid.ravel())
    texel_vertex = nn_idx[bfm["noneck_tri"][tri_id[flat]]]
    texel_bary = bary[flat]
    kp = keypoint_rows(bfm)
    rows = np.concatenate([np.asarray(face_model_bfm_index), kp])
    point_uv = uv_to_texel(bfm["uv"][rows], size)
    partial = DenseUVLayout(size, valid, texel_vertex, texel_bary, point_uv, np.zeros((len(rows), 1), np.int64),
                            np.zeros((len(rows), 1), np.float32), np.zeros((size, size), np.float32))
    basis = texel_basis(partial, bfm)
    pos_of_flat = np.full(size * size, -1)
    pos_of_flat[flat] = np.arange(len(flat))
    fit_params = np.asarray(fit_params, np.float64)
    coefs = fit_params[:, 12:62]
    w_rows = np.concatenate([bfm["w_shp"].reshape(-1, 3, 40)[rows], bfm["w_exp"].reshape(-1, 3, 10)[rows]], -1)
    truth = camera_to_crop(bfm["mean"].reshape(-1, 3)[rows].astype(np.float64)
                           + (w_rows.reshape(-1, N_COEF).astype(np.float64) @ coefs.T).T.reshape(len(coefs), -1, 3),
                           fit_params)                                          # (N, P, 3)

    def support_maps(p: int, sup: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = pos_of_flat[sup]
        shape = basis.mean[t] + (basis.bases[t].reshape(-1, N_COEF).astype(np.float64) @ coefs.T).T.reshape(
            len(fit_params), len(t), 3)
        return camera_to_crop(shape, fit_params), truth[:, p]

    index, weight = fit_readout(valid, point_uv, support_maps)
    # the landmarks' texels: the four that carry most of each landmark's read-out (its bilinear cell, in effect)
    top = np.argsort(-np.abs(weight[-68:]), axis=1)[:, :4]
    loss_weight = region_weights(valid, point_uv[-68:], np.take_along_axis(index[-68:], top, 1).ravel())
    return DenseUVLayout(size, valid, texel_vertex, texel_bary, point_uv, index, weight, loss_weight)


def layout_metadata(layout: DenseUVLayout) -> dict[str, str]:
    """What a dense-layout ONNX file declares: the layout, the map size and the valid-texel mask (bit-packed,
    base64), so a decoder builds the dense mesh without the shared data."""
    return {LAYOUT_KEY: DENSE_LAYOUT, "map_size": str(layout.size),
            "valid_mask": base64.b64encode(np.packbits(layout.valid.ravel()).tobytes()).decode("ascii")}


def valid_mask_from_metadata(meta: dict[str, str]) -> np.ndarray:
    """The (S, S) valid-texel mask a dense-layout ONNX file declares."""
    try:
        size = int(meta["map_size"])
        bits = np.frombuffer(base64.b64decode(meta["valid_mask"]), np.uint8)
    except (KeyError, ValueError) as err:
        raise ValueError(f"dense-layout metadata incomplete or corrupt ({err}); re-export the weights") from err
    if len(bits) * 8 < size * size:
        raise ValueError(f"dense-layout valid mask holds {len(bits) * 8} bits, a {size}x{size} map needs {size * size}")
    return np.unpackbits(bits)[:size * size].reshape(size, size).astype(bool)
