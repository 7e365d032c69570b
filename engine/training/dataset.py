"""torch Dataset over the training targets, with label-consistent, seeded augmentation."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from engine.facemodel import load_face_model
from engine.training.augment import SIZE, AugmentConfig, augment_image_into, augment_with_affine, warp_point_batch
from engine.training.targets import TrainingSet

# AFLW's 21 human points that coincide with one of the 68 (index in 21 -> index in 68), the 68-point each human
# point lies closest to on the training set (median 2-3.5 px); ears and eye centres have no twin. The mouth corners
# are AFLW's lip corners, the 68 scheme's outer corners 48 and 54: mirror images of each other, as the flip
# augmentation needs (HUMAN21_FLIP swaps 17 and 19). The left corner lies a median 2.64 px from 48 and 2.32 px from
# the inner corner 60 that the map used to name, the right one 2.29 px from 54 and 2.46 px from 64; an asymmetric
# pair made a flipped sample's target another point than the unflipped one's. Recipes' human-point losses read
# this map, so it changes future training runs only (weights shipped before are unchanged).
HUMAN21_TO_68 = {0: 17, 2: 21, 3: 22, 5: 26, 6: 36, 8: 39, 9: 42, 11: 45, 13: 31, 14: 30, 15: 35, 17: 48,
                 19: 54, 20: 8}
HUMAN21_FLIP = np.array([5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20])
IDENTITY_AFFINE = np.eye(2, 3, dtype=np.float32)


def image_to_tensor(img_bgr: np.ndarray) -> torch.Tensor:
    """uint8 HWC BGR -> float CHW in [-1, 1] (the networks' input convention, also in ONNX)."""
    return torch.from_numpy(np.ascontiguousarray(img_bgr.transpose(2, 0, 1))).float().div_(127.5).sub_(1.0)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) BGR -> float (B, 3, H, W) in [-1, 1], the same values as ``image_to_tensor`` per crop, in
    one conversion; the result has channels_last strides (the NHWC bytes are not moved)."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class CollatedBatch(dict):
    """A batch that the dataset already assembled (AlignmentDataset.batch): ``collate`` passes it through."""


def collate(samples: Any) -> Any:
    """The loaders' collate_fn: a CollatedBatch as it is, a list of samples through default_collate."""
    return dict(samples) if isinstance(samples, CollatedBatch) else default_collate(samples)


class AlignmentDataset(Dataset):
    """Per-sample (``ds[i]``, today's path) or, with ``batched`` on, whole batches (``__getitems__``, the
    DataLoader's batched fetch; the loader needs ``collate`` as its collate_fn): the same draws and the same values,
    see ``batch``."""

    def __init__(self, data: TrainingSet, cfg: AugmentConfig | None, seed: int = 0) -> None:
        self.data = data
        self.cfg = cfg
        self.seed = seed
        self.epoch = 0
        self.batched = False  # set by the harness (use_batched_augmentation) for the new data path
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

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]] | CollatedBatch:
        if not self.batched:
            return [self[i] for i in indices]
        return self.batch(indices)

    def batch(self, indices: list[int]) -> CollatedBatch:
        """``default_collate([self[i] for i in indices])`` built batch-wise: the same per-sample random draws (one
        generator per (seed, epoch, index), used in the same order), the same image bytes and the same float32
        labels. Each crop is warped, colour-jittered through a per-channel table and occluded in place as uint8
        into the batch (engine/training/augment.py); the points move as one batch; the images become float once."""
        idx = np.asarray(indices, dtype=np.int64)
        n = len(idx)
        images = np.empty((n, SIZE, SIZE, 3), np.uint8)
        affine = np.repeat(IDENTITY_AFFINE[None].astype(np.float64), n, axis=0)
        flipped = np.zeros(n, bool)
        for k, i in enumerate(idx.tolist()):
            if self.cfg is None:
                images[k] = self.data.images[i]
                continue
            rng = np.random.default_rng((self.seed, self.epoch, i))
            affine[k], flipped[k] = augment_image_into(np.asarray(self.data.images[i]), images[k], rng, self.cfg)
        pts = np.asarray(self.data.points[idx], np.float32)
        p21 = np.asarray(self.data.pts21[idx], np.float32)
        if self.cfg is not None:
            pts = warp_point_batch(pts, affine, flipped, self.perm)
            p21 = warp_point_batch(p21, affine, flipped, HUMAN21_FLIP)
        return CollatedBatch(
            image=images_to_tensor(images),
            points=torch.from_numpy(pts),
            pts21=torch.from_numpy(np.nan_to_num(p21, nan=0.0)),
            mask21=torch.from_numpy(~np.isnan(p21[..., 0])),
            coefs=torch.from_numpy(np.ascontiguousarray(self.data.params[idx, 12:62], np.float32)),
            affine=torch.from_numpy(affine.astype(np.float32)),
            flipped=torch.from_numpy(flipped),
            index=torch.from_numpy(idx),
        )


def use_batched_augmentation(dataset: Dataset, on: bool) -> bool:
    """Turn batch-wise augmentation on or off for an AlignmentDataset whose samples are its own (a subclass that
    overrides ``__getitem__``, such as PRNet's per-sample reference, stays per-sample). Returns whether it is on."""
    if not isinstance(dataset, AlignmentDataset) or type(dataset).__getitem__ is not AlignmentDataset.__getitem__:
        return False
    dataset.batched = on
    return on
