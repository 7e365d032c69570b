"""PIFA (Jourabloo, Ye, Liu, Ren: "Pose-Invariant Face Alignment with a Single CNN", ICCV 2017) as torch modules.

P = {M, p}: M the 2x4 weak-perspective camera (rows m1, m2 = scaled rotation | translation, image coordinates
centred on the crop, v up) and p the face model's 40 identity + 10 expression coefficients, each divided by its
training-set standard deviation; 58 entries. The model frame is the face model's, moved to the mean mesh's centre
and measured in mean-face widths, so m1, m2 are in pixels per face width and the translation is the face centre.

Six visualization blocks with their own weights. Block k renders the current P^(k-1) (the visualization layer,
Eq. 8-11, engine/geometry/torch_visualization.py), convolves the input image at its resolution, the previous
block's features and that rendering, and regresses dP^k through two fully connected layers; P^k = P^(k-1) + dP^k.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.facemodel import N_MESH, FaceModel
from engine.geometry.mesh import vertex_normals
from engine.geometry.projection import CROP_SIZE
from engine.geometry.torch_visualization import crop_to_render, frontability, splat, weak_perspective
from engine.geometry.visualization import nose_mask

N_CAMERA = 8
N_COEF = 50
N_P = N_CAMERA + N_COEF
NOSE_TIP = N_MESH + 30          # landmark 31 of the 68 (1-based): the nose tip

# The paper's Table 1: filters of the two convolutions in each block.
PAPER_FILTERS = ((12, 16), (20, 24), (28, 32), (36, 40), (40, 40), (40, 40))


@dataclass(frozen=True)
class VisualizationConfig:
    """The visualization layer's free choices (the paper leaves them open). Lengths in 120-crop pixels."""
    sigma: float = 2.0           # Gaussian width of a vertex's footprint (its reach: ceil(3 sigma) + 1 render px)
    mask_sigma: float = 0.3      # width of the nose-centred mask, in mean-face widths
    eps: float = 1e-2            # fades pixels far from every vertex to 0 (the mask's mean)


def face_frame(fm: FaceModel) -> tuple[np.ndarray, float]:
    """(centre, unit) of PIFA's model frame: the mean mesh's centre and the mean mesh's width (model units)."""
    mesh = fm.mean[:N_MESH].astype(np.float64)
    return mesh.mean(0), float(np.ptp(mesh[:, 0]))


def mean_normals(fm: FaceModel) -> np.ndarray:
    """(536, 3) unit outward normals of the mean shape in the model frame (y up); each landmark borrows its
    anchor vertex's normal (the landmarks are not mesh vertices)."""
    flip = np.array([1.0, -1.0, 1.0])
    n = vertex_normals(fm.mean[:N_MESH].astype(np.float64) * flip, fm.triangles) * flip   # pixel frame and back
    return np.concatenate([n, n[fm.lmk_anchor]]).astype(np.float32)


class VisualizationLayer(nn.Module):
    """P (B, 58) -> the 536 points and the visualization of the face at any resolution; differentiable in M and p.

    Each vertex carries g * a: g its frontability under M (Eq. 8, from the mean shape's normals N0) and a the
    nose-centred mask. Rendering: engine.geometry.torch_visualization.splat (Eq. 9-11)."""

    def __init__(self, fm: FaceModel, coef_std: np.ndarray, cfg: VisualizationConfig = VisualizationConfig()) -> None:
        super().__init__()
        centre, unit = face_frame(fm)
        mean = (fm.mean.astype(np.float64) - centre) / unit
        basis = np.concatenate([fm.w_shape, fm.w_exp], axis=2).astype(np.float64) * coef_std / unit
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))               # (536, 3)
        self.register_buffer("basis", torch.from_numpy(basis.astype(np.float32)))             # (536, 3, 50)
        self.register_buffer("normals", torch.from_numpy(mean_normals(fm)))                   # (536, 3)
        self.register_buffer("mask", torch.from_numpy(nose_mask(mean, NOSE_TIP, cfg.mask_sigma).astype(np.float32)))
        self.cfg = cfg

    def shape(self, params: torch.Tensor) -> torch.Tensor:
        """(B, 58) -> (B, 536, 3) model-frame shape (PIFA's frame)."""
        return self.mean[None] + torch.einsum("vkc,bc->bvk", self.basis, params[:, N_CAMERA:])

    def points(self, params: torch.Tensor) -> torch.Tensor:
        """(B, 58) -> (B, 536, 3) crop pixels (x right, y down, z toward the camera)."""
        return weak_perspective(params[:, :N_CAMERA].reshape(-1, 2, 4), self.shape(params))

    def forward(self, params: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 58) -> (B, 1, size, size) visualization of the fit, the crop seen at ``size`` pixels."""
        m = params[:, :N_CAMERA].reshape(-1, 2, 4)
        pts = weak_perspective(m, self.shape(params))
        g = frontability(m, self.normals)
        scale = size / CROP_SIZE
        xy = crop_to_render(pts[..., :2], size)
        return splat(xy, g * self.mask, pts[..., 2], g > 0, size, self.cfg.sigma * scale, self.cfg.eps)


def conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class VisualizationBlock(nn.Module):
    """One block: [visualization] -> conv, conv on concat(image, previous features, visualization) -> FC, FC -> dP.

    The first block works on the 120 x 120 image and pools after its first convolution; the others at 60 x 60.
    Before the fully connected layers the features are average-pooled to ``grid`` x ``grid`` (the paper's FC reads
    the whole 57 x 57 x 40 map, which does not fit this machine)."""

    def __init__(self, prev_channels: int, filters: tuple[int, int], kernel: int, first: bool, use_vis: bool,
                 grid: int = 6, hidden: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        self.first, self.use_vis = first, use_vis
        cin = 3 + prev_channels + (1 if use_vis else 0)
        self.conv1 = conv_bn_relu(cin, filters[0], kernel)
        self.conv2 = conv_bn_relu(filters[0], filters[1], kernel)
        self.grid = grid
        self.fc1 = nn.Linear(filters[1] * grid * grid, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, N_P)
        nn.init.normal_(self.fc2.weight, std=1e-3)   # start near P^(k-1), with every gradient path alive
        nn.init.zeros_(self.fc2.bias)
        self.out_channels = filters[1]

    def forward(self, image: torch.Tensor, feats: torch.Tensor | None, vis: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [image] + ([feats] if feats is not None else []) + ([vis] if self.use_vis else [])
        h = self.conv1(torch.cat(parts, dim=1))
        if self.first:
            h = F.max_pool2d(h, 2)
        h = self.conv2(h)
        pooled = F.avg_pool2d(h, h.shape[-1] // self.grid).flatten(1)
        return h, self.fc2(self.drop(F.relu(self.fc1(pooled))))


class PIFA(nn.Module):
    """Input (B, 3, 120, 120) in [-1, 1]; output (B, 7, 58): P^0 (the initial fit) then P^1 ... P^6."""

    def __init__(self, fm: FaceModel, coef_std: np.ndarray, p0: np.ndarray, dp_scale: np.ndarray,
                 filters: tuple[tuple[int, int], ...] = PAPER_FILTERS, use_vis: bool = True,
                 vis_cfg: VisualizationConfig = VisualizationConfig(), first_kernel: int = 5, kernel: int = 3,
                 grid: int = 6, hidden: int = 256) -> None:
        super().__init__()
        self.vis = VisualizationLayer(fm, coef_std, vis_cfg)
        self.use_vis = use_vis
        blocks, prev = [], 0
        for k, f in enumerate(filters):
            blocks.append(VisualizationBlock(prev, f, first_kernel if k == 0 else kernel, k == 0, use_vis, grid,
                                             hidden))
            prev = f[1]
        self.blocks = nn.ModuleList(blocks)
        self.register_buffer("p0", torch.as_tensor(p0, dtype=torch.float32))               # (58,)
        self.register_buffer("dp_scale", torch.as_tensor(dp_scale, dtype=torch.float32))   # (58,)

    def step(self, k: int, x: torch.Tensor, half: torch.Tensor, p: torch.Tensor, feats: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block k (0-based) on the current P: (its features, P + dP)."""
        image = x if k == 0 else half
        # python ints (not the traced shape) so the exported graph's rendering sizes are constants
        vis = self.vis(p, CROP_SIZE if k == 0 else CROP_SIZE // 2) if self.use_vis else None
        feats, dp = self.blocks[k](image, feats, vis)
        return feats, p + dp * self.dp_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = F.avg_pool2d(x, 2)
        p = self.p0[None].expand(x.shape[0], -1)
        out, feats = [p], None
        for k in range(len(self.blocks)):
            feats, p = self.step(k, x, half, p, feats)
            out.append(p)
        return torch.stack(out, dim=1)


class ExportPIFA(nn.Module):
    """The shipped graph: the final P and its 536 crop-pixel points."""

    def __init__(self, net: PIFA) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.net(x)[:, -1]
        return p, self.net.vis.points(p)
