"""Rotations, Euler angles and the 3x4 scaled-orthographic camera used by the 3DMM labels.

Angles follow 3DDFA's convention on the model frame (x right, y up, z toward the camera):
R = Rz(roll) @ Ry(-yaw) @ Rx(pitch), angles in degrees in the public functions' outputs, so that
yaw = asin(R[2, 0]) as in 3DDFA's matrix2angle and the shared labels' teacher_pose.
"""
from __future__ import annotations

import numpy as np


def euler_to_matrix(yaw: float, pitch: float, roll: float, degrees: bool = True) -> np.ndarray:
    """Rotation matrix R = Rz(roll) Ry(-yaw) Rx(pitch)."""
    if degrees:
        yaw, pitch, roll = np.deg2rad([yaw, pitch, roll])
    cy, sy = np.cos(-yaw), np.sin(-yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def matrix_to_euler(r: np.ndarray, degrees: bool = True) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix`: returns (yaw, pitch, roll); gimbal lock handled at |yaw| = 90."""
    r = np.asarray(r, dtype=np.float64)
    sy = r[2, 0]
    if abs(sy) < 0.999999:
        yaw = np.arcsin(np.clip(sy, -1, 1))
        pitch = np.arctan2(r[2, 1], r[2, 2])
        roll = np.arctan2(r[1, 0], r[0, 0])
    else:  # yaw = +-90: pitch and roll share one axis; put it all in pitch
        yaw = np.pi / 2 * np.sign(sy)
        roll = 0.0
        pitch = np.arctan2(-np.sign(sy) * r[0, 1], r[1, 1])
    out = np.array([yaw, pitch, roll])
    return np.rad2deg(out) if degrees else out


def matrix_to_euler_batch(r: np.ndarray, degrees: bool = True) -> np.ndarray:
    """(B, 3) :func:`matrix_to_euler` of (B, 3, 3) rotations, gimbal lock handled per matrix alike."""
    r = np.asarray(r, dtype=np.float64)
    sy = r[:, 2, 0]
    lock = np.abs(sy) >= 0.999999
    sign = np.sign(sy)
    yaw = np.where(lock, np.pi / 2 * sign, np.arcsin(np.clip(sy, -1, 1)))
    pitch = np.where(lock, np.arctan2(-sign * r[:, 0, 1], r[:, 1, 1]), np.arctan2(r[:, 2, 1], r[:, 2, 2]))
    roll = np.where(lock, 0.0, np.arctan2(r[:, 1, 0], r[:, 0, 0]))
    out = np.stack([yaw, pitch, roll], 1)
    return np.rad2deg(out) if degrees else out


def camera_to_euler_batch(p: np.ndarray) -> np.ndarray:
    """(B, 3) :func:`camera_to_euler` of (B, 12) or (B, 3, 4) cameras: the same Gram-Schmidt, batched."""
    p = np.asarray(p, dtype=np.float64).reshape(-1, 3, 4)
    r1, r2 = p[:, 0, :3], p[:, 1, :3]
    a = r1 / np.linalg.norm(r1, axis=1, keepdims=True)
    b = r2 - a * (a * r2).sum(1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return matrix_to_euler_batch(np.stack([a, b, np.cross(a, b)], 1))


def centred_source(src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``src`` minus its mean, that difference's column sums): what ``best_rotations`` needs of a fixed source,
    computed once by callers that align many batches to the same shape (the mean face)."""
    src = np.asarray(src, np.float64)
    src_c = src - src.mean(0)
    return src_c, src_c.sum(0)


def best_rotations(src: np.ndarray, dst: np.ndarray,
                   centred: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(B, 3, 3) rotations of the best similarities taking (N, 3) ``src`` onto each of (B, N, 3) ``dst``
    (orthogonal Procrustes, reflection excluded): one batched 3x3 SVD. ``centred``: ``centred_source(src)``
    when the caller keeps it (same values; saves re-centring a fixed source on every call)."""
    src_c, src_sum = centred if centred is not None else centred_source(src)
    dst = np.asarray(dst, np.float64)
    # (dst - mean(dst))^T src_c as dst^T src_c - mean(dst) (1^T src_c): matrix products only (numpy's mean over
    # the point axis of a (B, N, 3) array is slow); 1^T src_c is zero up to rounding
    mean = (np.ones(dst.shape[1]) / dst.shape[1]) @ dst
    cov = np.swapaxes(dst, 1, 2) @ src_c - mean[:, :, None] * src_sum[None, None, :]
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    vt[:, 2] *= d[:, None]    # diag(1, 1, d) @ vt, in place (a sign flip: the same values)
    return u @ vt


def best_rotation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(3, 3) ``best_rotations`` of one (N, 3) point set onto another."""
    return best_rotations(src, np.asarray(dst, np.float64)[None])[0]


def best_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares s, R, t with dst ~ s R src + t for (N, 3) point sets (Umeyama 1991): the same Procrustes
    rotation as ``best_rotations``, with its scale and translation."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a = src - mu_s
    var = (a ** 2).sum()
    if var <= 0:
        raise ValueError("degenerate source points")
    rot = best_rotation(src, dst)
    s = float(np.trace(rot.T @ (dst - mu_d).T @ a) / var)
    return s, rot, mu_d - s * rot @ mu_s


def nearest_rotation(m: np.ndarray) -> np.ndarray:
    """The rotation nearest (Frobenius) a 3x3 matrix: its SVD projection, reflection excluded (the chordal mean of
    rotations, a matrix rebuilt from rounded entries)."""
    u, _, vt = np.linalg.svd(np.asarray(m, np.float64))
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))]) @ vt


def decompose_camera(p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Split a 3x4 scaled-orthographic camera [s R | t] into (s, R, t), R orthonormalised."""
    p = np.asarray(p, dtype=np.float64).reshape(3, 4)
    r1, r2 = p[0, :3], p[1, :3]
    s = (np.linalg.norm(r1) + np.linalg.norm(r2)) / 2.0
    # Gram-Schmidt so that a slightly non-orthogonal regressed camera still yields a rotation
    a = r1 / np.linalg.norm(r1)
    b = r2 - a * (a @ r2)
    b /= np.linalg.norm(b)
    r = np.stack([a, b, np.cross(a, b)])
    return float(s), r, p[:, 3].copy()


def camera_to_euler(p: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees of a 3x4 camera."""
    return matrix_to_euler(decompose_camera(p)[1])


def compose_camera(s: float, r: np.ndarray, t: np.ndarray) -> np.ndarray:
    return np.concatenate([s * np.asarray(r), np.asarray(t).reshape(3, 1)], axis=1)


def angle_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest absolute difference between angles in degrees."""
    d = (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0
    return np.abs(d)
