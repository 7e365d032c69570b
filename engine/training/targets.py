"""Training targets from ../shared/data/aflw_train (numpy only: importable without torch).

Per sample: the crop, the 62 teacher parameters, pose, the 468 + 68 points in crop pixels, landmark visibility
(normals + z-buffer of the mesh), the human 21 points with their mask.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from engine.facemodel import FaceModel, load_face_model
from engine.geometry.rotation import camera_to_euler
from engine.paths import PROJECT_ROOT, data_path
from engine.training.cache import cached_uint8, files_fingerprint
from engine.visibility import landmark_visibility

CACHE_DIR = PROJECT_ROOT / "runs" / "cache"


@dataclass
class TrainingSet:
    images: np.ndarray      # (N, 120, 120, 3) uint8 BGR (a read-only memory map of the validated cache)
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


def load_images(folder: Path, names: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Decode ``names`` from ``folder`` into (N, 120, 120, 3) uint8 BGR (into ``out`` when given)."""
    out = np.zeros((len(names), 120, 120, 3), np.uint8) if out is None else out
    for i, n in enumerate(names):
        img = cv2.imread(str(folder / n), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(folder / n)
        out[i] = img if img.shape[:2] == (120, 120) else cv2.resize(img, (120, 120))
    return out


def decode_blobs(blob: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Decode encoded images stored back to back (``blob[offsets[i]:offsets[i + 1]]``, e.g. a WebP pack) into
    ``out`` (N, 120, 120, 3) uint8 BGR."""
    for i in range(len(out)):
        img = cv2.imdecode(blob[offsets[i]:offsets[i + 1]], cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"image {i} of the pack does not decode")
        out[i] = img if img.shape[:2] == (120, 120) else cv2.resize(img, (120, 120))
    return out


def pack_root() -> Path | None:
    """The packed training set to read instead of ../shared/data (``$FACEALIGN_PACK``; scripts/pack_training_set.py
    writes one), or None."""
    env = os.environ.get("FACEALIGN_PACK")
    return Path(env) if env else None


def cached_training_images(root: Path, names: np.ndarray, pack: Path | None = None,
                           log: Callable[[str], None] | None = None) -> np.ndarray:
    """(N, 120, 120, 3) uint8 crops, memory-mapped from a validated cache in runs/cache/ (decoded once; rebuilt when
    the source files change or the cache is corrupted, see engine/training/cache.py)."""
    n = len(names)
    shape = (n, 120, 120, 3)
    if pack is not None:
        files = [pack / "images.bin", pack / "offsets.npy", pack / "labels.npz"]
        fp = files_fingerprint(files, {"n": n, "size": 120, "source": "pack"})
        path = CACHE_DIR / f"aflw_train_pack_{n}.u8"

        def fill(out: np.ndarray) -> None:
            decode_blobs(np.fromfile(pack / "images.bin", np.uint8), np.load(pack / "offsets.npy"), out)
    else:
        files = [root / "labels.npz"] + [root / "images" / str(nm) for nm in names]
        fp = files_fingerprint(files, {"n": n, "size": 120, "source": "images"})
        path = CACHE_DIR / f"aflw_train_{n}.u8"

        def fill(out: np.ndarray) -> None:
            load_images(root / "images", names, out)
    return cached_uint8(path, fp, shape, fill, log=log)


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


def load_training_set(limit: int | None = None, cache: bool = True, pack: Path | None = None,
                      log: Callable[[str], None] | None = None) -> TrainingSet:
    """The training set (first ``limit`` crops): from ../shared/data/aflw_train, or from a pack folder
    (``pack`` or ``$FACEALIGN_PACK``: WebP crops + labels, scripts/pack_training_set.py). With ``cache`` the crops
    are decoded once into a validated, memory-mapped uint8 cache; without it they are decoded into memory."""
    pack = pack or pack_root()
    root = pack if pack is not None else data_path("aflw_train")
    if not (root / "labels.npz").exists():
        where = "pack" if pack is not None else "training set"
        raise FileNotFoundError(f"{where} not found at {root} (set FACEALIGN_DATA, or FACEALIGN_PACK for a pack)")
    lab = np.load(root / "labels.npz")
    names = lab["names"]
    n = len(names) if limit is None else min(limit, len(names))
    if cache:
        images = cached_training_images(root, names[:n], pack=pack, log=log)
    elif pack is not None:
        images = decode_blobs(np.fromfile(pack / "images.bin", np.uint8), np.load(pack / "offsets.npy"),
                              np.zeros((n, 120, 120, 3), np.uint8))
    else:
        images = load_images(root / "images", names[:n])
    fm = load_face_model()
    params = lab["teacher_params"][:n].astype(np.float32)
    pose = np.array([camera_to_euler(p[:12]) for p in params], np.float32)
    return TrainingSet(images, params, all_points(fm, params), lab["pts21"][:n].astype(np.float32),
                       pose, names[:n])


def sample_visibility(points: np.ndarray, fm: FaceModel | None = None) -> np.ndarray:
    """(68,) landmark visibility of one sample's (536, 3) points."""
    return landmark_visibility(fm or load_face_model(), points)
