"""`pifa`: Pose-Invariant Face Alignment with a single CNN (Jourabloo, Ye, Liu, Ren, ICCV 2017).

Six visualization blocks refine a 3D fit P = {M, p} (weak-perspective camera + 50 face-model coefficients), each
seeing a rendering of the current fit through the differentiable visualization layer. ONNX gives the final P and
its 536 crop-pixel points (the visualization layer and the six blocks are all inside the graph); numpy reads the
pose from M. The torch network and its recipe (network.py, train.py) are imported only for training and export.
"""
from __future__ import annotations

import numpy as np

from engine.geometry.rotation import camera_to_euler
from engine.methods.base import DecodeResult, MethodInfo
from engine.methods.onnx_method import OnnxMethod


def pose_from_camera(params: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) of PIFA's M (its first 8 entries): rows m1, m2 act on the face model's axes (y up)."""
    m = np.asarray(params[:8], np.float64).reshape(2, 4)
    r3 = np.cross(m[0, :3], m[1, :3])
    r3 *= np.sqrt(np.linalg.norm(m[0, :3]) * np.linalg.norm(m[1, :3])) / max(np.linalg.norm(r3), 1e-12)
    return camera_to_euler(np.concatenate([m, np.append(r3, 0.0)[None]]).reshape(12))


class PIFAMethod(OnnxMethod):
    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        points = outputs["points"][0].astype(np.float64)
        return DecodeResult(points, pose_from_camera(outputs["params"][0]))


METHOD = MethodInfo("pifa", "PIFA: six visualization blocks with a differentiable visualization layer", PIFAMethod,
                    weights="pifa.onnx", recipe="engine.methods.pifa.train", outputs=("params", "points"))
