"""`3dstn`: 3D spatial transformer (Bhagavatula et al., ICCV 2017) in the face model's space.

ONNX gives the camera, the TPS-warped generic face, its projection and the refined 2D landmarks; numpy then
regresses the final 3D model from the refined landmarks (back-projection + TPS re-warp, stn3d/geometry.py).
``refine=False`` returns the unrefined projection (the paper's ablation).
"""
from __future__ import annotations

import numpy as np

from engine.geometry.rotation import matrix_to_euler_batch
from engine.methods.base import DecodeResult, Int8Variant, MethodInfo, pose_from_points, rotations_from_points_batch
from engine.methods.onnx_method import OnnxMethod


class STN3DMethod(OnnxMethod):
    def __init__(self, refine: bool = True, **kw) -> None:
        super().__init__(**kw)
        self.refine = refine

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        from engine.methods.stn3d.geometry import project, rewarp_to_landmarks

        camera = outputs["camera"][0].astype(np.float64)
        shape = outputs["shape"][0].astype(np.float64)
        if not self.refine:
            points = outputs["points"][0].astype(np.float64)
        else:
            shape = rewarp_to_landmarks(camera, shape, outputs["refined"][0].astype(np.float64))
            points = project(camera, shape)
        # the warped generic face, before the camera, is the subject's own frontal shape (the frontal view uses it)
        return DecodeResult(points, pose_from_points(self.fm, points), shape=shape)

    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        """``decode`` for every face at once (batched rays, TPS solve and warp)."""
        from engine.methods.stn3d.geometry import project, rewarp_to_landmarks

        camera = outputs["camera"].astype(np.float64)
        shape = outputs["shape"].astype(np.float64)
        if not self.refine:
            points = outputs["points"].astype(np.float64)
        else:
            shape = rewarp_to_landmarks(camera, shape, outputs["refined"].astype(np.float64))
            points = project(camera, shape)
        rotations = rotations_from_points_batch(self.fm, points)
        poses = matrix_to_euler_batch(rotations)
        return [DecodeResult(p, pose, shape=s, rotation=r) for p, pose, s, r in zip(points, poses, shape, rotations)]


# INT8: the one fully connected head regresses the camera and the TPS warp together, and its 8-bit error cost 0.05
# balanced NME on aflw2000_dev (4.5659 with it quantized, 4.5180 kept float, both with percentile calibration; float
# model 4.4899), so the quantizer leaves it in float
INT8_KEEP_FLOAT = ("/net/head/Gemm",)

# pose_source: chosen on aflw_train by `python main.py pose-study` (docs/head-pose.md)
METHOD = MethodInfo("3dstn", "3DSTN: camera + 3D TPS warp + landmark refinement", STN3DMethod, weights="3dstn.onnx",
                    recipe="engine.methods.stn3d.train", outputs=("camera", "shape", "points", "refined"),
                    int8=Int8Variant(keep_float=INT8_KEEP_FLOAT), pose_source="points")
