"""3DSTN's geometry in numpy: the generic face in a normalised frame, projective camera, back-projection and the
TPS re-warp that makes the model's landmarks project exactly onto the refined 2D landmarks."""
from __future__ import annotations

import numpy as np

from engine.facemodel import N_MESH, FaceModel
from engine.geometry.tps import farthest_points, tps_apply, tps_fit

N_CONTROLS = 32


def normalisation(fm: FaceModel) -> tuple[np.ndarray, float]:
    """Centre and half-width of the mean mesh: the generic face lives in [-1, 1] (x) around the origin."""
    mesh = fm.mean[:N_MESH].astype(np.float64)
    return mesh.mean(0), float(np.ptp(mesh[:, 0]) / 2)


def generic_face(fm: FaceModel) -> np.ndarray:
    centre, scale = normalisation(fm)
    return (fm.mean.astype(np.float64) - centre) / scale


def control_indices(fm: FaceModel, k: int = N_CONTROLS) -> np.ndarray:
    """Fixed TPS control points spread over the mean mesh (farthest-point sampling from the nose tip)."""
    g = generic_face(fm)[:N_MESH]
    return farthest_points(g, k, start=int(np.argmax(g[:, 2])))


def project(camera: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """(3, 4) projective camera (P[2, 3] = 1) applied to (N, 3) points -> (N, 3): x, y in crop pixels and a
    depth z = s (n . X) along the camera's viewing axis n = r1 x r2 (same pixel scale). A leading batch axis on
    both projects B faces at once."""
    # one product with the camera's 3x3 part and its translation added: [X, 1] @ P^T without building [X, 1]
    h = pts @ np.swapaxes(camera[..., :3], -1, -2) + camera[..., None, :, 3]
    xy = h[..., :2] / h[..., 2:3]
    r1, r2 = camera[..., 0, :3], -camera[..., 1, :3]  # row 1 carries the image's y flip
    n1, n2 = _norm(r1)[..., None], _norm(r2)[..., None]
    s = (n1 + n2) / 2
    n = _cross(r1 / n1, r2 / n2)
    n /= _norm(n)[..., None]
    return np.concatenate([xy, ((pts @ n[..., :, None])[..., 0] * s)[..., None]], -1)


def _norm(v: np.ndarray) -> np.ndarray:
    """Euclidean norm over the last (size-3) axis; numpy's linalg.norm costs several times more on small arrays."""
    return np.sqrt(v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1] + v[..., 2] * v[..., 2])


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a x b over the last axis, written out (np.cross costs more in axis bookkeeping than in arithmetic)."""
    return np.stack([a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1], a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2],
                     a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]], -1)


def closest_on_rays(camera: np.ndarray, xy: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """For each 2D point, the point of its back-projected ray closest to the matching 3D anchor."""
    cam = camera[..., None, :, :]                                                   # broadcast over the N points
    rows = np.stack([cam[..., 0, :] - xy[..., :1] * cam[..., 2, :],
                     cam[..., 1, :] - xy[..., 1:2] * cam[..., 2, :]], axis=-2)    # (N, 2, 4): rows . [X, 1] = 0
    m, b = rows[..., :3], -rows[..., 3]
    resid = np.einsum("...nij,...nj->...ni", m, anchors) - b
    lam = np.linalg.solve(m @ np.swapaxes(m, -1, -2), resid[..., None])[..., 0]
    return anchors - np.einsum("...nij,...ni->...nj", m, lam)


def rewarp_to_landmarks(camera: np.ndarray, shape: np.ndarray, refined_xy: np.ndarray) -> np.ndarray:
    """The 3D model regressed from refined 2D landmarks: TPS-warp ``shape`` (536, 3, normalised frame) so that
    its 68 landmarks move to the closest points on their refined landmarks' rays. Batched with a leading axis."""
    lm = shape[..., N_MESH:, :]
    targets = closest_on_rays(camera, refined_xy, lm)
    params = tps_fit(lm, targets, reg=1e-6)
    return tps_apply(shape, lm, params)
