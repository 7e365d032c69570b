"""`baseline`: a compact MobileNet-like CNN regressing the 62 face-model parameters (pose + 50 coefficients).

The accuracy floor every seed method must beat. Inference is ONNX Runtime + numpy; the torch network and its
training recipe sit beside it (network.py, train.py) and are imported only for training and export.
"""
from __future__ import annotations

import numpy as np

from engine.facemodel import N_EXP, N_SHAPE
from engine.geometry.projection import model_to_crop
from engine.geometry.rotation import camera_to_euler, camera_to_euler_batch
from engine.methods.base import DecodeResult, Int8Variant, MethodInfo
from engine.methods.onnx_method import OnnxMethod


class BaselineMethod(OnnxMethod):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        # (536 * 3, 50) shape + expression basis, float32 like fm.shape: built once, not per batch
        self.basis_t = np.ascontiguousarray(
            np.concatenate([self.fm.w_shape, self.fm.w_exp], axis=2).reshape(-1, N_SHAPE + N_EXP).T)

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        params = outputs["params"][0].astype(np.float64)
        return DecodeResult(self.fm.points(params), camera_to_euler(params[:12]))

    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        """``decode`` for every face at once: the face model's points as one matrix product over the batch."""
        params = outputs["params"].astype(np.float64)
        fm = self.fm
        coef = params[:, 12:].astype(np.float32)                       # fm.shape's float32 coefficients
        shapes = fm.mean + (coef @ self.basis_t).reshape(len(params), -1, 3)
        cam = params[:, :12].reshape(-1, 3, 4)
        points = model_to_crop(shapes @ np.swapaxes(cam[:, :, :3], 1, 2) + cam[:, None, :, 3])
        return [DecodeResult(pts, pose) for pts, pose in zip(points, camera_to_euler_batch(params[:, :12]))]


# pose_source: chosen on aflw_train by `python main.py pose-study` (docs/head-pose.md)
METHOD = MethodInfo("baseline", "MobileNet-like 3DMM parameter regressor (accuracy floor)", BaselineMethod,
                    weights="baseline.onnx", recipe="engine.methods.baseline.train", outputs=("params",),
                    int8=Int8Variant(), pose_source="landmarks")
