"""A method's visibility model: the shared normals + z-buffer test recalibrated on AFLW's human visibility flags.

Per landmark (brows, eyes, nose, mouth and the chin) one logistic regression decides "visible" from
  - the z of the mean face's normal at the landmark turned by the face's rotation (``turned_z``),
  - the z of the landmark's normal on the method's own mesh (``local_z``; MT-CNN 3D's N_c . N_i),
  - the shared test's decision (``geometric``),
  - the image around the landmark: a PATCH_GRID x PATCH_GRID grid of the blurred grey crop spanning
    +-PATCH_HALF of the face width, in units of the crop's own mean and spread, and the patch's spread. The
    annotators also hide points under hair, hands or glasses (on aflw_train 24% of the outer brow corners of faces
    within 30 degrees of frontal are flagged hidden), which no normal or z-buffer can see.
Each landmark's model is fitted to the flag of the AFLW point nearest to it in its group (``nearest_flags``: its
twin where it has one, e.g. the eye's centre for the eyelid points, the mouth's centre for the middle of the lips),
per method on its own outputs for training-split crops (``python -m engine.evaluation.visibility_fit --methods
NAME``), and ships as weights/visibility_NAME.npz. The jaw contour except the chin has no human flag near it, so it
keeps the geometric test. Without the file a method keeps the geometric test everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from engine.paths import weights_path
from engine.visibility import VisibilityTerms

PATCH_GRID = 6
PATCH_HALF = 0.07
GEOMETRY = ("bias", "turned_z", "local_z", "geometric", "turned_z^2", "local_z^2", "turned_z*geometric")
FEATURES = GEOMETRY + tuple(f"patch_{i}" for i in range(PATCH_GRID * PATCH_GRID)) + ("patch_spread",)
MODEL_GROUPS = ("brows", "eyes", "nose", "mouth", "chin")
_GROUP_LANDMARKS = {"brows": range(17, 27), "eyes": range(36, 48), "nose": range(27, 36), "mouth": range(48, 68),
                    "chin": (8,)}


def model_file(method: str) -> Path:
    return weights_path(f"visibility_{method}.npz")


# where each of AFLW's 21 points sits among the 68 (a landmark, or the mean of several: eye and mouth centres), by
# group; the ears have no place on the 68-point face
_FLAG_SITES = {"brows": {0: (17,), 1: (19,), 2: (21,), 3: (22,), 4: (24,), 5: (26,)},
               "eyes": {6: (36,), 7: (37, 38, 40, 41), 8: (39,), 9: (42,), 10: (43, 44, 46, 47), 11: (45,)},
               "nose": {13: (31,), 14: (30,), 15: (35,)},
               "mouth": {17: (48,), 18: (62, 66), 19: (54,)},
               "chin": {20: (8,)}}


def nearest_flags(mean_landmarks: np.ndarray) -> np.ndarray:
    """(68,) the AFLW point whose flag each landmark learns from: the nearest site of its group on the frontal
    mean face (x, y of ``mean_landmarks`` (68, 3)); -1 for the jaw contour."""
    out = np.full(68, -1, np.int64)
    xy = np.asarray(mean_landmarks)[:, :2]
    for group, sites in _FLAG_SITES.items():
        flags = np.array(list(sites))
        centres = np.stack([xy[list(members)].mean(0) for members in sites.values()])
        for i in _GROUP_LANDMARKS[group]:
            out[i] = flags[np.argmin(np.linalg.norm(centres - xy[i], axis=1))]
    return out


def landmark_groups() -> np.ndarray:
    """(68,) index into MODEL_GROUPS of each landmark's group, -1 for the jaw contour the geometric test keeps."""
    g = np.full(68, -1, np.int64)
    for k, name in enumerate(MODEL_GROUPS):
        g[list(_GROUP_LANDMARKS[name])] = k
    return g


_SIDES: list[np.ndarray] = []


def landmark_sides() -> np.ndarray:
    """(68,) -1 for the landmarks on the image-left half of the mean face, +1 for the rest (midline included)."""
    if not _SIDES:
        from engine.facemodel import N_MESH, load_face_model

        _SIDES.append(np.where(load_face_model().mean[N_MESH:N_MESH + 68, 0] < -1e-6, -1.0, 1.0))
    return _SIDES[0]


@lru_cache(maxsize=1)
def _patch_grid() -> np.ndarray:
    """(68, G*G, 2) each landmark's sampling grid in units of PATCH_HALF x the face width, mirrored on the image-left
    half of the face; fixed, so built once (it runs per face in the app's tail)."""
    t = np.linspace(-1.0, 1.0, PATCH_GRID)
    grid = np.stack(np.meshgrid(t, t), -1).reshape(-1, 2)                            # (G*G, 2) x, y
    return grid[None] * np.stack([landmark_sides(), np.ones(68)], -1)[:, None, :]


def patch_features(crops: np.ndarray, landmarks: np.ndarray, face_width: np.ndarray) -> np.ndarray:
    """(B, 68, PATCH_GRID**2 + 1): the grey crop around each landmark (nearest pixel of a 5x5-blurred grey image,
    on a grid spanning +-PATCH_HALF x ``face_width``) in units of the crop's mean and standard deviation, then
    the patch's standard deviation in the same units. The grid is mirrored on the image-left half of the face, so
    one group's coefficients read "towards the ear" the same way on both sides. ``crops`` (B, 120, 120, 3) uint8
    BGR, ``landmarks`` (B, 68, 2+) crop pixels, ``face_width`` (B,) pixels."""
    crops = np.asarray(crops)
    b, h, w = crops.shape[:3]
    grey = np.stack([cv2.blur(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), (5, 5)) for c in crops]).astype(np.float64)
    mean = grey.mean(axis=(1, 2), keepdims=True)
    std = grey.std(axis=(1, 2), keepdims=True) + 1e-6
    grey = (grey - mean) / std
    pts = np.asarray(landmarks, np.float64)[:, :, None, :2] \
        + _patch_grid()[None] * (PATCH_HALF * np.asarray(face_width, np.float64))[:, None, None, None]
    x = np.clip(np.rint(pts[..., 0]), 0, w - 1).astype(np.int64)
    y = np.clip(np.rint(pts[..., 1]), 0, h - 1).astype(np.int64)
    values = grey[np.arange(b)[:, None, None], y, x]                                 # (B, 68, G*G)
    return np.concatenate([values, values.std(-1, keepdims=True)], -1)


def design(terms: VisibilityTerms, crops: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(B, 68, len(FEATURES)) the features of every landmark of (B, 536, 3) crop-pixel ``points``."""
    b = terms.geometric.shape[0]
    points = np.asarray(points)
    width = np.ptp(points[:, :468, 0], axis=1)
    g = terms.geometric.astype(np.float64)
    geo = np.stack([np.ones((b, 68)), terms.turned_z, terms.local_z, g, terms.turned_z ** 2, terms.local_z ** 2,
                    terms.turned_z * g], -1)
    return np.concatenate([geo, patch_features(crops, points[:, 468:], width)], -1)


@dataclass(frozen=True)
class VisibilityModel:
    method: str
    coef: np.ndarray       # (68, len(FEATURES)) logistic coefficients of "visible" of each landmark
    groups: np.ndarray     # (68,) landmark -> group, -1: the geometric test

    def probability(self, terms: VisibilityTerms, crops: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(B, 68) P(visible) under the model (the jaw contour: 1 or 0 from the geometric test)."""
        x = design(terms, crops, points)
        z = np.einsum("blf,lf->bl", x, self.coef)
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
        return np.where(self.groups >= 0, p, terms.geometric.astype(np.float64))

    def predict(self, terms: VisibilityTerms, crops: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(B, 68) bool visible for the faces whose terms these are, from their (B, 120, 120, 3) crops and
        (B, 536, 3) crop-pixel points."""
        return self.probability(terms, crops, points) > 0.5

    def save(self, path: Path, **info) -> None:
        """Write the model (and ``info``: how it was fitted) to ``path``, renamed into place when complete."""
        tmp = path.with_name(f".{path.name}.part")
        with open(tmp, "wb") as f:
            np.savez(f, method=self.method, coef=self.coef, groups=self.groups,
                     features=np.array(FEATURES), model_groups=np.array(MODEL_GROUPS),
                     **{k: np.asarray(v) for k, v in info.items()})
        tmp.replace(path)


def load_visibility_model(method: str) -> VisibilityModel | None:
    """The method's shipped visibility model, or None (no file): the geometric test."""
    path = model_file(method)
    if not path.exists():
        return None
    z = np.load(path)
    if tuple(z["features"]) != FEATURES or tuple(z["model_groups"]) != MODEL_GROUPS:
        raise ValueError(f"{path} was fitted with other features; re-fit it "
                         f"(python -m engine.evaluation.visibility_fit --methods {method})")
    return VisibilityModel(method, z["coef"], z["groups"])
