"""Torch twins of engine/geometry/cpr.py (pose projection and the CPR kernels, batched), and round 2's
consistency-aware sampling of reprojection errors. Written with ONNX-exportable operations (no torch.cross,
linalg.norm or topk); the rules, shapes and conventions are cpr.py's module docstring.

Shapes: B faces, C selected vertices, layout (3, n) long (n = C/2), kernels (B, channels, n, n).
Norms of vectors that can be zero (a pair with itself) are taken as sqrt(max(|v|^2, 1e-12)), so their gradient is
0 instead of NaN there; those entries are masked to 0 in the kernels anyway.
"""
from __future__ import annotations

import torch

from engine.geometry.cpr import CENTRE, CROP, EPS_PX, KERNELS

TINY = 1e-12


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((v * v).sum(-1).clamp(min=TINY))


def euler_matrix(angles: torch.Tensor) -> torch.Tensor:
    """(..., 3) [rx, ry, rz] radians -> (..., 3, 3) R = Rz(rz) Ry(ry) Rx(rx), written out in closed form."""
    cx, cy, cz = torch.cos(angles[..., 0]), torch.cos(angles[..., 1]), torch.cos(angles[..., 2])
    sx, sy, sz = torch.sin(angles[..., 0]), torch.sin(angles[..., 1]), torch.sin(angles[..., 2])
    rows = [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx,
            sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx,
            -sy, cy * sx, cy * cx]
    return torch.stack(rows, -1).reshape(*angles.shape[:-1], 3, 3)


def pose_euler_degrees(pose: torch.Tensor) -> torch.Tensor:
    """(B, 6) poses -> (B, 3) (yaw, pitch, roll) degrees: cpr.pose_euler_degrees."""
    r = euler_matrix(pose[:, :3])
    yaw = torch.asin(r[:, 2, 0].clamp(-1.0, 1.0))
    pitch = torch.atan2(r[:, 2, 1], r[:, 2, 2])
    roll = torch.atan2(r[:, 1, 0], r[:, 0, 0])
    return torch.stack([yaw, pitch, roll], -1) * (180.0 / torch.pi)


def shape_points(mean: torch.Tensor, basis: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(N, 3) mean, (N, 3, 50) bases, (B, 50) alpha -> (B, N, 3) model-frame points."""
    return mean[None] + (basis.reshape(-1, basis.shape[-1]) @ alpha.t()).t().reshape(alpha.shape[0], -1, 3)


def project(pose: torch.Tensor, model_points: torch.Tensor, centre: torch.Tensor, scale: float | torch.Tensor
            ) -> torch.Tensor:
    """(B, 6) poses, (B, N, 3) model-frame points, frame centre (3,) and scale S -> (B, N, 3) crop pixels
    (x, y, relative z): cpr.project."""
    r = euler_matrix(pose[:, :3])
    u = (model_points - centre) @ r.transpose(1, 2)
    ss = (pose[:, 3] * scale)[:, None]
    x = CENTRE + ss * u[..., 0] + CROP * pose[:, 4:5]
    y = CENTRE - ss * u[..., 1] + CROP * pose[:, 5:6]
    return torch.stack([x, y, ss * u[..., 2]], -1)


# --------------------------------------------------------------------------------------------- the CPR kernels
# Written per coordinate on (B, 3, n) / (B, 3, n, n) tensors, with the pair differences shared between kernels
# (``ObservedPairs``): ONNX Runtime on one thread spends far more on reductions over a trailing axis of size 2 and
# on the (..., 2) broadcasts than on the arithmetic (cpr_all at C = 256: 3.0 ms that way, see the commit message).

def channel_points(points: torch.Tensor, found: torch.Tensor, layout: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, 2), (B, C), (3, n) -> ((B, 3, n, 2), (B, 3, n))."""
    return points[:, layout], found[:, layout].to(points.dtype)


def pair_mask(f: torch.Tensor) -> torch.Tensor:
    return f[..., :, None] * f[..., None, :]


class ObservedPairs:
    """Everything the kernels need from O, computed once per face (O does not change across the recurrent updates):
    per-channel coordinates, found mask, pair differences dO, lengths |dO|, the scale ratio's denominator, the
    translation's O half and cos^O. ``kernels(gen, names)`` then adds only G's share per update.

    obs (B, C, 2), found (B, C) bool or 0/1, layout (3, n) long.
    """

    def __init__(self, obs: torch.Tensor, found: torch.Tensor, layout: torch.Tensor, eps: float = EPS_PX) -> None:
        self.layout, self.eps = layout, eps
        o = obs[:, layout]                                                  # (B, 3, n, 2)
        self.f = found[:, layout].to(obs.dtype)                             # (B, 3, n)
        ox, oy = o[..., 0], o[..., 1]
        self.mask = pair_mask(self.f)                                       # (B, 3, n, n)
        self.dox = ox[..., None, :] - ox[..., :, None]                      # [i, j] = X_j - X_i
        self.doy = oy[..., None, :] - oy[..., :, None]
        self.lo = torch.sqrt((self.dox * self.dox + self.doy * self.doy).clamp(min=TINY))
        n = layout.shape[1]
        off_diag = 1.0 - torch.eye(n, dtype=obs.dtype, device=obs.device)
        self.scale_weight = self.mask * off_diag / (self.lo + eps)          # mask / (|dO| + eps), 0 on the diagonal
        self.half_mask = 0.5 * self.mask
        self.tox = (ox[..., :, None] + ox[..., None, :]) * self.half_mask   # O's half of the translation kernel
        self.toy = (oy[..., :, None] + oy[..., None, :]) * self.half_mask
        self.count = self.f.sum(-1, keepdim=True).clamp(min=1.0)
        self.cos_o = self._cosines(ox, oy)

    def _cosines(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cx = x - (x * self.f).sum(-1, keepdim=True) / self.count            # centred on the found vertices
        cy = y - (y * self.f).sum(-1, keepdim=True) / self.count
        dot = cx[..., :, None] * cx[..., None, :] + cy[..., :, None] * cy[..., None, :]
        nrm = torch.sqrt((cx * cx + cy * cy).clamp(min=TINY))
        return dot / (nrm[..., :, None] * nrm[..., None, :] + self.eps * self.eps) * self.mask

    def kernels(self, gen: torch.Tensor, names: tuple[str, ...] | list[str] = KERNELS) -> torch.Tensor:
        """(B, C, 2) G -> (B, sum of the named kernels' channels, n, n), in the order of ``names``."""
        g = gen[:, self.layout]
        gx, gy = g[..., 0], g[..., 1]
        out = []
        dgx = dgy = lg = None
        for name in names:
            if name in ("scale", "in_plane") and dgx is None:
                dgx = gx[..., None, :] - gx[..., :, None]
                dgy = gy[..., None, :] - gy[..., :, None]
                lg = torch.sqrt((dgx * dgx + dgy * dgy).clamp(min=TINY))
            if name == "translation":
                out += [self.tox - (gx[..., :, None] + gx[..., None, :]) * self.half_mask,
                        self.toy - (gy[..., :, None] + gy[..., None, :]) * self.half_mask]
            elif name == "scale":
                out.append((lg + self.eps) * self.scale_weight)
            elif name == "in_plane":
                cross = dgx * self.doy - dgy * self.dox
                out.append(cross / (lg * self.lo + self.eps * self.eps) * self.mask)
            elif name == "out_of_plane":
                out += [self.cos_o, self._cosines(gx, gy)]
            else:
                raise ValueError(f"unknown CPR kernel {name!r}; expected one of {KERNELS}")
        return torch.cat(out, 1)


def cpr_translation(obs: torch.Tensor, gen: torch.Tensor, found: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """-> (B, 6, n, n): T_x of the 3 channels, then T_y."""
    return ObservedPairs(obs, found, layout).kernels(gen, ("translation",))


def cpr_scale(obs: torch.Tensor, gen: torch.Tensor, found: torch.Tensor, layout: torch.Tensor,
              eps: float = EPS_PX) -> torch.Tensor:
    """-> (B, 3, n, n): Lambda_s^G / Lambda_s^O = (|G_i - G_j| + eps) / (|O_i - O_j| + eps)."""
    return ObservedPairs(obs, found, layout, eps).kernels(gen, ("scale",))


def cpr_in_plane(obs: torch.Tensor, gen: torch.Tensor, found: torch.Tensor, layout: torch.Tensor,
                 eps: float = EPS_PX) -> torch.Tensor:
    """-> (B, 3, n, n): signed cross product of the pair vectors d_ij = X_j - X_i of G and O, as a sine."""
    return ObservedPairs(obs, found, layout, eps).kernels(gen, ("in_plane",))


def cpr_out_of_plane(obs: torch.Tensor, gen: torch.Tensor, found: torch.Tensor, layout: torch.Tensor,
                     eps: float = EPS_PX) -> torch.Tensor:
    """-> (B, 6, n, n): triplet cosines at the channel centroid, cos^O (3 channels) then cos^G."""
    return ObservedPairs(obs, found, layout, eps).kernels(gen, ("out_of_plane",))


def cpr_all(obs: torch.Tensor, gen: torch.Tensor, found: torch.Tensor, layout: torch.Tensor) -> torch.Tensor:
    """-> (B, 18, n, n): translation (6), scale (3), in-plane (3), out-of-plane (6) (cpr.KERNELS order)."""
    return ObservedPairs(obs, found, layout).kernels(gen, KERNELS)


# --------------------------------------------------------------------------------- round 2: consistency-aware
def kappa_subset(found: torch.Tensor, kappa: float, keys: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C) found flags -> (B, C) float 0/1: the first ceil(kappa x found count) found vertices in ``keys`` order
    ((C,) or (B, C) distinct sort keys; default the vertex index, which is already a seeded shuffle of the face in
    the selection file's order, so the subset is a fixed random sample of the detected vertices). Ranks come from a
    (C x C) comparison, so the count can vary per face inside an ONNX graph (no TopK with a data-dependent k)."""
    f = found.to(torch.float32 if not found.is_floating_point() else found.dtype)
    c = f.shape[1]
    if keys is None:
        keys = torch.arange(c, device=f.device, dtype=f.dtype)
    keys = keys.to(f.dtype).expand(f.shape[0], c)
    ahead = (keys[:, None, :] < keys[:, :, None]).to(f.dtype)                  # [b, i, j]: j comes before i
    rank = (ahead * f[:, None, :]).sum(-1)                                      # found vertices ahead of i
    k = torch.ceil(kappa * f.sum(1, keepdim=True))
    return f * (rank < k).to(f.dtype)


def sample_reprojection_errors(pose: torch.Tensor, direction: torch.Tensor, shape_model_points: torch.Tensor,
                               observed: torch.Tensor, found: torch.Tensor, centre: torch.Tensor,
                               scale: float | torch.Tensor, m: int = 5, kappa: float = 0.1,
                               keys: torch.Tensor | None = None) -> torch.Tensor:
    """Round 2's evidence for beta: reprojection errors at 2M poses along the predicted update direction.

    pose (B, 6) the current estimate; direction (B, 6) the round-2 network's update (beta scales it: the new pose is
    pose + beta direction, beta in [0, 2]); shape_model_points (B, C, 3) the selected vertices of the current
    (frozen) shape, model frame; observed (B, C, 2) and found (B, C) from the DAFI.
    Samples t_k = k / M, k = 1..2M (= 0.2, 0.4, ..., 2.0 for M = 5: beta's range), and at each the mean 2D
    distance |proj(pose + t_k direction) - O| over kappa of the detected vertices (``kappa_subset``: a fixed random
    sample by default; pass random ``keys`` per batch in training to vary it). A subset chosen by the errors
    themselves (say the best-fitting 10% at t = 0) was tried and rejected: it picks the vertices the current,
    wrong pose already fits, whose error then grows along any direction, so the samples point away from the truth.
    Returns (B, 2M) errors in pixels, differentiable in pose, direction and the shape.
    """
    w = kappa_subset(found, kappa, keys).to(pose.dtype)                           # (B, C)
    steps = torch.arange(1, 2 * m + 1, dtype=pose.dtype, device=pose.device) / m  # (2M,)
    b = pose.shape[0]
    poses = (pose[:, None, :] + steps[None, :, None] * direction[:, None, :]).reshape(b * 2 * m, 6)
    pts = shape_model_points[:, None].expand(b, 2 * m, *shape_model_points.shape[1:]).reshape(
        b * 2 * m, *shape_model_points.shape[1:])
    proj = project(poses, pts, centre, scale)[..., :2].reshape(b, 2 * m, -1, 2)
    err = _norm(proj - observed[:, None])                                         # (B, 2M, C)
    return (err * w[:, None, :]).sum(-1) / w.sum(-1, keepdim=True).clamp(min=1.0)
