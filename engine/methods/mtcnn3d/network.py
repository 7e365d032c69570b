"""MT-CNN 3D (Zhang et al.): a two-stage multi-task CNN that regresses the 3D face shape directly, as torch layers.

Stage 1, Net1(I): four convolutions and three max-pools of shared features, then fully connected task
sub-networks with PReLU and dropout: 68 3D keypoints, a fully connected layer from them to the whole 3D shape (the
face model's 536 points), and head pose. The 2D landmarks are the projection P = [I2 0] of the 3D keypoints.
Stage 2, Net2(MSIF): the same architecture with its own weights, on Modified Shape-Indexed Features (image
patches around the stage-1 2D keypoints, zeroed where the keypoint faces away from the camera on the stage-1
shape); it regresses increments of every task, added to stage 1's outputs.

All coordinates are crop pixels (x right, y down, z toward the camera); pose is (yaw, pitch, roll) in degrees.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.geometry.torch_mesh import selected_vertex_normals

N_KEYPOINTS = 68
PATCH = 16                      # MSIF patch side in samples, one crop pixel apart
PATCH_ROWS, PATCH_COLS = 8, 9   # the 68 patches tiled row by row into an 8 x 9 grid (4 empty slots)
CONV_CHANNELS = (16, 32, 64, 96)
FC_SHARED = 256
FC_TASK = 128
DROPOUT = 0.2


def project(points3d: torch.Tensor) -> torch.Tensor:
    """The paper's projection P = [I2 0] (Eq. 7-8): 3D keypoints -> 2D landmarks."""
    return points3d[..., :2]


def conv_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StageNet(nn.Module):
    """One stage: four convolutions + three max-pools, then the FC task sub-networks.

    Returns raw (normalised) outputs: keypoints (B, 68, 3), shape (B, P, 3) from an FC layer on those keypoints,
    pose (B, 3). ``in_hw`` fixes the flattened feature size of the first FC layer.
    """

    def __init__(self, in_hw: tuple[int, int], n_points: int, zero_init: bool = False) -> None:
        super().__init__()
        c1, c2, c3, c4 = CONV_CHANNELS
        # first convolution strided: the paper's network ran at full resolution on a 3.4 GHz CPU in 32 ms; this one
        # must fit both stages in 5 ms on one thread
        self.features = nn.Sequential(
            conv_block(3, c1, stride=2), nn.MaxPool2d(2),
            conv_block(c1, c2), nn.MaxPool2d(2),
            conv_block(c2, c3), nn.MaxPool2d(2),
            conv_block(c3, c4),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, 3, *in_hw)).numel()
        self.shared = nn.Sequential(nn.Flatten(), nn.Linear(flat, FC_SHARED), nn.PReLU(FC_SHARED), nn.Dropout(DROPOUT))
        self.keypoint_head = nn.Sequential(nn.Linear(FC_SHARED, FC_TASK), nn.PReLU(FC_TASK), nn.Dropout(DROPOUT),
                                           nn.Linear(FC_TASK, N_KEYPOINTS * 3))
        self.shape_fc = nn.Linear(N_KEYPOINTS * 3, n_points * 3)      # 3D keypoints -> the whole 3D shape
        self.pose_head = nn.Sequential(nn.Linear(FC_SHARED, FC_TASK // 2), nn.PReLU(FC_TASK // 2),
                                       nn.Dropout(DROPOUT), nn.Linear(FC_TASK // 2, 3))
        self.n_points = n_points
        if zero_init:  # stage 2 starts as the identity refinement (zero increments)
            for lin in (self.keypoint_head[-1], self.pose_head[-1], self.shape_fc):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.shared(self.features(x))
        kp = self.keypoint_head(f)
        shape = self.shape_fc(kp)
        return kp.view(-1, N_KEYPOINTS, 3), shape.view(-1, self.n_points, 3), self.pose_head(f)


def patch_offsets(patch: int = PATCH) -> torch.Tensor:
    """(patch,) sample offsets in pixels, centred on the keypoint (pixel centres at integer coordinates)."""
    return torch.arange(patch, dtype=torch.float32) - (patch - 1) / 2.0


def msif(image: torch.Tensor, keypoints2d: torch.Tensor, visible: torch.Tensor, patch: int = PATCH,
         rows: int = PATCH_ROWS, cols: int = PATCH_COLS) -> torch.Tensor:
    """Modified Shape-Indexed Features: a ``patch`` x ``patch`` bilinear patch of ``image`` (B, 3, H, W) centred on
    each 2D keypoint (B, K, 2), multiplied by ``visible`` (B, K) (0 zeroes an invisible keypoint's patch), tiled
    row by row into one (B, 3, rows * patch, cols * patch) image. Outside the image samples are 0.
    """
    b, c, h, w = image.shape
    k = keypoints2d.shape[1]
    off = patch_offsets(patch).to(image)
    xs = keypoints2d[:, :, 0:1] + off                       # (B, K, patch)
    ys = keypoints2d[:, :, 1:2] + off
    gx = ((xs + 0.5) / w * 2 - 1)[:, :, None, :].expand(b, k, patch, patch)
    gy = ((ys + 0.5) / h * 2 - 1)[:, :, :, None].expand(b, k, patch, patch)
    grid = torch.stack([gx, gy], -1).reshape(b, k * patch, patch, 2)
    p = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    p = p.reshape(b, c, k, patch, patch) * visible[:, None, :, None, None]
    p = torch.cat([p, p.new_zeros(b, c, rows * cols - k, patch, patch)], 2)
    p = p.reshape(b, c, rows, cols, patch, patch).permute(0, 1, 2, 4, 3, 5)
    return p.reshape(b, c, rows * patch, cols * patch)


class MTCNN3D(nn.Module):
    """Both stages. ``forward`` returns a dict of crop-pixel tensors:

    keypoints1/2 (B, 68, 3), shape1/2 (B, 536, 3), pose1/2 (B, 3), msif_visible (B, 68) (the stage-1 normal test
    that zeroed the patches), normal_visibility (B, 68) (v_i = N_c . N_i on the final shape).
    """

    def __init__(self, tris: torch.Tensor, incidence: torch.Tensor, n_mesh: int,
                 kp_mean: torch.Tensor, kp_std: torch.Tensor, shape_mean: torch.Tensor, shape_std: torch.Tensor,
                 pose_mean: torch.Tensor, pose_std: torch.Tensor, size: int = 120) -> None:
        super().__init__()
        n_points = shape_mean.shape[0]
        self.stage1 = StageNet((size, size), n_points)
        self.stage2 = StageNet((PATCH_ROWS * PATCH, PATCH_COLS * PATCH), n_points, zero_init=True)
        self.n_mesh = n_mesh
        self.register_buffer("tris", tris.long())                 # (T, 3) mesh triangles
        self.register_buffer("incidence", incidence.float())      # (68, T): triangles around each keypoint's anchor
        # outputs are regressed normalised by the training set's statistics, so every head starts near the mean
        for name, t in (("kp_mean", kp_mean), ("kp_std", kp_std), ("shape_mean", shape_mean),
                        ("shape_std", shape_std), ("pose_mean", pose_mean), ("pose_std", pose_std)):
            self.register_buffer(name, t.float())

    def keypoint_normals_z(self, shape: torch.Tensor) -> torch.Tensor:
        """N_c . N_i for each keypoint: z of its anchor vertex's unit normal on ``shape``'s mesh (N_c = +z)."""
        return selected_vertex_normals(shape[:, :self.n_mesh], self.tris, self.incidence)[..., 2]

    def forward(self, x: torch.Tensor, stages: int = 2) -> dict[str, torch.Tensor]:
        kp_raw, shape_raw, pose_raw = self.stage1(x)
        kp1 = self.kp_mean + self.kp_std * kp_raw
        shape1 = self.shape_mean + self.shape_std * shape_raw
        pose1 = self.pose_mean + self.pose_std * pose_raw
        out = {"keypoints1": kp1, "shape1": shape1, "pose1": pose1}
        if stages == 1:
            out["normal_visibility"] = self.keypoint_normals_z(shape1)
            return out
        # stage 2 sees stage 1's prediction as given (detached): it learns to correct it, stage 1 is not pulled
        kp1_d, shape1_d, pose1_d = kp1.detach(), shape1.detach(), pose1.detach()
        visible = (self.keypoint_normals_z(shape1_d) > 0).to(x.dtype)
        patches = msif(x, project(kp1_d), visible)
        dkp, dshape, dpose = self.stage2(patches)
        kp2 = kp1_d + self.kp_std * dkp
        shape2 = shape1_d + self.shape_std * dshape
        pose2 = pose1_d + self.pose_std * dpose
        out.update(keypoints2=kp2, shape2=shape2, pose2=pose2, msif_visible=visible,
                   normal_visibility=self.keypoint_normals_z(shape2))
        return out


def final_points(out: dict[str, torch.Tensor], n_mesh: int, stage: int = 2) -> torch.Tensor:
    """(B, 536, 3): the stage's mesh from its shape output, its landmarks from its 3D keypoints."""
    return torch.cat([out[f"shape{stage}"][:, :n_mesh], out[f"keypoints{stage}"]], 1)


class ExportMTCNN3D(nn.Module):
    """The ONNX graph: both stages, patch extraction and visibility zeroing included. Outputs, in the order of
    engine.methods.mtcnn3d.OUTPUTS: final points, pose, normal visibility, stage-1 points, stage-1 pose."""

    def __init__(self, net: MTCNN3D) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        out = self.net(x)
        n = self.net.n_mesh
        return (final_points(out, n, 2), out["pose2"], out["normal_visibility"], final_points(out, n, 1),
                out["pose1"])


def numpy_stats(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-coordinate mean and std of (N, P, 3) crop-pixel points, std floored at 1 px."""
    return points.mean(0), np.maximum(points.std(0), 1.0)
