"""Shared front of the ONNX-backed methods: preprocessing, one session, timings, the common tail."""
from __future__ import annotations

import time

import numpy as np

from engine.facemodel import load_face_model
from engine.methods.base import Method, finish_from_points, frontal_shape
from engine.paths import weights_path
from engine.result import AlignmentResult
from engine.runtime import OnnxModel, crop_to_input


class OnnxMethod(Method):
    backend = "onnxruntime"
    dense_faces: np.ndarray | None = None

    def __init__(self, threads: int | None = None, providers: list[str] | None = None) -> None:
        self.fm = load_face_model()
        self.model = OnnxModel(weights_path(self.weights), threads=threads, providers=providers)
        self.provider = self.model.provider

    def decode(self, outputs: dict[str, np.ndarray]) -> tuple:
        """Network outputs -> (536, 3) crop points, (yaw, pitch, roll), optional dense surface[, optional
        (536, 3) pose-free shape, model frame]."""
        raise NotImplementedError

    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        out = self.model(crop_to_input(crop_bgr))
        t1 = time.perf_counter()
        timings["network"] = (t1 - t0) * 1e3
        points, pose, dense, *shape = self.decode(out)
        timings["decode"] = (time.perf_counter() - t1) * 1e3
        res = finish_from_points(self.fm, points, pose, t0, timings, self.name, dense=dense)
        res.dense_faces = self.dense_faces if dense is not None else None
        if shape:
            res.shape_frontal = frontal_shape(self.fm, shape[0])
        return res
