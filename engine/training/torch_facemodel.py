"""The face model as a torch module: 62 parameters -> 536 crop-pixel points, differentiable."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from engine.facemodel import FaceModel, load_face_model


class FaceModelLayer(nn.Module):
    def __init__(self, fm: FaceModel | None = None, size: int = 120) -> None:
        super().__init__()
        fm = fm or load_face_model()
        self.register_buffer("mean", torch.from_numpy(fm.mean.astype(np.float32)))
        self.register_buffer("basis", torch.from_numpy(
            np.concatenate([fm.w_shape, fm.w_exp], axis=2).astype(np.float32)))  # (P, 3, 50)
        self.size = size

    def shape(self, coefs: torch.Tensor) -> torch.Tensor:
        """(B, 50) coefficients -> (B, P, 3) model-frame points."""
        return self.mean[None] + torch.einsum("pkc,bc->bpk", self.basis, coefs)

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        """(B, 62) -> (B, P, 3) crop pixels (x right, y down, z toward the camera)."""
        cam = params[:, :12].reshape(-1, 3, 4)
        v = torch.einsum("bpk,bck->bpc", self.shape(params[:, 12:62]), cam[:, :, :3]) + cam[:, None, :, 3]
        sign = v.new_tensor([1.0, -1.0, 1.0])
        offset = v.new_tensor([-1.0, float(self.size), 0.0])
        return v * sign + offset
