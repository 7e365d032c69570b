"""`pifa`: Pose-Invariant Face Alignment with a single CNN (Jourabloo, Ye, Liu, Ren, ICCV 2017).

Six visualization blocks refine a 3D fit P = {M, p} (weak-perspective camera + 50 face-model coefficients), each
seeing a rendering of the current fit through the differentiable visualization layer. ONNX gives the final P and
its 536 crop-pixel points (the visualization layer and the six blocks are all inside the graph); numpy reads the
pose from M. The torch network and its recipe (network.py, train.py) are imported only for training and export.
"""
from __future__ import annotations

import numpy as np

from engine.geometry.rotation import camera_to_euler_batch
from engine.methods.base import DecodeResult, Int8Variant, MethodInfo
from engine.methods.onnx_method import OnnxMethod


def pose_from_cameras(params: np.ndarray) -> np.ndarray:
    """(B, 3) yaw, pitch, roll of PIFA's M (the first 8 of each row of (B, 58) parameters): rows m1, m2 act on
    the face model's axes (y up), so they are the first two rows of a 3DDFA-style camera, all its rotation needs."""
    m = np.asarray(params, np.float64)[:, :8].reshape(-1, 2, 4)
    return camera_to_euler_batch(np.concatenate([m, np.zeros_like(m[:, :1])], axis=1))


def pose_from_camera(params: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) of one face's parameters."""
    return pose_from_cameras(np.asarray(params)[None])[0]


class PIFAMethod(OnnxMethod):
    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        points = outputs["points"].astype(np.float64)
        return [DecodeResult(p, pose) for p, pose in zip(points, pose_from_cameras(outputs["params"]))]

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        return self.decode_batch(outputs)[0]


# pose_source: chosen on aflw_train by `python main.py pose-study` (docs/head-pose.md)
METHOD = MethodInfo("pifa", "PIFA: six visualization blocks with a differentiable visualization layer", PIFAMethod,
                    weights="pifa.onnx", recipe="engine.methods.pifa.train", outputs=("params", "points"),
                    int8=Int8Variant(), pose_source="landmarks")
