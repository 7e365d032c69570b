"""The whole CPRFA network: HS-U-Net -> DAFI -> in-graph vertex retrieval -> round 1 (CPR, five recurrent
regressors) -> round 2 (consistency-aware pose updates) -> the face model's 536 points.

Parameters: alpha (50: 40 identity + 10 expression, the teacher labels' units) then pose [rx, ry, rz, s, tx, ty]
(engine/geometry/cpr.py's frame); initialised to alpha = 0, pose = [0, 0, 0, 1, 0, 0] (the mean face, centred, at
the median training size). The U-Net is trained first (recipe ``cprfa-dafi``) and frozen here.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.geometry import torch_cpr
from engine.methods.cprfa.geometry import Retrieval, VertexGeometry
from engine.methods.cprfa.hsunet import HSUNet, decode_head
from engine.methods.cprfa.network import N_ALPHA, ROUND1_ORDER, ROUND2_ORDER, CPRRound

INIT_POSE = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0)


class CPRFA(nn.Module):
    def __init__(self, unet: HSUNet, selection, fm_mean: np.ndarray, fm_basis: np.ndarray, step_scale: torch.Tensor,
                 rounds: int = 2, translation: str = "network", fusion: bool = False) -> None:
        """``selection``: engine.methods.cprfa.vertex_selection.VertexSelection (the C vertices, their layout, the pose
        frame, the retrieval threshold, CPR-H's 68 landmarks); ``fm_mean`` (536, 3) and ``fm_basis`` (536, 3, 50):
        the face model whose points are the output."""
        super().__init__()
        if rounds not in (1, 2):
            raise ValueError(f"CPRFA has rounds 1 and 2, not {rounds!r}")
        self.unet = unet
        for p in self.unet.parameters():   # trained by cprfa-dafi, frozen here
            p.requires_grad_(False)
        centre, scale = selection.frame.centre, float(selection.frame.scale)
        self.retrieval = Retrieval(selection.codes, selection.threshold)
        self.geometry = VertexGeometry(selection.mean, selection.basis, selection.layout, centre, scale)
        self.fusion_geometry = None
        if fusion:   # CPR-H: the 68 landmark vertices, observed by another method
            self.fusion_geometry = VertexGeometry(selection.lmk68_mean, selection.lmk68_basis,
                                                  selection.lmk68_layout, centre, scale)
        self.round1 = CPRRound(self.geometry, ROUND1_ORDER, step_scale, translation=translation,
                               fusion_geometry=self.fusion_geometry)
        self.round2 = (CPRRound(self.geometry, ROUND2_ORDER, step_scale, translation=translation, consistency=True,
                                fusion_geometry=self.fusion_geometry) if rounds == 2 else None)
        self.register_buffer("fm_mean", torch.as_tensor(np.asarray(fm_mean, np.float32)))
        self.register_buffer("fm_basis", torch.as_tensor(np.asarray(fm_basis, np.float32)))
        self.register_buffer("init", torch.tensor([0.0] * N_ALPHA + list(INIT_POSE)))

    def train(self, mode: bool = True) -> "CPRFA":
        super().train(mode)
        self.unet.eval()    # frozen: its BatchNorm keeps the statistics it was trained with
        self.geometry.random_subset = mode
        return self

    def observe(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image -> (DAFI (B, 3, H, W), foreground (B, H, W) probability, observed (B, C, 2), found (B, C))."""
        dafi, fg = decode_head(self.unet(image, all_scales=False)[-1])
        obs, found = self.retrieval(dafi, fg > 0.5)
        return dafi, fg, obs, found

    def regress(self, obs: torch.Tensor, found: torch.Tensor, obs_h: torch.Tensor | None = None,
                found_h: torch.Tensor | None = None) -> dict[str, object]:
        """Observed vertices -> both rounds' estimates (B, 56), every update's estimate and the betas."""
        params = self.init[None].expand(obs.shape[0], -1)
        p1, trail1, _ = self.round1(params, obs, found, obs_h, found_h)
        out: dict[str, object] = {"params1": p1, "trail1": trail1, "params": p1, "trail2": [], "betas": []}
        if self.round2 is not None:
            p2, trail2, betas = self.round2(p1, obs, found, obs_h, found_h)
            out.update(params=p2, trail2=trail2, betas=betas)
        return out

    def points(self, params: torch.Tensor) -> torch.Tensor:
        """(B, 536, 3) crop-pixel face-model points (468 mesh + 68 landmarks; z relative to the frame centre)."""
        x = torch_cpr.shape_points(self.fm_mean, self.fm_basis, params[:, :N_ALPHA])
        centre, scale = self.geometry.centre, self.geometry.scale
        return torch_cpr.project(params[:, N_ALPHA:], x, centre, scale)

    def forward(self, image: torch.Tensor, landmarks_h: torch.Tensor | None = None) -> dict[str, object]:
        dafi, fg, obs, found = self.observe(image)
        found_h = None
        if landmarks_h is not None:
            found_h = landmarks_h.new_ones(landmarks_h.shape[:2])
        out = self.regress(obs, found, landmarks_h, found_h)
        out.update(dafi=dafi, fg=fg, obs=obs, found=found)
        return out


class ExportCPRFA(nn.Module):
    """The ONNX graph: image (and, for CPR-H, ``landmarks`` (B, 68, 2): the other method's 68 points in the
    120-px crop's pixels, the frame the recipe trains them in) -> points (B, 536, 3), params (B, 56: alpha then
    pose), points_round1, params_round1, found (B, C) (which selected vertices the DAFI showed)."""

    def __init__(self, net: CPRFA) -> None:
        super().__init__()
        self.net = net

    @property
    def fused(self) -> bool:
        return self.net.fusion_geometry is not None

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor | None = None):
        if self.fused and landmarks is None:
            raise ValueError("the CPR-H graph needs the other method's landmarks as its second input")
        out = self.net(x, landmarks if self.fused else None)
        return (self.net.points(out["params"]), out["params"], self.net.points(out["params1"]), out["params1"],
                out["found"])
