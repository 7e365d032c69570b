"""Label-consistent augmentation of 120x120 crops and their crop-pixel points. Seeded per call via ``rng``.

Geometric changes (flip, in-plane rotation, scale, shift) are one 2x3 affine applied to the image with
cv2.warpAffine and to the points' x, y; z is scaled with the image so depth keeps the pixel scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SIZE = 120
CENTRE = (SIZE - 1) / 2.0


@dataclass
class AugmentConfig:
    flip: float = 0.5            # probability of a horizontal flip
    rotate: float = 45.0         # max in-plane rotation, degrees
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.06          # max shift as a fraction of the crop
    colour: tuple[float, float] = (0.7, 1.3)  # per-channel gain range
    brightness: float = 20.0
    occlude: float = 0.3         # probability of a synthetic occluder
    blur: float = 0.1


def geometric_matrix(rng: np.random.Generator, cfg: AugmentConfig, flip: bool) -> np.ndarray:
    """2x3 affine in crop pixels: optional mirror about the centre, then rotation/scale about it, then shift."""
    ang = np.deg2rad(rng.uniform(-cfg.rotate, cfg.rotate)) if cfg.rotate > 0 else 0.0
    s = rng.uniform(*cfg.scale)
    tx, ty = rng.uniform(-cfg.shift, cfg.shift, size=2) * SIZE
    c, si = np.cos(ang) * s, np.sin(ang) * s
    rot = np.array([[c, -si, 0], [si, c, 0], [0, 0, 1.0]])
    to_c = np.array([[1, 0, -CENTRE], [0, 1, -CENTRE], [0, 0, 1.0]])
    back = np.array([[1, 0, CENTRE + tx], [0, 1, CENTRE + ty], [0, 0, 1.0]])
    mir = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    return (back @ rot @ mir @ to_c)[:2]


def warp_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2 or 3) points; z is multiplied by the affine's scale."""
    out = np.array(points, dtype=np.float32, copy=True)
    xy = points[..., :2] @ m[:, :2].T + m[:, 2]
    out[..., :2] = xy
    if points.shape[-1] > 2:
        out[..., 2] = points[..., 2] * np.sqrt(abs(np.linalg.det(m[:, :2])))
    return out


def flip_points(points: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """Mirror x about the crop centre and relabel with the symmetric permutation."""
    out = np.array(points, dtype=np.float32, copy=True)[permutation]
    out[..., 0] = 2 * CENTRE - out[..., 0]
    return out


def colour_jitter(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    gain = rng.uniform(*cfg.colour, size=3)
    bias = rng.uniform(-cfg.brightness, cfg.brightness)
    out = img.astype(np.float32) * gain + bias
    if rng.random() < cfg.blur:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    return np.clip(out, 0, 255).astype(np.uint8)


def add_occluder(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random filled ellipse or rectangle (solid colour or noise) covering 5-25% of the crop."""
    out = img.copy()
    add_occluder_inplace(out, rng)
    return out


def augment_with_affine(img: np.ndarray, point_sets: list[np.ndarray], permutations: list[np.ndarray],
                        rng: np.random.Generator, cfg: AugmentConfig
                        ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, bool]:
    """``augment`` that also returns the 2x3 geometric affine (crop pixels, mirror included) and whether the crop
    was mirrored, so targets can be built later, batched, with the same transform (Recipe.batch_targets).

    A point p of the source crop lands at ``affine @ [x, y, 1]`` (depth scaled by sqrt|det|); when mirrored, the
    point sets are also relabelled with their permutation.
    """
    flip = bool(rng.random() < cfg.flip)
    m = geometric_matrix(rng, cfg, flip)
    out = cv2.warpAffine(img, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    pts = []
    for p, perm in zip(point_sets, permutations):
        q = warp_points(p, m)
        pts.append(q[perm] if flip else q)
    out = colour_jitter(out, rng, cfg)
    if rng.random() < cfg.occlude:
        out = add_occluder(out, rng)
    return out, pts, m, flip


def augment(img: np.ndarray, point_sets: list[np.ndarray], permutations: list[np.ndarray],
            rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Augment one crop and any number of point sets (each with its own mirror permutation).

    Point arrays may hold NaN for absent points; they stay NaN.
    """
    out, pts, _, _ = augment_with_affine(img, point_sets, permutations, rng, cfg)
    return out, pts


# --- the batched data path (AlignmentDataset.batch): the same draws and the same pixels, cheaper ----------------------
# Measured per crop on one thread (python -m research.profile_data_path baseline --stages, 1,024 crops): the
# per-pixel float colour jitter above was 0.19 of 0.50 ms, per-sample tensors + collation 0.08 ms, the uint8 -> float
# conversion 0.04 ms. Below, the jitter is a 256-entry table per channel (uint8 in, uint8 out), the crop is written
# in place into the batch, and the conversion to float happens once per batch.

def colour_table(gain: np.ndarray, bias: float) -> np.ndarray:
    """(256, 3) uint8: ``colour_jitter``'s output for each input level and channel without blur (the same float
    maths: float32 level * float64 gain + bias, clipped, truncated), so applying it is a lookup."""
    return np.clip(np.arange(256, dtype=np.float32)[:, None] * gain + bias, 0, 255).astype(np.uint8)


def colour_jitter_inplace(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> None:
    """``colour_jitter`` written into ``img`` (uint8 HWC, 3 channels): same draws, same output bytes."""
    gain = rng.uniform(*cfg.colour, size=3)
    bias = rng.uniform(-cfg.brightness, cfg.brightness)
    if rng.random() < cfg.blur:  # the blur runs on the unclipped float image: keep the per-pixel maths
        out = cv2.GaussianBlur(img.astype(np.float32) * gain + bias, (0, 0), rng.uniform(0.5, 1.5))
        img[...] = np.clip(out, 0, 255).astype(np.uint8)
        return
    cv2.LUT(img, colour_table(gain, bias)[None], dst=img)


def add_occluder_inplace(img: np.ndarray, rng: np.random.Generator) -> None:
    """``add_occluder`` written into ``img``: same draws, same output bytes, no copy of the crop."""
    area = rng.uniform(0.05, 0.25) * SIZE * SIZE
    aspect = rng.uniform(0.5, 2.0)
    w = int(np.sqrt(area * aspect))
    h = int(area / max(w, 1))
    x, y = rng.integers(0, SIZE - min(w, SIZE - 1)), rng.integers(0, SIZE - min(h, SIZE - 1))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    if rng.random() < 0.5:
        cv2.rectangle(mask, (int(x), int(y)), (int(x + w), int(y + h)), 1, -1)
    else:
        cv2.ellipse(mask, (int(x + w / 2), int(y + h / 2)), (max(w // 2, 1), max(h // 2, 1)),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
    inside = mask.view(bool)
    if rng.random() < 0.5:
        img[inside] = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)[inside]
    else:
        img[inside] = rng.integers(0, 256, size=3).astype(np.uint8)


def augment_image_into(img: np.ndarray, out: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
                       ) -> tuple[np.ndarray, bool]:
    """The image half of ``augment_with_affine``, written into ``out`` ((120, 120, 3) uint8, e.g. a row of the
    batch): the same draws in the same order and the same output bytes. Returns (2x3 affine, flipped); the points
    go through ``warp_point_batch`` with that affine."""
    flip = bool(rng.random() < cfg.flip)
    m = geometric_matrix(rng, cfg, flip)
    cv2.warpAffine(img, m, (SIZE, SIZE), dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    colour_jitter_inplace(out, rng, cfg)
    if rng.random() < cfg.occlude:
        add_occluder_inplace(out, rng)
    return m, flip


# numpy 1.x multiplies a float32 array by a float64 scalar in float32, numpy 2 in float64: warp_points' depth scale
# (a scalar per sample) follows that rule, so the batched version (a float64 column) multiplies in the same type
_SCALAR_PRODUCT = (np.zeros(1, np.float32) * np.float64(1.0)).dtype


def warp_point_batch(points: np.ndarray, m: np.ndarray, flipped: np.ndarray, permutation: np.ndarray) -> np.ndarray:
    """``warp_points`` then, for mirrored samples, the relabelling ``q[permutation]``, for a batch: points (B, N, 2
    or 3), m (B, 2, 3) float64, flipped (B,) bool. Same float maths per sample, so the same float32 results."""
    m = np.asarray(m, np.float64)
    out = np.array(points, dtype=np.float32, copy=True)
    out[..., :2] = points[..., :2] @ np.swapaxes(m[:, :, :2], 1, 2) + m[:, None, :, 2]
    if points.shape[-1] > 2:
        scale = np.sqrt(np.abs(np.linalg.det(m[:, :, :2])))[:, None]
        out[..., 2] = np.multiply(points[..., 2], scale, dtype=_SCALAR_PRODUCT)
    return np.where(flipped[:, None, None], out[:, permutation], out)
