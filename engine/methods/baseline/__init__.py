"""`baseline`: a compact MobileNet-like CNN regressing the 62 face-model parameters (pose + 50 coefficients).

The accuracy floor every seed method must beat. Inference is ONNX Runtime + numpy; the torch network and its
training recipe sit beside it (network.py, train.py) and are imported only for training and export.
"""
from __future__ import annotations

import numpy as np

from engine.geometry.rotation import camera_to_euler
from engine.methods.base import register
from engine.methods.onnx_method import OnnxMethod


@register("baseline", "MobileNet-like 3DMM parameter regressor (accuracy floor)", "baseline.onnx")
class BaselineMethod(OnnxMethod):
    name = "baseline"
    weights = "baseline.onnx"

    def decode(self, outputs):
        params = outputs["params"][0].astype(np.float64)
        return self.fm.points(params), camera_to_euler(params[:12]), None
