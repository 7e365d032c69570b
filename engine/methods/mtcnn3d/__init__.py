"""`mtcnn3d`: MT-CNN 3D (Zhang et al.), a two-stage multi-task CNN that regresses the 3D face shape directly.

The ONNX graph holds both stages, the stage-2 patch extraction (MSIF) and its visibility zeroing; numpy only picks
the outputs. ``stages=1`` returns stage 1's shape and pose (the paper's ablation on the number of stages). The
paper's landmark visibility v_i = N_c . N_i of the final shape goes to ``AlignmentResult.normal_visibility``,
beside the normals + z-buffer visibility (``visible``) that every method's result carries and the app draws.
"""
from __future__ import annotations

import numpy as np

from engine.facemodel import N_MESH
from engine.geometry.mesh import vertex_normals
from engine.methods.base import DecodeResult, Int8Variant, MethodInfo
from engine.methods.onnx_method import OnnxMethod
from engine.result import AlignmentResult

OUTPUTS = ("points", "pose", "normal_visibility", "points_stage1", "pose_stage1")


class MTCNN3DMethod(OnnxMethod):
    def __init__(self, stages: int = 2, **kw) -> None:
        if stages not in (1, 2):
            raise ValueError(f"mtcnn3d has stages 1 and 2, not {stages!r}")
        super().__init__(**kw)
        self.stages = stages
        self._normal_visibility: np.ndarray | None = None

    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        suffix = "" if self.stages == 2 else "_stage1"
        points = outputs[f"points{suffix}"].astype(np.float64)
        pose = outputs[f"pose{suffix}"].astype(np.float64)
        if self.stages == 2:  # the graph computes v_i on the final (stage-2) shape
            self._normal_visibility = outputs["normal_visibility"].astype(np.float64)
        else:                 # the ablation's final shape is stage 1's: same normals, in numpy
            self._normal_visibility = np.stack([
                vertex_normals(p[:N_MESH], self.fm.triangles)[self.fm.lmk_anchor, 2] for p in points])
        return [DecodeResult(p, q, normal_z=v) for p, q, v in zip(points, pose, self._normal_visibility)]

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        return self.decode_batch(outputs)[0]

    def align_batch(self, crops: list[np.ndarray]) -> list[AlignmentResult]:
        results = super().align_batch(crops)
        for r, v in zip(results, self._normal_visibility if results else []):
            r.normal_visibility = v
        return results


# pose_source: chosen on aflw_train by `python main.py pose-study` (docs/head-pose.md)
METHOD = MethodInfo("mtcnn3d", "MT-CNN 3D: two-stage multi-task CNN regressing the 3D shape, pose and landmarks",
                    MTCNN3DMethod, weights="mtcnn3d.onnx", recipe="engine.methods.mtcnn3d.train", outputs=OUTPUTS,
                    int8=Int8Variant(), pose_source="landmarks")
