"""3D thin-plate splines with U(r) = r^2 log r (the kernel 3DSTN uses), one function per axis.

f(x) = a0 + A x + sum_k w_k U(|x - c_k|); ``params`` hold, per output axis, K kernel weights then 4 affine
coefficients (a0, ax, ay, az): shape (3, K + 4).
"""
from __future__ import annotations

import numpy as np


def tps_kernel(r: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        u = r * r * np.log(r)
    return np.where(r > 1e-12, u, 0.0)


def tps_kernel_sq(d2: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """U from squared distances: r^2 log r = d2 log(d2) / 2 (no square root). U(0) = 0 exactly; below d2 = 1e-24
    the log is taken at 1e-24, so |U| < 3e-23 there (the limit as r -> 0 is 0; a masked write of exact zeros cost
    a fifth of the kernel's time). ``overwrite``: ``d2`` may be clipped in place (saves a copy of a large batch
    array)."""
    d2 = np.maximum(d2, 0.0, out=d2 if overwrite else None)
    # one new array, the log and both products in place: a batch's (B, N, K) temporaries are several MB each,
    # and every extra one costs more in page faults than in arithmetic
    u = np.maximum(d2, 1e-24)
    np.log(u, out=u)
    u *= d2
    u *= 0.5
    return u


def _squared_norms(x: np.ndarray) -> np.ndarray:
    """|x|^2 over the last (size-3) axis: the same sums as (x * x).sum(-1), several times faster in numpy."""
    return x[..., 0] * x[..., 0] + x[..., 1] * x[..., 1] + x[..., 2] * x[..., 2]


def tps_apply(points: np.ndarray, controls: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Warp (N, 3) points with a TPS on (K, 3) control points; params (3, K + 4). Leading batch axes (B, ...)
    on all three warp B shapes at once."""
    k = controls.shape[-2]
    ct = np.swapaxes(controls, -1, -2)
    # squared distances by |p|^2 + |c|^2 - 2 p.c: one matrix product instead of an (N, K, 3) array
    d2 = points @ ct
    d2 *= -2.0
    d2 += _squared_norms(points)[..., :, None]
    d2 += _squared_norms(controls)[..., None, :]
    u = tps_kernel_sq(d2, overwrite=True)                                               # (N, K)
    return (u @ np.swapaxes(params[..., :k], -1, -2) + points @ np.swapaxes(params[..., k + 1:], -1, -2)
            + params[..., None, :, k])


def tps_fit(controls: np.ndarray, targets: np.ndarray, reg: float = 0.0) -> np.ndarray:
    """The interpolating TPS taking ``controls`` (K, 3) exactly to ``targets`` (K, 3) (reg = 0).

    Solves [[U + reg I, P], [P^T, 0]] [w; a] = [y; 0] per axis, which also enforces sum w = 0 and sum w c = 0.
    A leading batch axis (B, K, 3) fits B splines in one batched solve.
    """
    if controls.ndim == 3:
        try:
            return np.swapaxes(np.linalg.solve(*_tps_system(controls, targets, reg)), -1, -2)
        except np.linalg.LinAlgError:  # one singular system: each face on its own (least squares where needed)
            return np.stack([tps_fit(c, t, reg) for c, t in zip(controls, targets)])
    a, b = _tps_system(controls, targets, reg)
    try:
        sol = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # coincident control points: the least-squares solution
        sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return sol.T  # (3, K + 4)


def _tps_system(controls: np.ndarray, targets: np.ndarray, reg: float) -> tuple[np.ndarray, np.ndarray]:
    """The interpolation system [[U + reg I, P], [P^T, 0]] and its right-hand side, leading batch axes kept."""
    k = controls.shape[-2]
    d2 = controls @ np.swapaxes(controls, -1, -2)
    d2 *= -2.0
    sq = _squared_norms(controls)
    d2 += sq[..., :, None]
    d2 += sq[..., None, :]
    u = tps_kernel_sq(d2, overwrite=True) + reg * np.eye(k)
    p = np.concatenate([np.ones(controls.shape[:-1] + (1,)), controls], axis=-1)
    a = np.zeros(controls.shape[:-2] + (k + 4, k + 4))
    a[..., :k, :k], a[..., :k, k:], a[..., k:, :k] = u, p, np.swapaxes(p, -1, -2)
    b = np.zeros(controls.shape[:-2] + (k + 4, 3))
    b[..., :k, :] = targets
    return a, b


def identity_params(k: int) -> np.ndarray:
    p = np.zeros((3, k + 4))
    p[0, k + 1] = p[1, k + 2] = p[2, k + 3] = 1.0
    return p


def farthest_points(points: np.ndarray, k: int, start: int = 0) -> np.ndarray:
    """Indices of k points spread over the set (farthest-point sampling): TPS control points."""
    idx = [start]
    d = np.linalg.norm(points - points[start], axis=1)
    for _ in range(k - 1):
        j = int(np.argmax(d))
        idx.append(j)
        d = np.minimum(d, np.linalg.norm(points - points[j], axis=1))
    return np.array(idx)
