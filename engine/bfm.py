"""The Basel Face Model as the shared data ships it (``bfm/bfm_3ddfa.npz``): the one place that loads it and names
its vertex subsets. Every user (the face-model build, PRNet's dense layout, CPRFA's DAFI codebook) reads it here.

Arrays: ``mean`` (3V,), ``w_shp`` (3V, 40), ``w_exp`` (3V, 10) over V = 53,215 vertices, ``keypoints`` (204,) the 68
landmarks' x, y, z rows, ``noneck_indices`` / ``noneck_tri`` the face without the neck, ``tri``, ``uv``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.crop_frame import CROP_SIZE, model_to_crop
from engine.paths import data_path


@lru_cache(maxsize=1)
def load_bfm() -> dict[str, np.ndarray]:
    """Every array of the BFM file, loaded once per process."""
    path = data_path("bfm", "bfm_3ddfa.npz")
    if not path.exists():
        raise FileNotFoundError(f"BFM not found at {path} (set FACEALIGN_DATA to the shared data folder)")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def keypoint_rows(bfm: dict[str, np.ndarray]) -> np.ndarray:
    """(68,) vertex index of each AFLW2000-3D landmark (the file stores their x, y, z rows of the flat arrays)."""
    return np.asarray(bfm["keypoints"][::3] // 3, np.int64)


def noneck_rows(bfm: dict[str, np.ndarray]) -> np.ndarray:
    """(38365,) vertex indices of the face without the neck (the surface the dense layouts and the DAFI draw)."""
    return np.asarray(bfm["noneck_indices"], np.int64)


def camera_to_crop(model_pts: np.ndarray, params: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """(..., N, 3) model-frame points and (..., 62) parameters (their first 12: a 3x4 camera) -> crop pixels."""
    cam = np.asarray(params, np.float64)[..., :12].reshape(*np.shape(params)[:-1], 3, 4)
    v = np.asarray(model_pts, np.float64) @ np.swapaxes(cam[..., :3], -1, -2) + cam[..., None, :, 3]
    return model_to_crop(v, size)


def bfm_vertices(bfm: dict[str, np.ndarray], params: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(V, 3) crop-pixel BFM vertices (all, or ``rows``) of one label's 62 parameters."""
    rows = np.arange(len(bfm["uv"])) if rows is None else np.asarray(rows)
    params = np.asarray(params, np.float64)
    s = (bfm["mean"].reshape(-1, 3)[rows].astype(np.float64)
         + bfm["w_shp"].reshape(-1, 3, 40)[rows].astype(np.float64) @ params[12:52]
         + bfm["w_exp"].reshape(-1, 3, 10)[rows].astype(np.float64) @ params[52:62])
    return camera_to_crop(s, params)
