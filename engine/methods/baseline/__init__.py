"""`baseline`: a compact MobileNet-like CNN regressing the 62 face-model parameters (pose + 50 coefficients).

The accuracy floor every seed method must beat. Inference is ONNX Runtime + numpy; the torch network and its
training recipe sit beside it (network.py, train.py) and are imported only for training and export.
"""
from __future__ import annotations

import numpy as np

from engine.geometry.rotation import camera_to_euler
from engine.methods.base import DecodeResult, MethodInfo
from engine.methods.onnx_method import OnnxMethod


class BaselineMethod(OnnxMethod):
    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        params = outputs["params"][0].astype(np.float64)
        return DecodeResult(self.fm.points(params), camera_to_euler(params[:12]))


METHOD = MethodInfo("baseline", "MobileNet-like 3DMM parameter regressor (accuracy floor)", BaselineMethod,
                    weights="baseline.onnx", recipe="engine.methods.baseline.train", outputs=("params",))
