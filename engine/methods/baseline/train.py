"""Training recipe of `baseline`: L1 on the 468 + 68 rebuilt points (landmarks weighted up), the human 21 points
where they exist, and a small prior on the 50 coefficients. Augmentation: flip, rotation, scale/shift, colour."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from engine.facemodel import N_MESH
from engine.methods.baseline import METHOD
from engine.methods.baseline.network import ParamRegressor, centre_translation
from engine.training.augment import AugmentConfig
from engine.training.losses import human_point_loss, point_loss
from engine.training.recipe import Recipe
from engine.training.targets import TrainingSet
from engine.training.torch_facemodel import FaceModelLayer


@dataclass
class BaselineRecipe(Recipe):
    name: str = METHOD.name
    description: str = "MobileNetV1 (width 0.5) regressing the 62 face-model parameters from a 120x120 crop"
    epochs: int = 12
    batch_size: int = 128
    lr: float = 2e-3
    # light augmentation: at 12 epochs the heavily augmented task underfits (shared/data/README measurements)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        flip=0.5, rotate=15.0, scale=(0.95, 1.05), shift=0.03, occlude=0.1))
    output_names: tuple[str, ...] = METHOD.outputs
    notes: str = ("3DDFA's MobileNetV1 backbone at width 0.5 (13 depthwise-separable blocks, global average pool, "
                  "linear head to 62 normalised parameters, de-normalised inside the network). Loss: L1 on all "
                  "468 + 68 rebuilt points in crop pixels (landmarks x2) + 0.5 x L1 to AFLW's human points "
                  "where visible + 0.01 x squared normalised coefficients.")

    def build(self, train: TrainingSet) -> nn.Module:
        self.fm_layer = FaceModelLayer()
        centre = self.fm_layer.mean[:N_MESH].mean(0)
        p = centre_translation(torch.from_numpy(train.params), centre)
        self.coef_std = p[:, 12:].std(0)
        return ParamRegressor(p.mean(0), p.std(0) + 1e-8, centre)

    def loss(self, model, batch):
        params = model(batch["image"])
        pts = self.fm_layer(params)
        lp = point_loss(pts, batch["points"])
        lh = human_point_loss(pts[:, N_MESH:, :2], batch)
        prior = ((params[:, 12:] / self.coef_std) ** 2).mean()
        loss = lp + 0.5 * lh + 0.01 * prior
        return loss, {"points_px": lp.item(), "human_px": lh.item()}

    def landmarks(self, model, images):
        if not hasattr(self, "fm_layer"):
            self.fm_layer = FaceModelLayer()
        return self.fm_layer(model(images))[:, N_MESH:, :2]


RECIPE = BaselineRecipe
