"""Training recipe ``cprfa-dafi``: CPRFA's first stage, the HS-U-Net (image -> DAFI + foreground mask).

Targets: each label's ground-truth DAFI rendered from its dense 3DMM face (engine/methods/cprfa/dafi_targets.py,
cached once), moved with the image's augmentation affine in ``batch_targets``. Augmentation: the paper's rotation,
translation and scale (plus the harness's colour jitter), no mirror, no synthetic occluder. The reference split
(every 20th crop) is held out, so the U-Net's predictions on it are realistic (CPR input corruption, vertex p2).
Validation each epoch: the DAFI's own 68-point NME on aflw2000_dev (``dafi_landmarks``: each landmark vertex's code
searched in the predicted DAFI, the position of the nearest foreground pixel in code space).

``python main.py train cprfa-dafi`` ships weights/cprfa-dafi.pt (+ an ONNX of the U-Net alone, not a method: the
``cprfa`` method's graph is exported by the ``cprfa`` recipe, which embeds these weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from engine.methods.cprfa.dafi_targets import augmented_dafi, cached_dafis, dafi_tensor, training_rows
from engine.methods.cprfa.hsunet import DEFAULT_WIDTHS, HSUNet, decode_head, hierarchical_loss
from engine.methods.cprfa.unet_stage import dafi_landmarks, landmark_codes, load_unet
from engine.training.augment import AugmentConfig
from engine.training.dataset import AlignmentDataset
from engine.training.recipe import Recipe
from engine.training.targets import TrainingSet

# The paper's augmentation: in-plane rotation, translation, scale (image and DAFI alike); colour jitter is the
# harness's. No flip (see dafi_targets), no occluder (the DAFI of an occluded face is not defined by the label).
DAFI_AUGMENT = AugmentConfig(flip=0.0, rotate=30.0, scale=(0.9, 1.1), shift=0.06, occlude=0.0)


class RowsDataset(Dataset):
    """``base`` restricted to ``rows`` (its items keep their own ``index``, the TrainingSet row)."""

    def __init__(self, base: AlignmentDataset, rows: np.ndarray) -> None:
        self.base, self.rows = base, np.asarray(rows)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return self.base[int(self.rows[i])]


class DafiExport(nn.Module):
    """The U-Net alone as ONNX (for inspection and timing): image -> dafi (B, 3, 120, 120), mask (B, 120, 120)."""

    def __init__(self, net: HSUNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net.dafi(x)


@dataclass
class DafiRecipe(Recipe):
    name: str = "cprfa-dafi"
    description: str = ("CPRFA stage 1: HS-U-Net regressing the densely annotated face image (normalised mean-shape "
                        "x, y, z per pixel) and the face mask, supervised at three scales")
    epochs: int = 20
    batch_size: int = 32
    lr: float = 2e-3
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(**DAFI_AUGMENT.__dict__))
    output_names: tuple[str, ...] = ("dafi", "mask")
    widths: tuple[int, int, int, int] = DEFAULT_WIDTHS
    mask_weight: float = 1.0
    notes: str = (
        "HS-U-Net: four encoder levels (120, 60, 30, 15 px; two 3x3 conv + BatchNorm + ReLU each, stride 2 into "
        "levels 2-4), three decoder levels (bilinear x2, skip concatenation, two 3x3 convolutions) with a 1x1 head "
        "each (3 DAFI channels through a sigmoid + 1 mask logit) at 30, 60 and 120 px. Loss at each scale: L1 of "
        "the DAFI over foreground pixels + binary cross-entropy of the mask; coarser targets are the foreground "
        "average of the 120 px DAFI and the foreground fraction. Targets rendered from each label's dense BFM "
        "no-neck face (z-buffer, barycentric codes), moved with the image's rotation/translation/scale.")

    def build(self, train: TrainingSet) -> nn.Module:
        self.dafi_u8 = cached_dafis(train.params, log=print)
        self.codes = torch.from_numpy(landmark_codes()).float()
        return HSUNet(self.widths)

    def make_dataset(self, train: TrainingSet, seed: int):
        return RowsDataset(AlignmentDataset(train, self.augment, seed=seed), training_rows(len(train)))

    def batch_targets(self, batch):
        dafi, mask = augmented_dafi(self.dafi_u8, batch)
        dev = batch["image"].device
        batch["dafi"], batch["dafi_mask"] = dafi.to(dev), mask.to(dev)
        return batch

    def loss(self, model, batch):
        heads = model(batch["image"])
        total, parts = hierarchical_loss(heads, batch["dafi"], batch["dafi_mask"], self.mask_weight)
        return total, parts

    def landmarks(self, model, images):
        dafi, fg = decode_head(model(images, all_scales=False)[-1])
        return dafi_landmarks(dafi, fg, self.codes.to(dafi.device))

    def export_module(self, model):
        return DafiExport(model)


RECIPE = DafiRecipe


@torch.no_grad()
def predict_reference(out: str, batch: int = 32) -> None:
    """The trained HS-U-Net's DAFIs on the held-out reference split, for re-measuring the vertex selection's p2 on
    predicted DAFIs (``python -m engine.methods.cprfa.vertex_selection --predicted OUT``): npz with rows (N,), dafi
    (N, 120, 120, 3) float16, mask (N, 120, 120) bool. Also prints the error model the ``cprfa`` recipe will fit."""
    from pathlib import Path

    from engine.methods.cprfa.corruption import measure_errors
    from engine.methods.cprfa.dafi_targets import reference_rows
    from engine.training.dataset import image_to_tensor
    from engine.training.targets import load_training_set

    unet, trained = load_unet()
    if not trained:
        raise FileNotFoundError("weights/cprfa-dafi.pt is missing or an unfinished run: train the HS-U-Net first "
                                "(main.py train cprfa-dafi [--resume])")
    unet.eval()
    ts = load_training_set()
    rows = reference_rows(len(ts))
    gt = cached_dafis(ts.params, log=print)
    dafis, fgs = [], []
    for s in range(0, len(rows), batch):
        x = torch.stack([image_to_tensor(np.asarray(ts.images[i])) for i in rows[s:s + batch]])
        d, f = unet.dafi(x)
        dafis.append(d), fgs.append(f)
    dafi, fg = torch.cat(dafis), torch.cat(fgs)
    gt_dafi, gt_mask = dafi_tensor(np.asarray(gt[rows]))
    print(f"[cprfa-dafi] held-out error model on {len(rows)} reference crops: "
          f"{measure_errors(dafi, fg, gt_dafi, gt_mask).as_dict()}")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, rows=rows, dafi=dafi.permute(0, 2, 3, 1).numpy().astype(np.float16),
             mask=(fg > 0.5).numpy())
    print(f"[cprfa-dafi] wrote {path}")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="HS-U-Net predictions on the held-out reference split")
    ap.add_argument("--predict-reference", default="runs/cprfa/reference_predictions.npz", metavar="OUT")
    predict_reference(ap.parse_args().predict_reference)
