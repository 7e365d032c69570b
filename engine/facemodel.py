"""The project's one 3D face model: MediaPipe Face Mesh topology (468 vertices) plus the 68 AFLW2000-3D landmarks.

Shape and expression bases are the shared BFM's (40 identity + 10 expression) sampled at those 468 + 68 points, so
the teacher's 62 parameters (12 camera, 40 shape, 10 expression) are valid parameters of this model.
Data: weights/face_model.npz, built by ``python main.py build-face-model``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.crop_frame import CROP_SIZE, model_to_crop
from engine.paths import weights_path

N_MESH = 468
N_LMK = 68
N_SHAPE = 40
N_EXP = 10
N_PARAMS = 12 + N_SHAPE + N_EXP

# 68-point mirror permutation of the iBUG/AFLW2000-3D markup (jaw, brows, nose, eyes, mouth).
LMK68_FLIP = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48] + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65]
)
# 68-point groups, used by weighted losses and masks.
LMK68_GROUPS = {
    "jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
    "eyes": range(36, 48), "mouth": range(48, 68),
}


@dataclass(frozen=True)
class FaceModel:
    mean: np.ndarray          # (536, 3) model frame (x right, y up, z toward camera)
    w_shape: np.ndarray       # (536, 3, 40)
    w_exp: np.ndarray         # (536, 3, 10)
    triangles: np.ndarray     # (T, 3) into the 468 mesh vertices, counter-clockwise seen from outside
    uv: np.ndarray            # (468, 2) in [0, 1], u right, v up
    lmk_uv: np.ndarray        # (68, 2) the landmarks' BFM UVs
    mesh_flip: np.ndarray     # (468,) mirror permutation of the mesh vertices
    lmk_flip: np.ndarray      # (68,)
    lmk_anchor: np.ndarray    # (68,) nearest mesh vertex to each landmark (borrows its normal)
    bfm_index: np.ndarray     # (468,) BFM vertex behind each mesh vertex (provenance)
    correspondence_residual_px: float

    @property
    def n_points(self) -> int:
        return self.mean.shape[0]

    def shape(self, alpha_shp: np.ndarray, alpha_exp: np.ndarray) -> np.ndarray:
        """(536, 3) model-frame points for the given coefficients."""
        return self.mean + self.w_shape @ np.asarray(alpha_shp, np.float32) + self.w_exp @ np.asarray(alpha_exp, np.float32)

    def points(self, params: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
        """(536, 3) crop-pixel points (468 mesh then 68 landmarks) of 62 parameters."""
        params = np.asarray(params, dtype=np.float64)
        cam = params[:12].reshape(3, 4)
        s = self.shape(params[12:12 + N_SHAPE], params[12 + N_SHAPE:N_PARAMS])
        return model_to_crop(s @ cam[:, :3].T + cam[:, 3], size)


def model_file() -> Path:
    return weights_path("face_model.npz")


@lru_cache(maxsize=2)
def load_face_model(path: str | None = None) -> FaceModel:
    p = Path(path) if path else model_file()
    if not p.exists():
        raise FileNotFoundError(f"face model not found at {p}; build it with `python main.py build-face-model`")
    z = np.load(p)
    return FaceModel(
        mean=z["mean"].astype(np.float32), w_shape=z["w_shape"].astype(np.float32),
        w_exp=z["w_exp"].astype(np.float32), triangles=z["triangles"].astype(np.int32),
        uv=z["uv"].astype(np.float32), lmk_uv=z["lmk_uv"].astype(np.float32), mesh_flip=z["mesh_flip"].astype(np.int64),
        lmk_flip=z["lmk_flip"].astype(np.int64), lmk_anchor=z["lmk_anchor"].astype(np.int64),
        bfm_index=z["bfm_index"].astype(np.int64),
        correspondence_residual_px=float(z["correspondence_residual_px"]),
    )
