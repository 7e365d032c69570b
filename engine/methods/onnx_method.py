"""Shared front of the ONNX-backed methods: preprocessing, one session, timings, the common tail."""
from __future__ import annotations

import time

import numpy as np

from engine.facemodel import load_face_model
from engine.methods.base import DecodeResult, Method, finish_from_points, frontal_shape  # noqa: F401
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
        missing = [n for n in self.info.outputs if n not in self.model.output_names]
        if missing:
            raise ValueError(f"{self.model.path} has outputs {self.model.output_names}, but method {self.name!r} "
                             f"declares {list(self.info.outputs)} (missing {missing}): re-export it")

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        """Network outputs (batch of one) -> the face's points, pose and optional dense surface / shape."""
        raise NotImplementedError

    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        out = self.model(crop_to_input(crop_bgr))
        t1 = time.perf_counter()
        timings["network"] = (t1 - t0) * 1e3
        dec = self.decode(out)
        timings["decode"] = (time.perf_counter() - t1) * 1e3
        res = finish_from_points(self.fm, dec.points, dec.pose, t0, timings, self.name, dense=dec.dense)
        res.dense_faces = self.dense_faces if dec.dense is not None else None
        if dec.shape is not None:
            res.shape_frontal = frontal_shape(self.fm, dec.shape)
        return res
