"""Training recipe of `mtcnn3d`: per stage, the unweighted sum of the Euclidean task losses (Eq. 11-12): 3D
keypoints, the whole 3D shape, their 2D projection and head pose; plus the human 21-point term the other recipes
use. Stage 2 is trained on stage 1's own (detached) predictions, in the same run."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from engine.facemodel import N_MESH, load_face_model
from engine.geometry.torch_mesh import incidence_matrix
from engine.methods.mtcnn3d import METHOD
from engine.methods.mtcnn3d.network import (DROPOUT, PATCH, PATCH_COLS, PATCH_ROWS, ExportMTCNN3D, MTCNN3D,
                                            final_points, numpy_stats, project)
from engine.training.augment import AugmentConfig
from engine.training.losses import human_point_loss
from engine.training.recipe import Recipe
from engine.training.targets import TrainingSet


def centred_depth(d: torch.Tensor) -> torch.Tensor:
    """A point difference with each face's mean depth error removed: an orthographic crop fixes no absolute depth."""
    return torch.cat([d[..., :2], d[..., 2:] - d[..., 2:].mean(-2, keepdim=True)], -1)


def euclidean_loss(diff: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean norm of a (..., D) difference of corresponding points (or pose vectors), in their units."""
    return diff.norm(dim=-1).mean()


def rotation_to_euler(r: torch.Tensor) -> torch.Tensor:
    """Torch twin of engine.geometry.rotation.matrix_to_euler (away from gimbal lock): (B, 3, 3) -> (B, 3)
    (yaw, pitch, roll) degrees."""
    yaw = torch.asin(r[:, 2, 0].clamp(-1.0, 1.0))
    pitch = torch.atan2(r[:, 2, 1], r[:, 2, 2])
    roll = torch.atan2(r[:, 1, 0], r[:, 0, 0])
    return torch.rad2deg(torch.stack([yaw, pitch, roll], 1))


@torch.no_grad()
def pose_targets(points: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """(B, 3) (yaw, pitch, roll) of (B, P, 3) pixel-frame target points: the rotation of the best similarity from
    the mean shape, as engine.methods.base.pose_from_points computes it. Computed from the augmented points, so
    flips and in-plane rotations change the pose target with the image."""
    dst = points.double() * points.new_tensor([1.0, -1.0, 1.0]).double()
    src = mean.double()
    dst_c, src_c = dst - dst.mean(1, keepdim=True), src - src.mean(0)
    u, _, vt = torch.linalg.svd(dst_c.transpose(1, 2) @ src_c)
    d = torch.sign(torch.det(u @ vt))
    diag = torch.ones(len(points), 3, dtype=torch.float64)
    diag[:, 2] = d
    r = u @ torch.diag_embed(diag) @ vt
    return rotation_to_euler(r).float()


def stage_losses(out: dict[str, torch.Tensor], stage: int, batch: dict[str, torch.Tensor],
                 pose: torch.Tensor) -> dict[str, torch.Tensor]:
    kp, shape = out[f"keypoints{stage}"], out[f"shape{stage}"]
    target = batch["points"]
    target_lm = target[:, N_MESH:]
    return {
        "keypoints3d": euclidean_loss(centred_depth(kp - target_lm)),
        "shape3d": euclidean_loss(centred_depth(shape - target)),
        "align2d": euclidean_loss(project(kp) - project(target_lm)),
        "pose": euclidean_loss(out[f"pose{stage}"] - pose),
        "human": human_point_loss(project(kp), batch),
    }


@dataclass
class MTCNN3DRecipe(Recipe):
    name: str = METHOD.name
    description: str = ("MT-CNN 3D: two-stage multi-task CNN regressing the 3D face shape directly (3D keypoints -> "
                        "whole shape, 2D landmarks as their projection, head pose); stage 2 refines every task "
                        "from visibility-zeroed image patches around stage 1's landmarks")
    epochs: int = 24
    batch_size: int = 64
    lr: float = 1e-3            # Adam at 1e-3, as in the paper
    weight_decay: float = 0.0   # plain Adam (the harness uses AdamW; no decay makes it Adam)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        flip=0.5, rotate=15.0, scale=(0.95, 1.05), shift=0.03, occlude=0.1))
    output_names: tuple[str, ...] = METHOD.outputs
    notes: str = (
        f"Stage 1, Net1(I), on the 120x120 crop: four 3x3 convolutions (16, 32, 64, 96 channels; BatchNorm + ReLU; "
        f"the first with stride 2) and three 2x2 max-pools, then fully connected task sub-networks with PReLU and "
        f"dropout {DROPOUT}: shared FC 256, keypoint branch FC 128 -> the 68 3D keypoints (x, y, z crop pixels), "
        f"one FC layer from those 204 numbers to the whole 3D shape (the face model's 536 points), and a pose "
        f"branch FC 64 -> (yaw, pitch, roll) in degrees. The 2D landmarks are the projection P = [I2 0] of the 3D "
        f"keypoints (Eq. 7-8), not a separate head. Stage 2, Net2(MSIF): the same architecture with its own weights "
        f"on Modified Shape-Indexed Features: a {PATCH}x{PATCH} patch (bilinear samples one crop pixel apart) "
        f"centred on each stage-1 2D keypoint, multiplied by 0 where that keypoint is invisible by its normal on "
        f"the stage-1 shape (N_c . N_i <= 0, N_c the optical axis; N_i the area-weighted normal of the keypoint's "
        f"anchor vertex on the stage-1 mesh), the 68 patches tiled row by row into one {PATCH_ROWS * PATCH}x"
        f"{PATCH_COLS * PATCH} image. Stage 2 regresses increments of every task (keypoints, shape, pose), added "
        f"to stage 1's outputs (Eq. 5-6); its last layers start at zero. Patch extraction, the normals and the "
        f"zeroing are inside the ONNX graph. Output: the final mesh (468 points of the stage-2 shape) and the 68 "
        f"stage-2 3D keypoints as landmarks; landmark visibility v_i = N_c . N_i from the final shape is an extra "
        f"output beside the z-buffer visibility every method gets. Loss per stage, unweighted sum of Euclidean "
        f"losses (mean per-point Euclidean distance): 3D keypoints, whole 3D shape (depth compared after removing "
        f"each face's mean depth error), 2D projection of the keypoints, pose (degrees), plus the L1 distance of the "
        f"projected keypoints to AFLW's human 21 points where present (the term every recipe here uses). Stage 2 is "
        f"trained in the same run on stage 1's detached training-mode predictions (dropout active), never on "
        f"ground truth. Pose targets: rotation of the best similarity from the mean shape to the (augmented) target "
        f"points, as `pose_from_points` measures it.\n\nDeviations from the paper, with reasons: (1) the shape is "
        f"the face model's 536 points (468 Face Mesh vertices + 68 landmarks) from teacher 3DMM fits, not a dense "
        f"scan; (2) a much smaller network (first convolution strided, 16-96 channels, BatchNorm) to meet 5 ms per "
        f"face on one CPU thread for both stages and to train on 2 CPU cores; (3) Euclidean losses as mean "
        f"per-point distances (not squared) so the unweighted tasks share one pixel-like scale, pose in degrees; "
        f"(4) both stages trained jointly in one run (stage 2 on stage 1's detached predictions) instead of "
        f"stage by stage; (5) Adam (the harness's AdamW with no weight decay) at 1e-3 under the harness's shared "
        f"learning-rate schedule (warm-up, constant, cosine anneal over the last 30%) instead of a fixed rate; (6) the "
        f"human 21-point term, shared by every method of this project.")

    def build(self, train: TrainingSet) -> nn.Module:
        fm = load_face_model()
        self.mean_shape = torch.from_numpy(fm.mean.astype(np.float32))
        pts = train.points.astype(np.float64)
        shape_mean, shape_std = numpy_stats(pts)
        kp_mean, kp_std = shape_mean[N_MESH:], shape_std[N_MESH:]
        pose = pose_targets(torch.from_numpy(train.points), self.mean_shape).numpy().astype(np.float64)
        inc = incidence_matrix(fm.triangles, fm.lmk_anchor)
        t = torch.from_numpy
        return MTCNN3D(t(fm.triangles.astype(np.int64)), t(inc), N_MESH, t(kp_mean), t(kp_std), t(shape_mean),
                       t(shape_std), t(pose.mean(0)), t(np.maximum(pose.std(0), 1.0)))

    def loss(self, model, batch):
        if not hasattr(self, "mean_shape"):
            self.mean_shape = torch.from_numpy(load_face_model().mean.astype(np.float32))
        out = model(batch["image"])
        pose = pose_targets(batch["points"], self.mean_shape)
        parts, total = {}, 0.0
        for stage in (1, 2):
            ls = stage_losses(out, stage, batch, pose)
            total = total + sum(ls.values())
            parts.update({f"s{stage}_{k}": v.item() for k, v in ls.items()})
        parts["points_px"] = parts["s2_shape3d"]   # the model card's training-error column
        return total, parts

    def landmarks(self, model, images):
        return project(model(images)["keypoints2"])

    def export_module(self, model):
        return ExportMTCNN3D(model)


def stage_points(model: MTCNN3D, images: torch.Tensor, stage: int) -> torch.Tensor:
    """(B, 536, 3) a stage's final points (for tests and the ablation)."""
    return final_points(model(images, stages=stage), model.n_mesh, stage)


RECIPE = MTCNN3DRecipe
