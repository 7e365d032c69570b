"""3DSTN (Bhagavatula et al., ICCV 2017) as torch layers: a CNN regresses a 3x4 projective camera (11 parameters,
P[2, 3] = 1) and 3D TPS parameters for fixed control points on the generic face; the TPS transformer warps the
generic face, the camera transformer projects it; a refinement head samples features at each projected landmark
and a per-landmark linear layer predicts its 2D offset."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.training.backbones import MobileNetBackbone

REFINE_STAGE = 6    # MobileNet blocks up to stride 8 (15x15 at 120 px)
REFINE_DIM = 32


def tps_kernel(r: torch.Tensor) -> torch.Tensor:
    return torch.where(r > 1e-6, r * r * torch.log(r.clamp(min=1e-6)), torch.zeros_like(r))


def tps_warp(points: torch.Tensor, controls: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """TPS transformer: (P, 3) points, (K, 3) controls, (B, 3, K + 4) params -> (B, P, 3)."""
    k = controls.shape[0]
    u = tps_kernel(torch.cdist(points, controls))                       # (P, K)
    aff = torch.cat([torch.ones_like(points[:, :1]), points], 1)         # (P, 4)
    return torch.einsum("pk,bak->bpa", u, params[:, :, :k]) + torch.einsum("pj,baj->bpa", aff, params[:, :, k:])


def camera_project(camera: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """Camera-projection transformer: (B, 3, 4) P, (B, N, 3) points -> (B, N, 3) x, y (pixels) and depth."""
    h = torch.einsum("bij,bnj->bni", camera[:, :, :3], pts) + camera[:, None, :, 3]
    xy = h[..., :2] / h[..., 2:3]
    r1, r2 = camera[:, 0, :3], -camera[:, 1, :3]
    s = (r1.norm(dim=1) + r2.norm(dim=1)) / 2
    n = torch.cross(F.normalize(r1, dim=1), F.normalize(r2, dim=1), dim=1)
    n = F.normalize(n, dim=1)
    z = torch.einsum("bnj,bj->bn", pts, n) * s[:, None]
    return torch.cat([xy, z[..., None]], -1)


class STN3D(nn.Module):
    def __init__(self, generic: torch.Tensor, controls: torch.Tensor, cam_mean: torch.Tensor, cam_std: torch.Tensor,
                 width: float = 0.5, tps_scale: float = 0.05) -> None:
        super().__init__()
        self.backbone = MobileNetBackbone(width)
        k = controls.shape[0]
        self.k = k
        self.head = nn.Linear(self.backbone.out_channels, 11 + 3 * (k + 4))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        c = self.backbone.features[REFINE_STAGE - 1][3].out_channels
        self.refine = nn.Sequential(nn.Conv2d(c, REFINE_DIM, 3, padding=1), nn.ReLU(inplace=True),
                                    nn.Conv2d(REFINE_DIM, REFINE_DIM, 1))
        self.lm_weight = nn.Parameter(torch.zeros(68, REFINE_DIM, 2))   # one linear layer per landmark
        self.lm_bias = nn.Parameter(torch.zeros(68, 2))
        self.register_buffer("generic", generic.float())                 # (536, 3)
        self.register_buffer("controls", controls.float())               # (K, 3)
        self.register_buffer("cam_mean", cam_mean.float())               # (11,)
        self.register_buffer("cam_std", cam_std.float())
        ident = torch.zeros(3, k + 4)
        ident[0, k + 1] = ident[1, k + 2] = ident[2, k + 3] = 1.0
        self.register_buffer("tps_identity", ident)
        self.tps_scale = tps_scale

    def forward(self, x: torch.Tensor):
        feats = self.backbone.features[:REFINE_STAGE](x)
        top = self.backbone.features[REFINE_STAGE:](feats).mean(dim=(2, 3))
        out = self.head(top)
        cam11 = self.cam_mean + self.cam_std * out[:, :11]
        camera = torch.cat([cam11, torch.ones_like(cam11[:, :1])], 1).reshape(-1, 3, 4)
        tps = self.tps_identity + self.tps_scale * out[:, 11:].reshape(-1, 3, self.k + 4)
        shape = tps_warp(self.generic, self.controls, tps)                # (B, 536, 3) normalised frame
        points = camera_project(camera, shape)                            # (B, 536, 3) crop pixels
        lm = points[:, -68:, :2]
        f = self.refine(feats)
        size = x.shape[-1]
        grid = ((lm + 0.5) / size * 2 - 1)[:, :, None, :]                 # pixel centres -> [-1, 1]
        sampled = F.grid_sample(f, grid, mode="bilinear", padding_mode="border", align_corners=False)
        sampled = sampled[..., 0].transpose(1, 2).contiguous()            # (B, 68, D); contiguous: the per-landmark
        # einsum below is a bmm over 68 that ran 10x slower on the strided view of a channels_last feature map
        refined = lm + torch.einsum("bld,ldo->blo", sampled, self.lm_weight) + self.lm_bias
        return camera, tps, shape, points, refined
