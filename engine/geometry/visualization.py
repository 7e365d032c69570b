"""PIFA's visualization of a 3D fit (Jourabloo et al., ICCV 2017, Eq. 8-11), numpy reference.

A weak-perspective camera M (2x4, rows m1 and m2: scaled rotation | translation) maps model-frame points (x right,
y up, z toward the camera) to image coordinates centred on the crop with v up; crop pixels are then x = c + u,
y = c - v with c = (size - 1) / 2. Each vertex carries a value; the rendering is, per output pixel, the Gaussian-
weighted average of the values of the vertices that project near it. Vertices facing away (frontability 0) are
pruned, and where several vertices land on one pixel only the nearest to the camera renders.

The torch twin (engine/geometry/torch_visualization.py) is the differentiable layer the PIFA network uses; tests
check the two agree in value and that the twin's gradient matches finite differences of this one.
"""
from __future__ import annotations

import numpy as np

from engine.geometry.projection import CROP_SIZE


def view_axis(m: np.ndarray) -> np.ndarray:
    """Unit direction toward the camera in the model frame, (m1 x m2) / |m1 x m2|."""
    n = np.cross(m[0, :3], m[1, :3])
    return n / max(float(np.linalg.norm(n)), 1e-12)


def frontability(m: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Eq. 8: g = max(0, (m1 x m2) . N / (|m1| |m2|)) for (V, 3) model-frame unit normals; (V,)."""
    m = np.asarray(m, np.float64)
    n = np.cross(m[0, :3], m[1, :3])
    return np.maximum(0.0, normals @ n / (np.linalg.norm(m[0, :3]) * np.linalg.norm(m[1, :3])))


def weak_perspective(m: np.ndarray, points: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(V, 3) model-frame points -> (V, 3) crop pixels: x, y from M; z toward the camera along m1 x m2, scaled by
    the camera's mean scale so depth shares the pixel scale."""
    m = np.asarray(m, np.float64)
    p = np.asarray(points, np.float64)
    c = (size - 1) / 2.0
    u = p @ m[0, :3] + m[0, 3]
    v = p @ m[1, :3] + m[1, 3]
    scale = np.sqrt(np.linalg.norm(m[0, :3]) * np.linalg.norm(m[1, :3]))
    return np.stack([c + u, c - v, (p @ view_axis(m)) * scale], axis=1)


def nose_mask(shape: np.ndarray, nose: int, sigma: float) -> np.ndarray:
    """The paper's mask: a Gaussian of each vertex's 3D distance to the nose tip, normalised to zero mean and unit
    standard deviation over the vertices (so the contour is negative and the centre of the face positive)."""
    d2 = ((np.asarray(shape, np.float64) - shape[nose]) ** 2).sum(1)
    a = np.exp(-d2 / (2.0 * sigma ** 2))
    return (a - a.mean()) / a.std()


def crop_to_render(xy: np.ndarray, size: int, crop: int = CROP_SIZE) -> np.ndarray:
    """Crop pixels -> pixels of a size x size rendering of the same crop (pixel centres at integers in both)."""
    return (np.asarray(xy, np.float64) + 0.5) * (size / crop) - 0.5


def gaussian_taps(sigma: float) -> np.ndarray:
    """1D Gaussian exp(-o^2 / 2 sigma^2) at integer offsets |o| <= ceil(3 sigma) (not normalised: the rendering
    divides by the summed weights)."""
    r = int(np.ceil(3.0 * sigma))
    o = np.arange(-r, r + 1, dtype=np.float64)
    return np.exp(-o ** 2 / (2.0 * sigma ** 2))


def pixel_index(xy: np.ndarray, size: int) -> np.ndarray:
    """(V,) index of each vertex's nearest pixel on the grid grown by one pixel each side ((size + 2)^2 cells: a
    vertex just off the grid still reaches it through its bilinear shares); (size + 2)^2 for vertices farther out,
    which cannot reach the grid."""
    pix = np.round(np.asarray(xy, np.float64)).astype(np.int64) + 1
    inside = (pix >= 0).all(1) & (pix <= size + 1).all(1)
    return np.where(inside, pix[:, 1] * (size + 2) + pix[:, 0], (size + 2) ** 2)


def front_vertices(xy: np.ndarray, depth: np.ndarray, keep: np.ndarray, size: int) -> np.ndarray:
    """(V,) bool: kept vertices with no kept vertex nearer to the camera on the same (nearest) pixel.
    Equal depths on one pixel both stay."""
    idx = pixel_index(xy, size)
    d = np.where(keep, depth, -np.inf)
    zbuf = np.full((size + 2) ** 2 + 1, -np.inf)
    np.maximum.at(zbuf, idx, d)
    return keep & (d >= zbuf[idx])


def splat(xy: np.ndarray, values: np.ndarray, depth: np.ndarray, keep: np.ndarray, size: int, sigma: float,
          eps: float = 1e-2) -> np.ndarray:
    """Eq. 9-11 on a size x size grid: V(u, v) = sum_q w_q f_q / (sum_q w_q + eps) over the front vertices q,
    w_q the vertex's Gaussian footprint at the pixel: its bilinear shares of the four grid points around it, each
    spread by the Gaussian taps (a smooth bump of width ~sigma that moves continuously with the vertex; it reaches
    ceil(3 sigma) + 1 pixels).

    ``xy`` (V, 2) are render pixels. Computed as the renderer does it: bilinear splat of w f and w onto the grid,
    then a separable Gaussian filter (zero outside the grid). ``eps`` fades pixels far from every vertex to 0 (the
    mask's mean) instead of dividing 0 by 0.
    """
    xy = np.asarray(xy, np.float64)
    win = front_vertices(xy, np.asarray(depth, np.float64), np.asarray(keep, bool), size)
    acc = np.zeros((2, size, size))
    x, f = xy[win], np.asarray(values, np.float64)[win]
    x0 = np.floor(x)
    fr = x - x0
    for ox in (0, 1):
        for oy in (0, 1):
            w = (fr[:, 0] if ox else 1 - fr[:, 0]) * (fr[:, 1] if oy else 1 - fr[:, 1])
            cx, cy = x0[:, 0].astype(np.int64) + ox, x0[:, 1].astype(np.int64) + oy
            ok = (cx >= 0) & (cx < size) & (cy >= 0) & (cy < size)
            np.add.at(acc[0], (cy[ok], cx[ok]), (w * f)[ok])
            np.add.at(acc[1], (cy[ok], cx[ok]), w[ok])
    taps = gaussian_taps(sigma)
    r = (len(taps) - 1) // 2
    pad = np.pad(acc, ((0, 0), (r, r), (r, r)))
    acc = sum(taps[k] * pad[:, :, k:k + size] for k in range(2 * r + 1))          # along x
    acc = sum(taps[k] * acc[:, k:k + size, :] for k in range(2 * r + 1))          # along y
    return acc[0] / (acc[1] + eps)
