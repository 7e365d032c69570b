"""The method interface and the registry. A method takes a 120x120 BGR crop and returns an AlignmentResult."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from engine.facemodel import N_MESH, FaceModel
from engine.geometry.rotation import matrix_to_euler
from engine.result import AlignmentResult
from engine.visibility import landmark_visibility


class Method(ABC):
    name: str = ""
    backend: str = ""         # "onnxruntime", "mediapipe"
    weights: str = ""         # file name under weights/, or a description
    provider: str = "CPUExecutionProvider"

    @abstractmethod
    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        """Align the face in a 120x120 BGR crop framed by the shared crop policy."""

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class MethodInfo:
    name: str
    description: str
    factory: Callable[..., Method]
    weights: str


_REGISTRY: dict[str, MethodInfo] = {}


def register(name: str, description: str, weights: str) -> Callable:
    def deco(factory: Callable[..., Method]) -> Callable[..., Method]:
        _REGISTRY[name] = MethodInfo(name, description, factory, weights)
        return factory
    return deco


def registry() -> dict[str, MethodInfo]:
    import engine.methods  # noqa: F401  (registers the built-in methods)

    return dict(_REGISTRY)


def create(name: str, **kwargs) -> Method:
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown method {name!r}; known: {', '.join(sorted(reg))}")
    return reg[name].factory(**kwargs)


def _rotation_from_mean(fm: FaceModel, pts: np.ndarray) -> np.ndarray:
    """Rotation of the best similarity taking the mean shape onto (N, 3) right-handed, y-up ``pts``."""
    n = min(len(pts), fm.n_points)
    src = fm.mean[:n].astype(np.float64)
    dst = np.asarray(pts[:n], np.float64)
    src_c, dst_c = src - src.mean(0), dst - dst.mean(0)
    u, _, vt = np.linalg.svd(dst_c.T @ src_c)
    d = np.sign(np.linalg.det(u @ vt))
    return u @ np.diag([1.0, 1.0, d]) @ vt


def frontal_shape(fm: FaceModel, shape: np.ndarray) -> np.ndarray:
    """(468, 3) a model-frame shape with its residual rotation from the mean removed, in the pixel frame's axes
    (y down): the subject's own face seen from the front."""
    mesh = np.asarray(shape[:N_MESH], np.float64)
    mesh = (mesh - mesh.mean(0)) @ _rotation_from_mean(fm, mesh)
    return mesh * np.array([1.0, -1.0, 1.0])


def pose_from_points(fm: FaceModel, points: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) of (536 or 468, 3) pixel-frame points: rotation of the best similarity from the mean.

    Used by methods that predict points rather than a camera (and by MediaPipe).
    """
    # back to a right-handed, y-up frame
    return matrix_to_euler(_rotation_from_mean(fm, np.asarray(points, np.float64) * np.array([1.0, -1.0, 1.0])))


def finish_from_points(fm: FaceModel, points: np.ndarray, pose: np.ndarray, t0: float, timings: dict,
                       name: str, confidence: float = 1.0, dense: np.ndarray | None = None) -> AlignmentResult:
    """Shared tail of every method: landmark visibility from its own mesh, timings, the result."""
    t1 = time.perf_counter()
    vis = landmark_visibility(fm, points)
    timings["visibility"] = (time.perf_counter() - t1) * 1e3
    timings["total"] = (time.perf_counter() - t0) * 1e3
    return AlignmentResult(landmarks=points[N_MESH:].copy(), visible=vis, mesh=points[:N_MESH].copy(),
                           pose=np.asarray(pose, np.float64), confidence=confidence, timings=timings,
                           dense=dense, method=name)
