"""The losses several recipes share (they import them from here, not from one another's recipe)."""
from __future__ import annotations

import torch

from engine.facemodel import N_MESH
from engine.training.dataset import HUMAN21_TO_68

H21 = torch.tensor(list(HUMAN21_TO_68.keys()))
H68 = torch.tensor(list(HUMAN21_TO_68.values()))


def human_point_loss(lm2d: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance from the predicted 68 points to the human 21 points that share a definition."""
    mask = batch["mask21"][:, H21].float()
    d = (lm2d[:, H68] - batch["pts21"][:, H21]).abs().sum(-1)
    return (d * mask).sum() / mask.sum().clamp(min=1.0)


def point_loss(pred: torch.Tensor, target: torch.Tensor, lmk_weight: float = 2.0) -> torch.Tensor:
    """L1 over the 536 points in pixels (x, y, z), the 68 landmarks weighted ``lmk_weight`` times.

    Depth is compared after removing each face's mean z: an orthographic crop says nothing about absolute depth.
    """
    d = pred - target
    d = torch.cat([d[..., :2], d[..., 2:] - d[..., 2:].mean(1, keepdim=True)], dim=-1)
    err = d.abs().sum(-1)
    w = torch.ones(err.shape[1], device=err.device)
    w[N_MESH:] = lmk_weight
    return (err * w).sum(1).mean() / w.sum()
