"""What a method's training recipe is: the interface the harness (engine/training/harness.py) runs. Recipes import
this module and engine/training/losses.py, never the harness, so a method stays below the runner that trains it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from engine.training.augment import AugmentConfig
from engine.training.dataset import AlignmentDataset
from engine.training.targets import TrainingSet


@dataclass
class Recipe:
    """What a method tells the harness. Subclasses override build/loss/landmarks/export_module."""
    name: str = ""
    description: str = ""
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    output_names: tuple[str, ...] = ("params",)
    notes: str = ""  # architecture summary and deviations from the paper, for the model card
    # set by the harness: True runs the pre-issue-11 data path (per-sample targets, no prefetch, NCHW), for
    # `main.py train NAME --legacy` and the benchmark's "old" column
    legacy_data_path: bool = False
    # named ablations: field overrides trained with `main.py train NAME --ablation KEY` (never shipped)
    ablations: ClassVar[dict[str, dict[str, Any]]] = {}

    def build(self, train: TrainingSet) -> nn.Module:
        raise NotImplementedError

    def make_dataset(self, train: TrainingSet, seed: int) -> torch.utils.data.Dataset:
        return AlignmentDataset(train, self.augment, seed=seed)

    def batch_targets(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Optional hook: build (or finish) the training targets of a whole collated batch, in torch, after
        augmentation; returns the batch (it may add keys in place). The default adds nothing.

        Called by the harness once per batch, after the batch is on the training device (CUDA when present) and
        before ``loss``; it may run in the harness's prefetch thread, so it must not change the recipe's state.
        Targets built here cost one batched tensor op instead of per-sample numpy work in the data path.

        What a batch holds (AlignmentDataset): ``image`` (B, 3, 120, 120) in [-1, 1]; ``points`` (B, 536, 3)
        augmented crop pixels; ``pts21``/``mask21``; ``coefs`` (B, 50); and, to transform any other label the same
        way as the image: ``affine`` (B, 2, 3) float32, source-crop pixels -> augmented-crop pixels (x' = A[:, :2]
        @ [x, y] + A[:, 2]; depth scales by sqrt|det A[:, :2]|), ``flipped`` (B,) bool (the mirror is already in
        ``affine``; mirrored labels also need their left/right relabelling, as ``points`` got), ``index`` (B,)
        int64 rows of the TrainingSet given to ``build`` (keep what you need from it there, e.g. its params).
        ``self.legacy_data_path`` is True when the harness runs today's per-sample path (``--legacy``), for
        recipes that keep a per-sample dataset as the benchmark's reference.
        """
        return batch

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def landmarks(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) crop-pixel landmarks for validation."""
        raise NotImplementedError

    def stage_landmarks(self, model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Optional: named intermediate (B, 68, 2) predictions of a cascade (PIFA's blocks), validated each epoch
        beside the final landmarks and kept in the history as ``val_nme_stages``. Default: none."""
        return {}

    def export_module(self, model: nn.Module) -> nn.Module:
        """The module exported to ONNX: float NCHW [-1, 1] in, ``output_names`` out."""
        return model

    def move_to(self, device: torch.device) -> None:
        """Optional hook: put the tensors the recipe keeps (loss weights, face-model layers, ...) on the training
        device. The default moves every tensor and module attribute; override for anything nested deeper."""
        for key, value in list(vars(self).items()):
            if isinstance(value, (torch.Tensor, nn.Module)):
                setattr(self, key, value.to(device))
