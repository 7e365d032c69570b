"""DAFIs with realistic errors for training the CPR networks: ground-truth DAFIs corrupted the way the HS-U-Net
errs, with every parameter measured from the U-Net's own predictions on the held-out reference split.

Why: the CPR networks must learn to cope with the DAFI errors they will see at run time (the robustness the paper
claims); trained on clean DAFIs they never would. The U-Net's predictions on its own training crops are too clean,
so the error is measured where it did not train (engine/methods/cprfa/dafi_targets.reference_rows).

The error model (``DafiErrorModel``), fitted by ``measure_errors``:
- code error on pixels both masks call face, per channel: a smooth part (the error field blurred with a Gaussian of
  ``SMOOTH_SIGMA`` px: its std) plus a pixel-wise part (the rest: its std). Synthesised as white noise blurred with
  the same Gaussian, rescaled to the smooth std, plus white noise at the pixel-wise std.
- mask error as a shift of the face boundary: per face, (extra - missing pixels) / boundary pixels is its mean
  boundary shift in px; their mean and std over the faces define a normal, from which each synthetic face draws an
  integer dilation (positive) or erosion (negative). Pixels the dilation adds take their neighbours' codes (a
  U-Net's overshoot continues the surface it sees). Local errors that cancel along one face's boundary are not
  modelled (a limitation; the code-error terms are measured on the common pixels only).

Measured limitation of that model (``python -m research.cprfa_corruption_check``, 954 reference crops, threshold
0.02): at the 128 selected vertices it is far harsher than the U-Net. Of the vertices the ground truth finds, the
real predictions find 0.90 (found vertices 1.80 px median, 2.32 mean from their true position), the synthetic DAFIs
0.36 (3.85 / 4.23 px). One Gaussian fitted to a heavy-tailed error (the per-face smooth RMS: median 0.028,
overall 0.050) pushes most codes off the face surface, while the U-Net mostly errs along it: it predicts a
plausible code at the wrong place. The first shipped cprfa weights were trained on this model (now the
recipe's ablation ``code-corruption``).

The ``warp`` model (the recipe's default) follows what the U-Net does: each face's ground truth is
resampled through a smooth random displacement field (``WARP_SIGMA`` px; moves codes along the surface), the mask
boundary shifted as above, then smooth code noise added; each face draws one log-normal scale for both, with the
log-spread of the measured per-face smooth RMS (``face_spread``). The displacement size and the code-noise scale are
the two numbers ``calibrate_warp`` fits so that retrieval of the selected vertices on the reference split
reproduces the real predictions' found rate and mean localisation error.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

SMOOTH_SIGMA = 6.0     # px: separates the smooth (low-frequency) part of the code error from pixel noise
MAX_SHIFT = 4          # px: the largest boundary dilation/erosion synthesised
WARP_SIGMA = 10.0      # px: smoothness of the warp model's displacement field (about the size of a facial part)


@dataclass
class DafiErrorModel:
    smooth_std: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    shift_mean: float          # px, positive: the predicted mask overshoots the face
    shift_std: float           # px, over faces
    code_l1: float             # the measured mean |code error| on common face pixels (for the card)
    mask_iou: float            # the measured mask IoU (for the card)
    images: int                # how many held-out crops it was measured on
    face_spread: float = 0.0   # std of log per-face smooth RMS (heavy tails across faces; the warp model's)
    warp_px: float = 0.0       # > 0: the warp model, displacement std per axis in px (calibrate_warp)
    code_scale: float = 1.0    # the warp model's code noise, as a fraction of smooth_std (calibrate_warp)

    def as_dict(self) -> dict:
        return asdict(self)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    r = int(math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), zero padding."""
    k = gaussian_kernel(sigma).to(x)
    c = x.shape[1]
    r = len(k) // 2
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)


def boundary_pixels(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) count per face of mask pixels with a background 4-neighbour (the boundary length in pixels)."""
    m = mask[:, None].float()
    eroded = -F.max_pool2d(-m, 3, 1, 1)
    return (m - eroded).flatten(1).sum(1)


@torch.no_grad()
def measure_errors(pred_dafi: torch.Tensor, pred_fg: torch.Tensor, gt_dafi: torch.Tensor,
                   gt_mask: torch.Tensor) -> DafiErrorModel:
    """Fit the error model to predictions (B, 3, H, W), (B, H, W) probability, against ground truth."""
    pm = pred_fg > 0.5
    gm = gt_mask.bool()
    both = (pm & gm)[:, None].float()
    err = (pred_dafi - gt_dafi) * both
    # the smooth part: a normalised blur over common pixels only (the background is not an error of zero)
    smooth = blur(err, SMOOTH_SIGMA) / blur(both, SMOOTH_SIGMA).clamp_min(1e-3) * both
    rest = (err - smooth) * both
    n = both.sum().clamp_min(1.0)
    m_smooth = ((smooth ** 2).sum((0, 2, 3)) / n).sqrt()
    m_rest = ((rest ** 2).sum((0, 2, 3)) / n).sqrt()
    # invert the synthesis (``corrupt``): a field of std s made by blurring white noise with the Gaussian g keeps
    # 1/2 of its variance under a second blur by g and leaves 1/6 of it in the rest (continuous 2D Gaussians:
    # var(g*S) = var(S) / 2, cov(S, g*S) = 2/3 var(S)); pixel noise stays (almost all) in the rest
    smooth_std = tuple(float(v) for v in m_smooth * math.sqrt(2.0))
    pixel_std = tuple(float(v) for v in torch.sqrt(torch.clamp(m_rest ** 2 - m_smooth ** 2 / 3.0, min=0.0)))
    code_l1 = float(err.abs().sum() / (3 * n))
    extra = (pm & ~gm).flatten(1).sum(1).float()
    missing = (~pm & gm).flatten(1).sum(1).float()
    per = boundary_pixels(gm).clamp_min(1.0)
    signed = (extra - missing) / per           # each face's mean boundary shift, px (+: the mask overshoots)
    shift_mean = float(signed.mean())
    shift_std = float(signed.std()) if len(signed) > 1 else 0.0
    inter = (pm & gm).flatten(1).sum(1).float()
    union = (pm | gm).flatten(1).sum(1).float().clamp_min(1.0)
    per_face = ((smooth ** 2).sum((1, 2, 3)) / both.sum((1, 2, 3)).clamp_min(1.0)).sqrt()
    per_face = per_face[per_face > 0]
    face_spread = float(per_face.log().std()) if len(per_face) > 1 else 0.0
    return DafiErrorModel(smooth_std, pixel_std, shift_mean, shift_std, code_l1, float((inter / union).mean()),
                          int(pred_dafi.shape[0]), face_spread=face_spread)


def shift_mask(dafi: torch.Tensor, mask: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dilate (shift > 0) or erode (shift < 0) each face's mask by |shift| pixels (integer, per face); pixels a
    dilation adds take the mean code of their face neighbours, ring by ring."""
    m = mask[:, None].float()
    out_m = m.clone()
    codes = dafi * m
    for r in range(1, MAX_SHIFT + 1):
        grow = (shift >= r).float()[:, None, None, None]
        shrink = (shift <= -r).float()[:, None, None, None]
        dil = F.max_pool2d(out_m, 3, 1, 1)
        ero = -F.max_pool2d(-out_m, 3, 1, 1)
        new = dil * grow + ero * shrink + out_m * (1 - grow - shrink)
        # codes for newly added pixels: mean of the current face neighbours
        num = F.avg_pool2d(codes * out_m, 3, 1, 1)
        den = F.avg_pool2d(out_m, 3, 1, 1).clamp_min(1e-6)
        added = (new - out_m).clamp_min(0.0)
        codes = codes * out_m + num / den * added
        out_m = new
        codes = codes * out_m
    return codes, out_m[:, 0] > 0.5


def unit_smooth_noise(shape: tuple[int, ...], sigma: float, generator: torch.Generator) -> torch.Tensor:
    """White noise blurred by a Gaussian of ``sigma`` px, rescaled to unit std (a unit-sum 2D Gaussian leaves
    1 / (2 sqrt(pi) sigma) of white noise's std)."""
    return blur(torch.randn(*shape, generator=generator), sigma) * (2.0 * math.sqrt(math.pi) * sigma)


def warp_faces(dafi: torch.Tensor, mask: torch.Tensor, displacement: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample DAFIs (B, 3, H, W) and masks (B, H, W) at pixel + displacement (B, 2, H, W; x, y in px): codes are
    averaged over face pixels only (never mixed with the background's zeros)."""
    b, _, h, w = dafi.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=dafi.dtype, device=dafi.device),
                            torch.arange(w, dtype=dafi.dtype, device=dafi.device), indexing="ij")
    grid = torch.stack([(xs + displacement[:, 0] + 0.5) / w * 2 - 1, (ys + displacement[:, 1] + 0.5) / h * 2 - 1], -1)
    m = mask[:, None].to(dafi.dtype)
    sampled = F.grid_sample(torch.cat([dafi * m, m], 1), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    weight = sampled[:, 3:]
    new_mask = weight[:, 0] > 0.5
    return sampled[:, :3] / weight.clamp_min(1e-6) * new_mask[:, None], new_mask


def corrupt_warp(dafi: torch.Tensor, mask: torch.Tensor, model: DafiErrorModel, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The warp model (module docstring): displacement along the surface, boundary shift, smooth code noise, one
    log-normal scale per face (mean 1)."""
    b, c, h, w = dafi.shape
    dev = dafi.device
    tau = model.face_spread
    scale = torch.exp(torch.randn(b, generator=generator) * tau - tau * tau / 2).view(-1, 1, 1, 1).to(dev)
    disp = unit_smooth_noise((b, 2, h, w), WARP_SIGMA, generator).to(dev) * (model.warp_px * scale)
    codes, m = warp_faces(dafi, mask, disp)
    shift = torch.round(torch.randn(b, generator=generator) * model.shift_std + model.shift_mean)
    codes, m = shift_mask(codes, m, shift.clamp(-MAX_SHIFT, MAX_SHIFT).to(dev))
    sm = torch.tensor(model.smooth_std, device=dev).view(1, c, 1, 1) * model.code_scale * scale
    noise = unit_smooth_noise((b, c, h, w), SMOOTH_SIGMA, generator).to(dev)
    return (codes + noise * sm).clamp(0.0, 1.0) * m[:, None], m


def corrupt(dafi: torch.Tensor, mask: torch.Tensor, model: DafiErrorModel, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth (B, 3, H, W) DAFIs and (B, H, W) masks -> DAFIs with the U-Net's measured kind of error (the
    warp model when ``model.warp_px`` > 0, else the code-noise model: the ablation code-corruption)."""
    if model.warp_px > 0:
        return corrupt_warp(dafi, mask, model, generator)
    b, c, h, w = dafi.shape
    dev = dafi.device
    shift = torch.round(torch.randn(b, generator=generator) * model.shift_std + model.shift_mean)
    shift = shift.clamp(-MAX_SHIFT, MAX_SHIFT).to(dev)
    codes, m = shift_mask(dafi, mask, shift)
    white = torch.randn(b, c, h, w, generator=generator).to(dev)
    smooth = unit_smooth_noise((b, c, h, w), SMOOTH_SIGMA, generator).to(dev)
    sm = torch.tensor(model.smooth_std, device=dev).view(1, c, 1, 1)
    px = torch.tensor(model.pixel_std, device=dev).view(1, c, 1, 1)
    out = (codes + smooth * sm + white * px).clamp(0.0, 1.0) * m[:, None]
    return out, m


def batch_generator(index: torch.Tensor, affine: torch.Tensor | None) -> torch.Generator:
    """A generator seeded by the batch's rows and augmentation (so a batch's corruption is reproducible without
    any state in the recipe, and differs between epochs because the augmentation does)."""
    key = np.asarray(index.cpu(), np.int64).tobytes()
    if affine is not None:
        key += np.asarray(affine.cpu(), np.float32).tobytes()
    import zlib

    g = torch.Generator()
    g.manual_seed(zlib.crc32(key))
    return g


@torch.no_grad()
def retrieval_statistics(found: torch.Tensor, obs: torch.Tensor, found_gt: torch.Tensor, obs_gt: torch.Tensor
                         ) -> tuple[float, float]:
    """(found rate where the ground truth finds the vertex, mean px distance of those found from the ground
    truth's position): what the CPR matrices are built from."""
    both = found & found_gt
    rate = float(found[found_gt].float().mean()) if found_gt.any() else 0.0
    err = float((obs - obs_gt).norm(dim=-1)[both].mean()) if both.any() else float("inf")
    return rate, err


@torch.no_grad()
def calibrate_warp(model: DafiErrorModel, gt: torch.Tensor, gt_mask: torch.Tensor, target: tuple[float, float],
                   retrieve, seed: int = 0, warp_grid: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0),
                   scale_grid: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)) -> DafiErrorModel:
    """The warp model whose retrieval statistics on (gt, gt_mask) come closest to ``target`` = (found rate, mean
    error px) measured on the U-Net's real predictions of the same crops (relative squared mismatch, grid search).
    ``retrieve(dafi, mask) -> (obs, found bool)``."""
    from dataclasses import replace

    if not (target[0] > 0 and math.isfinite(target[1])):
        raise ValueError(f"nothing to calibrate the warp model to: the U-Net's predictions find none of the "
                         f"selected vertices (found rate {target[0]:.3f}); is the HS-U-Net trained?")
    obs_gt, found_gt = retrieve(gt, gt_mask)
    best, best_cost = model, float("inf")
    for warp_px in warp_grid:
        for code_scale in scale_grid:
            cand = replace(model, warp_px=float(warp_px), code_scale=float(code_scale))
            d, m = corrupt_warp(gt, gt_mask, cand, torch.Generator().manual_seed(seed))
            obs, found = retrieve(d, m)
            rate, err = retrieval_statistics(found, obs, found_gt, obs_gt)
            cost = ((rate - target[0]) / target[0]) ** 2 + ((err - target[1]) / max(target[1], 0.5)) ** 2
            if cost < best_cost:
                best, best_cost = cand, cost
    return best
