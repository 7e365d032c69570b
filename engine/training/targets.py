"""Training targets from ../shared/data/aflw_train (numpy only: importable without torch).

Per sample: the crop, the 62 teacher parameters, pose, the 468 + 68 points in crop pixels, landmark visibility
(normals + z-buffer of the mesh), the human 21 points with their mask.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.facemodel import FaceModel, load_face_model
from engine.geometry.rotation import camera_to_euler
from engine.paths import PROJECT_ROOT, data_path
from engine.visibility import landmark_visibility

CACHE_DIR = PROJECT_ROOT / "runs" / "cache"


@dataclass
class TrainingSet:
    images: np.ndarray      # (N, 120, 120, 3) uint8 BGR
    params: np.ndarray      # (N, 62) float32
    points: np.ndarray      # (N, 536, 3) float32 crop pixels (468 mesh, then 68 landmarks)
    pts21: np.ndarray       # (N, 21, 2) float32, NaN where absent
    pose: np.ndarray        # (N, 3) yaw, pitch, roll degrees (from the camera)
    names: np.ndarray

    def __len__(self) -> int:
        return len(self.params)

    def subset(self, idx: np.ndarray) -> "TrainingSet":
        return TrainingSet(self.images[idx], self.params[idx], self.points[idx], self.pts21[idx],
                           self.pose[idx], self.names[idx])


def load_images(folder: Path, names: np.ndarray) -> np.ndarray:
    out = np.zeros((len(names), 120, 120, 3), np.uint8)
    for i, n in enumerate(names):
        img = cv2.imread(str(folder / n), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(folder / n)
        out[i] = img if img.shape[:2] == (120, 120) else cv2.resize(img, (120, 120))
    return out


def all_points(fm: FaceModel, params: np.ndarray) -> np.ndarray:
    """(N, 536, 3) crop-pixel points for (N, 62) parameters, vectorised."""
    params = params.astype(np.float32)
    shapes = fm.mean[None] + np.einsum("pkc,nc->npk", fm.w_shape, params[:, 12:52]) \
        + np.einsum("pkc,nc->npk", fm.w_exp, params[:, 52:62])
    cam = params[:, :12].reshape(-1, 3, 4)
    v = np.einsum("npk,nck->npc", shapes, cam[:, :, :3]) + cam[:, None, :, 3]
    v[..., 0] -= 1.0
    v[..., 1] = 120.0 - v[..., 1]
    return v.astype(np.float32)


def load_training_set(limit: int | None = None, cache: bool = True) -> TrainingSet:
    root = data_path("aflw_train")
    if not (root / "labels.npz").exists():
        raise FileNotFoundError(f"training set not found at {root} (set FACEALIGN_DATA)")
    lab = np.load(root / "labels.npz")
    names = lab["names"]
    n = len(names) if limit is None else min(limit, len(names))
    cache_file = CACHE_DIR / f"aflw_train_images_{n}.npy"
    if cache and cache_file.exists():
        images = np.load(cache_file, mmap_mode="r")
    else:
        images = load_images(root / "images", names[:n])
        if cache:
            CACHE_DIR.mkdir(parents=True, exist_ok=True)
            np.save(cache_file, images)
    fm = load_face_model()
    params = lab["teacher_params"][:n].astype(np.float32)
    pose = np.array([camera_to_euler(p[:12]) for p in params], np.float32)
    return TrainingSet(np.asarray(images), params, all_points(fm, params), lab["pts21"][:n].astype(np.float32),
                       pose, names[:n])


def sample_visibility(points: np.ndarray, fm: FaceModel | None = None) -> np.ndarray:
    """(68,) landmark visibility of one sample's (536, 3) points."""
    return landmark_visibility(fm or load_face_model(), points)
