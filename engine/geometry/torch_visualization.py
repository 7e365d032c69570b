"""Torch twins of engine/geometry/visualization.py (PIFA's visualization layer), batched and differentiable in the
camera and the vertex positions, written in plain tensor ops (scatter-add, comparisons) so the graph exports to
ONNX and runs cheaply on one CPU thread. The z-test needs ScatterElements with reduction "max": ONNX opset 18.

Differentiable: the Gaussian weights in the projected positions, the values through the frontability. Not (and
not meant to be): which vertices are pruned or hidden and which pixel a vertex is nearest to - discrete choices,
as in the paper; the bilinear shares keep the rendering continuous where a vertex crosses a pixel boundary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.geometry.projection import CROP_SIZE
from engine.geometry.torch_mesh import cross
from engine.geometry.visualization import gaussian_taps


def _scatter_max_symbolic(g, self, dim, index, src, reduce, include_self):
    """ONNX for ``scatter_reduce(..., "amax", include_self=True)``: one ScatterElements(reduction="max"). torch's
    own symbolic wraps it in an If (for rank-0 inputs) whose branch shapes disagree, and ONNX Runtime then logs a
    warning on every run."""
    from torch.onnx import symbolic_helper as sh

    if sh._get_const(reduce, "s", "reduce") != "amax" or not sh._get_const(include_self, "b", "include_self"):
        raise NotImplementedError("only scatter_reduce(amax, include_self=True) exports (the z-buffer's)")
    return g.op("ScatterElements", self, index, src, axis_i=sh._get_const(dim, "i", "dim"), reduction_s="max")


torch.onnx.register_custom_op_symbolic("aten::scatter_reduce", _scatter_max_symbolic, 18)


def frontability(m: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """(B, 2, 4) cameras, (V, 3) unit normals -> (B, V) g = max(0, (m1 x m2) . N / (|m1| |m2|))."""
    m1, m2 = m[:, 0, :3], m[:, 1, :3]
    n = cross(m1, m2) / (m1.norm(dim=1) * m2.norm(dim=1))[:, None]
    return torch.relu(torch.einsum("vk,bk->bv", normals, n))


def weak_perspective(m: torch.Tensor, points: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """(B, 2, 4) cameras, (B, V, 3) model-frame points -> (B, V, 3) crop pixels (twin of visualization.py's)."""
    m1, m2 = m[:, 0, :3], m[:, 1, :3]
    c = (size - 1) / 2.0
    u = torch.einsum("bvk,bk->bv", points, m1) + m[:, 0, 3:4]
    v = torch.einsum("bvk,bk->bv", points, m2) + m[:, 1, 3:4]
    n = cross(m1, m2)
    n1, n2 = m1.norm(dim=1), m2.norm(dim=1)
    axis = n / n.norm(dim=1, keepdim=True).clamp(min=1e-12)
    z = torch.einsum("bvk,bk->bv", points, axis) * torch.sqrt(n1 * n2)[:, None]
    return torch.stack([c + u, c - v, z], dim=-1)


def crop_to_render(xy: torch.Tensor, size: int, crop: int = CROP_SIZE) -> torch.Tensor:
    return (xy + 0.5) * (size / crop) - 0.5


def pixel_index(xy: torch.Tensor, size: int) -> torch.Tensor:
    """(B, V, 2) render pixels -> (B, V) int64 nearest-pixel index on the grid grown by one pixel each side;
    (size + 2)^2 (a spare slot) for vertices too far out to reach the grid (twin of visualization.pixel_index)."""
    pix = torch.round(xy) + 1
    inside = ((pix >= 0) & (pix <= size + 1)).all(-1)
    idx = pix[..., 1] * (size + 2) + pix[..., 0]
    return torch.where(inside, idx, torch.full_like(idx, (size + 2) ** 2)).to(torch.int64)


def front_vertices(xy: torch.Tensor, depth: torch.Tensor, keep: torch.Tensor, size: int) -> torch.Tensor:
    """(B, V) bool: kept vertices with no kept vertex nearer to the camera on their nearest pixel (z-buffer by
    scatter-max, then each vertex compares itself with its pixel's winner)."""
    idx = pixel_index(xy, size)
    low = torch.finfo(depth.dtype).min
    d = torch.where(keep, depth, torch.full_like(depth, low))
    zbuf = torch.full((depth.shape[0], (size + 2) ** 2 + 1), low, dtype=depth.dtype, device=depth.device)
    zbuf = zbuf.scatter_reduce(1, idx, d, reduce="amax", include_self=True)
    return keep & (d >= torch.gather(zbuf, 1, idx))


def splat(xy: torch.Tensor, values: torch.Tensor, depth: torch.Tensor, keep: torch.Tensor, size: int,
          sigma: float, eps: float = 1e-2) -> torch.Tensor:
    """(B, V, 2) render pixels, (B, V) values, depth, keep -> (B, 1, size, size); twin of visualization.splat:
    bilinear scatter-add of w f and w, separable Gaussian filter, ratio."""
    b = values.shape[0]
    win = front_vertices(xy.detach(), depth.detach(), keep, size).to(xy.dtype)
    x0 = torch.floor(xy.detach())
    fr = xy - x0                                                          # carries the gradient
    nums, dens, idxs = [], [], []
    for ox in (0, 1):
        for oy in (0, 1):
            w = (fr[..., 0] if ox else 1 - fr[..., 0]) * (fr[..., 1] if oy else 1 - fr[..., 1]) * win
            cx, cy = x0[..., 0] + ox, x0[..., 1] + oy
            ok = ((cx >= 0) & (cx <= size - 1) & (cy >= 0) & (cy <= size - 1)).to(xy.dtype)
            idxs.append((cy * size + cx).clamp(0, size * size - 1).to(torch.int64))
            dens.append(w * ok)
            nums.append(w * ok * values)
    idx = torch.cat(idxs, dim=1)
    acc = torch.zeros(b, 2, size * size, dtype=xy.dtype, device=xy.device).scatter_add(
        2, torch.stack([idx, idx], 1), torch.stack([torch.cat(nums, 1), torch.cat(dens, 1)], 1))
    taps = torch.as_tensor(gaussian_taps(sigma), dtype=xy.dtype, device=xy.device)
    r = (taps.numel() - 1) // 2
    acc = acc.reshape(b, 2, size, size)
    acc = F.conv2d(acc, taps.reshape(1, 1, 1, -1).expand(2, 1, 1, -1), padding=(0, r), groups=2)
    acc = F.conv2d(acc, taps.reshape(1, 1, -1, 1).expand(2, 1, -1, 1), padding=(r, 0), groups=2)
    return (acc[:, 0] / (acc[:, 1] + eps))[:, None]
