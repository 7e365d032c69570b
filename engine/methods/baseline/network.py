"""MobileNetV1-style regressor (3DDFA's backbone at width 0.5, engine/training/backbones.py) for 120x120 crops ->
62 parameters."""
from __future__ import annotations

import torch
from torch import nn

from engine.training.backbones import MobileNetBackbone


def centre_translation(params: torch.Tensor, centre: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
    """Move the camera's translation to (sign=+1) or from (sign=-1) the face's centre: t' = t + sR c.

    The BFM's origin is far from the face, so the raw translation swings with rotation (std 22 px in x on the
    training set); about the face centre it is nearly the crop centre, which a network regresses far more easily.
    """
    cam = params[:, :12].reshape(-1, 3, 4)
    t = cam[:, :, 3] + sign * (cam[:, :, :3] @ centre)
    cam = torch.cat([cam[:, :, :3], t[:, :, None]], dim=2)
    return torch.cat([cam.reshape(-1, 12), params[:, 12:]], dim=1)


class ParamRegressor(nn.Module):
    """Outputs the 62 parameters: head(features) is de-normalised, then the translation moved back to the BFM
    origin, so the ONNX output is the teacher's parameterisation."""

    def __init__(self, param_mean: torch.Tensor, param_std: torch.Tensor, centre: torch.Tensor,
                 width: float = 0.5) -> None:
        super().__init__()
        self.backbone = MobileNetBackbone(width)
        self.head = nn.Linear(self.backbone.out_channels, 62)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # statistics of the centred parameterisation
        self.register_buffer("param_mean", param_mean.float())
        self.register_buffer("param_std", param_std.float())
        self.register_buffer("centre", centre.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x).mean(dim=(2, 3))
        return centre_translation(self.param_mean + self.param_std * self.head(f), self.centre, -1.0)
