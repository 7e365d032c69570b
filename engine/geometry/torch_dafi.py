"""Torch twin of engine/geometry/dafi.py's vertex retrieval, written to export to ONNX (opset 18): the KD-tree
becomes a dense (pixels x K) squared distance, a min over the vertices and a masked mean of pixel centres.

Same rule as ``dafi.retrieve_kdtree``: a foreground pixel goes to its nearest searched vertex if that lies strictly
within the threshold; a vertex's position is the mean of its pixels' centres. The search set is sparse (vertices
at least 2 x threshold apart, see dafi.py), so a vertex and its nearest competitor are never both within the
threshold, and the in-graph rule needs no argmin (see ``retrieve_dense``).
"""
from __future__ import annotations

import numpy as np
import torch


def pixel_centre_grid(height: int, width: int) -> torch.Tensor:
    """(H*W, 2) float32 (x, y) pixel centres, row-major."""
    ys, xs = np.mgrid[0:height, 0:width]
    return torch.from_numpy(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32))


def retrieve_dense(dafi: torch.Tensor, mask: torch.Tensor, vertex_codes: torch.Tensor, threshold: float = 0.01,
                   pixel_xy: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """In-graph vertex retrieval.

    dafi (B, 3, H, W) codes (the U-Net's channel-first output); mask (B, H, W) foreground, bool or 0/1 float;
    vertex_codes (K, 3), at least 2 x threshold apart (``dafi.check_sparse``); pixel_xy (H*W, 2) pixel centres
    (pass a registered buffer to keep it a graph constant).
    Returns (positions (B, K, 2) in pixels of the DAFI, 0 where not found; found (B, K) float 0/1).
    No gradient flows to the DAFI through the assignment (it is a selection).

    With the vertices 2 x threshold apart, a pixel within the threshold of a vertex has no other vertex within it
    (triangle inequality), so "nearest vertex, if within the threshold" is just "the vertex within the threshold":
    no min over the vertices is needed. The squared distance is one product of augmented rows,
    [x, |x|^2 + background, 1] . [-2c, 1, |c|^2], and the counts come with the sums from a ones column: three passes
    over the (pixels x K) table (about 3x faster on one CPU thread than distance + min + masks).
    """
    b, _, h, w = dafi.shape
    if pixel_xy is None:
        pixel_xy = pixel_centre_grid(h, w).to(dafi)
    x = dafi.reshape(b, 3, h * w).transpose(1, 2)                           # (B, P, 3)
    codes = vertex_codes.to(x)
    fg = (mask.reshape(b, h * w, 1) > 0).to(x.dtype)
    # background pixels pushed out of every vertex's ball by a squared distance of 4 (codes lie in [0, 1]^3)
    x_aug = torch.cat([x, (x * x).sum(-1, keepdim=True) + 4.0 * (1.0 - fg), torch.ones_like(fg)], -1)
    c_aug = torch.cat([-2.0 * codes, torch.ones_like(codes[:, :1]), (codes * codes).sum(-1, keepdim=True)], -1)
    assign = ((x_aug @ c_aug.t()) < threshold * threshold).to(x.dtype)     # (B, P, K)
    xy1 = torch.cat([pixel_xy.to(x), torch.ones_like(pixel_xy[:, :1]).to(x)], -1)   # (P, 3)
    sums = assign.transpose(1, 2) @ xy1                                     # (B, K, 3): x sum, y sum, count
    counts = sums[..., 2]
    found = (counts > 0).to(x.dtype)
    positions = sums[..., :2] / counts.clamp(min=1.0)[..., None]
    return positions, found
