"""torch Dataset over the training targets, with label-consistent, seeded augmentation."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from engine.facemodel import load_face_model
from engine.training.augment import AugmentConfig, augment_with_affine
from engine.training.targets import TrainingSet

# AFLW's 21 human points that coincide with one of the 68 (index in 21 -> index in 68), measured on the training
# set as the 68-point each human point lies closest to (median 2-3.5 px); ears and eye centres have no twin.
HUMAN21_TO_68 = {0: 17, 2: 21, 3: 22, 5: 26, 6: 36, 8: 39, 9: 42, 11: 45, 13: 31, 14: 30, 15: 35, 17: 60,
                 19: 54, 20: 8}
HUMAN21_FLIP = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20])
IDENTITY_AFFINE = np.eye(2, 3, dtype=np.float32)


def image_to_tensor(img_bgr: np.ndarray) -> torch.Tensor:
    """uint8 HWC BGR -> float CHW in [-1, 1] (the networks' input convention, also in ONNX)."""
    return torch.from_numpy(np.ascontiguousarray(img_bgr.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


class AlignmentDataset(Dataset):
    def __init__(self, data: TrainingSet, cfg: AugmentConfig | None, seed: int = 0) -> None:
        self.data = data
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        fm = load_face_model()
        self.perm = np.concatenate([fm.mesh_flip, fm.lmk_flip + len(fm.mesh_flip)])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One augmented sample. Besides the image and its labels, ``affine`` (2x3, crop pixels of the source crop ->
        augmented crop), ``flipped`` and ``index`` (row of the TrainingSet) let a recipe build further targets for
        the whole batch at once (Recipe.batch_targets) with exactly the image's transform."""
        img = np.asarray(self.data.images[i])
        pts = self.data.points[i]
        p21 = self.data.pts21[i]
        affine, flipped = IDENTITY_AFFINE, False
        if self.cfg is not None:
            rng = np.random.default_rng((self.seed, self.epoch, i))
            img, (pts, p21), affine, flipped = augment_with_affine(img, [pts, p21], [self.perm, HUMAN21_FLIP],
                                                                   rng, self.cfg)
        return {
            "image": image_to_tensor(img),
            "points": torch.from_numpy(np.asarray(pts, np.float32)),
            "pts21": torch.from_numpy(np.nan_to_num(np.asarray(p21, np.float32), nan=0.0)),
            "mask21": torch.from_numpy(~np.isnan(np.asarray(p21)[:, 0])),
            "coefs": torch.from_numpy(self.data.params[i, 12:62].astype(np.float32)),
            "affine": torch.from_numpy(np.asarray(affine, np.float32)),
            "flipped": torch.tensor(flipped),
            "index": torch.tensor(i, dtype=torch.int64),
        }
