"""`mtcnn3d`: MT-CNN 3D (Zhang et al.), a two-stage multi-task CNN that regresses the 3D face shape directly.

The ONNX graph holds both stages, the stage-2 patch extraction (MSIF) and its visibility zeroing; numpy only picks
the outputs. ``stages=1`` returns stage 1's shape and pose (the paper's ablation on the number of stages). The
paper's landmark visibility v_i = N_c . N_i of the final shape is kept in ``normal_visibility`` beside the z-buffer
visibility that every method's result carries.
"""
from __future__ import annotations

import numpy as np

from engine.methods.base import DecodeResult, MethodInfo
from engine.methods.onnx_method import OnnxMethod

OUTPUTS = ("points", "pose", "normal_visibility", "points_stage1", "pose_stage1")


class MTCNN3DMethod(OnnxMethod):
    def __init__(self, stages: int = 2, **kw) -> None:
        if stages not in (1, 2):
            raise ValueError(f"mtcnn3d has stages 1 and 2, not {stages!r}")
        super().__init__(**kw)
        self.stages = stages
        self.normal_visibility: np.ndarray | None = None

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        suffix = "" if self.stages == 2 else "_stage1"
        points = outputs[f"points{suffix}"][0].astype(np.float64)
        # v_i = N_c . N_i of the final shape (the paper's definition; > 0 = visible), last face aligned
        self.normal_visibility = outputs["normal_visibility"][0].astype(np.float64)
        return DecodeResult(points, outputs[f"pose{suffix}"][0].astype(np.float64))


METHOD = MethodInfo("mtcnn3d", "MT-CNN 3D: two-stage multi-task CNN regressing the 3D shape, pose and landmarks",
                    MTCNN3DMethod, weights="mtcnn3d.onnx", recipe="engine.methods.mtcnn3d.train", outputs=OUTPUTS)
