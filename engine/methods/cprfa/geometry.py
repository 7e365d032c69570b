"""CPRFA's geometry wired as torch modules with their constants as buffers (so they travel into the ONNX graph):
the selected vertices (weights/cprfa_vertices.npz, engine/methods/cprfa/vertex_selection.py), the pose frame, and which
CPR kernels feed which regressor. The maths is engine/geometry/torch_cpr.py and torch_dafi.py; nothing here
re-implements it.

Kernel feeds (the paper gives each parameter group the CPR that varies with it):
  alpha <- all 18 channels (translation 6, scale 3, in-plane 3, out-of-plane 6)
  rx, ry <- out-of-plane triplet cosines (6) + in-plane (3): foreshortening, with the in-plane sines to tell a
           turn about the optical axis from a turn out of the plane
  rz <- in-plane signed cross products (3)
  s <- scale ratios Lambda^G / Lambda^O (3)
  t <- translation (6), or its mean over the found pairs (``translation_update``, the paper's shortcut)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.geometry import torch_cpr
from engine.geometry.cpr import CROP
from engine.geometry.torch_dafi import pixel_centre_grid, retrieve_dense

N_ALPHA = 50
FEEDS = {
    "alpha": ("translation", "scale", "in_plane", "out_of_plane"),
    "rxry": ("out_of_plane", "in_plane"),
    "rz": ("in_plane",),
    "s": ("scale",),
    "t": ("translation",),
}
KERNEL_CHANNELS = {"translation": 6, "scale": 3, "in_plane": 3, "out_of_plane": 6}


class VertexGeometry(nn.Module):
    """A set of model vertices (mean (C, 3), bases (C, 3, 50)) laid out (3, C/2) for the CPR kernels, in the pose
    frame (centre, scale). ``cpr`` builds a regressor's CPR matrices of observed points against the points the
    current parameters generate; the rest serves the rounds (see engine/methods/cprfa/network.CPRGeometry)."""

    def __init__(self, mean: np.ndarray, basis: np.ndarray, layout: np.ndarray, centre: np.ndarray,
                 scale: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)))
        self.register_buffer("basis", torch.as_tensor(np.asarray(basis, np.float32)))
        self.register_buffer("layout", torch.as_tensor(np.asarray(layout, np.int64)))
        self.register_buffer("centre", torch.as_tensor(np.asarray(centre, np.float32)))
        self.scale = float(scale)
        self.random_subset = False   # round 2's kappa subset: random per face in training, fixed in inference

    def matrix_size(self) -> int:
        return int(self.layout.shape[1])

    def channels(self, group: str) -> int:
        return sum(KERNEL_CHANNELS[k] for k in FEEDS[group])

    def model_points(self, params: torch.Tensor) -> torch.Tensor:
        """(B, C, 3) model-frame vertices of the shape ``params[:, :50]``."""
        return torch_cpr.shape_points(self.mean, self.basis, params[:, :N_ALPHA])

    def generated(self, params: torch.Tensor) -> torch.Tensor:
        """(B, C, 2) G: the vertices projected by the current estimate (B, 56)."""
        return torch_cpr.project(params[:, N_ALPHA:], self.model_points(params), self.centre, self.scale)[..., :2]

    def observe(self, obs: torch.Tensor, found: torch.Tensor) -> torch_cpr.ObservedPairs:
        """O's share of the kernels, once per face (torch_cpr.ObservedPairs)."""
        return torch_cpr.ObservedPairs(obs, found, self.layout)

    def cpr(self, group: str, params: torch.Tensor, observed: torch_cpr.ObservedPairs) -> torch.Tensor:
        """The group's kernels of O against G = the vertices where ``params`` put them (rebuilt at every call)."""
        return observed.kernels(self.generated(params), FEEDS[group])

    def translation_update(self, params: torch.Tensor, obs: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        """(B, 2) the mean of the translation CPR over the found pairs of all channels (= the mean displacement
        O - G of the found vertices), in t's units (crop widths)."""
        t = torch_cpr.cpr_translation(obs, self.generated(params), found, self.layout)      # (B, 6, n, n)
        f = found[:, self.layout].to(t.dtype)                                               # (B, 3, n)
        pairs = torch_cpr.pair_mask(f).sum((1, 2, 3)).clamp_min(1.0)[:, None]               # (B, 1)
        mean = torch.stack([t[:, :3].sum((1, 2, 3)), t[:, 3:].sum((1, 2, 3))], 1) / pairs
        return mean / CROP

    def reprojection_errors(self, params: torch.Tensor, update: torch.Tensor, obs: torch.Tensor,
                            found: torch.Tensor, m: int, kappa: float) -> torch.Tensor:
        keys = torch.rand(found.shape, device=found.device) if self.random_subset else None
        return torch_cpr.sample_reprojection_errors(params[:, N_ALPHA:], update[:, N_ALPHA:],
                                                    self.model_points(params), obs, found, self.centre,
                                                    self.scale, m=m, kappa=kappa, keys=keys)


class Retrieval(nn.Module):
    """DAFI -> observed positions (B, C, 2) and found flags (B, C) of the selected vertices (torch_dafi's in-graph
    retrieval, threshold from the selection file)."""

    def __init__(self, codes: np.ndarray, threshold: float, size: int = 120) -> None:
        super().__init__()
        self.register_buffer("codes", torch.as_tensor(np.asarray(codes, np.float32)))
        self.register_buffer("pixel_xy", pixel_centre_grid(size, size))
        self.threshold = float(threshold)

    def forward(self, dafi: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return retrieve_dense(dafi, mask, self.codes, self.threshold, self.pixel_xy)
