"""`prnet`: UV position-map regression (Feng et al., ECCV 2018) in the face model's UV layout.

The network outputs a 64x64 map of x, y, z (crop pixels / 120); the 468 mesh vertices and 68 landmarks are read
from it at their UVs, and the whole map is offered as the densest surface (``AlignmentResult.dense``).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from engine.methods.base import DecodeResult, MethodInfo, pose_from_points
from engine.methods.onnx_method import OnnxMethod

MAP_SIZE = 64


@lru_cache(maxsize=1)
def layout():
    from engine.facemodel import load_face_model
    from engine.geometry.uvmap import build_layout

    return build_layout(load_face_model(), MAP_SIZE)


class PRNetMethod(OnnxMethod):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.layout = layout()
        self.dense_faces = self.layout.grid_faces()

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        pmap = outputs["position_map"][0].transpose(1, 2, 0).astype(np.float64) * 120.0
        points = self.layout.sample(pmap)
        dense = pmap[self.layout.face_mask]
        return DecodeResult(points, pose_from_points(self.fm, points), dense=dense)


METHOD = MethodInfo("prnet", "PRNet: UV position-map regression (64x64 map)", PRNetMethod, weights="prnet.onnx",
                    recipe="engine.methods.prnet.train", outputs=("position_map",))
