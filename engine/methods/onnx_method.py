"""Shared front of the ONNX-backed methods: preprocessing, one session, timings, the common tail."""
from __future__ import annotations

import time

import numpy as np

from engine.facemodel import N_MESH, load_face_model
from engine.geometry.head_pose import euler_from_rotation, rotation_from_euler
from engine.methods.base import DecodeResult, Method, check_crop, frontal_shape_batch
from engine.paths import weights_path
from engine.result import AlignmentResult
from engine.runtime import OnnxModel, crop_to_input
from engine.visibility import landmark_visibility_batch, warm_up_compiled_tail
from engine.visibility_model import load_visibility_model


# diag(1, -1, 1) R diag(1, -1, 1) as an element-wise sign pattern
_FLIP_Y_BOTH_SIDES = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, 1.0]])


class OnnxMethod(Method):
    backend = "onnxruntime"
    dense_faces: np.ndarray | None = None

    def __init__(self, threads: int | None = None, providers: list[str] | None = None,
                 weights_file: str | None = None) -> None:
        """``weights_file``: another file under weights/ than the method's own (its INT8 variant)."""
        self.fm = load_face_model()
        self.quantized = weights_file is not None and weights_file.endswith(".int8.onnx")
        self.model = OnnxModel(weights_path(weights_file or self.weights), threads=threads, providers=providers)
        self.provider = self.model.provider
        missing = [n for n in self.info.outputs if n not in self.model.output_names]
        if missing:
            raise ValueError(f"{self.model.path} has outputs {self.model.output_names}, but method {self.name!r} "
                             f"declares {list(self.info.outputs)} (missing {missing}): re-export it")
        from engine.methods.pose_output import PoseOutput

        # checked against the float weights: an INT8 variant approximates that network, so it shares its correction
        self.pose_output: PoseOutput | None = PoseOutput(self.name, self.info.pose_source, self.info.weights_path,
                                                         self.fm.mean)
        # load the tail's compiled loops now (~0.35 s once per process: numba and its on-disk cache), not on the
        # first face, whose time the app plots
        warm_up_compiled_tail(self.fm)
        # the shared test recalibrated on human flags for this method (weights/visibility_NAME.npz), if fitted
        self.visibility_model = load_visibility_model(self.name)

    def decode(self, outputs: dict[str, np.ndarray]) -> DecodeResult:
        """Network outputs (batch of one) -> the face's points, pose and optional dense surface / shape."""
        raise NotImplementedError

    def decode_batch(self, outputs: dict[str, np.ndarray]) -> list[DecodeResult]:
        """Network outputs for B faces -> B decode results. Face by face through ``decode`` unless a method
        vectorises it over the batch (same maths)."""
        n = len(next(iter(outputs.values())))
        return [self.decode({k: v[i:i + 1] for k, v in outputs.items()}) for i in range(n)]

    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        return self.align_batch([crop_bgr])[0]

    def extra_inputs(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """(the graph's inputs besides the image ``x`` (B, 3, 120, 120), the ms each stage that made them took for
        the whole batch). None here; a method whose graph also reads another network's output (CPRFA's CPR-H
        fusion: mtcnn3d's landmarks) runs that network here and names its stage."""
        return {}, {}

    def network_inputs(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """(every input of the graph by name for the image ``x``, the stages that made them: ``extra_inputs``)."""
        extra, stages = self.extra_inputs(x)
        return {self.model.input_name: x, **extra}, stages

    def run_network(self, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """(the graph's outputs, the batch's ms per stage: the extra inputs' own stages, then ``network``)."""
        extra, stages = self.extra_inputs(x)
        t0 = time.perf_counter()
        out = self.model.run({self.model.input_name: x, **extra}) if extra else self.model(x)
        stages["network"] = (time.perf_counter() - t0) * 1e3
        return out, stages

    def align_batch(self, crops: list[np.ndarray]) -> list[AlignmentResult]:
        """Every face of a frame in one ONNX call, one batched decode and one batched visibility test. Each
        result's timings are its share (1/B) of the batch's stages."""
        if len(crops) == 0:
            return []
        for crop in crops:
            check_crop(crop)
        t0 = time.perf_counter()
        out, network_ms = self.run_network(crop_to_input(np.stack(crops)))
        t1 = time.perf_counter()
        decoded = self.decode_batch(out)
        t2 = time.perf_counter()
        points = np.stack([d.points for d in decoded])
        rotations = None
        if all(d.rotation is not None for d in decoded):
            # the pose's model-frame rotation R in the pixel frame (y flipped): F R F, a sign pattern
            rotations = np.stack([d.rotation for d in decoded]) * _FLIP_Y_BOTH_SIDES
        normal_z = np.stack([d.normal_z for d in decoded]) if all(d.normal_z is not None for d in decoded) else None
        visible = landmark_visibility_batch(self.fm, points, rotations, normal_z, self.visibility_model,
                                            np.stack(crops))
        t3 = time.perf_counter()
        with_shape = [i for i, d in enumerate(decoded) if d.shape is not None]
        frontal: dict[int, np.ndarray] = {}
        if with_shape:
            shapes = frontal_shape_batch(self.fm, np.stack([decoded[i].shape for i in with_shape]))
            frontal = dict(zip(with_shape, shapes))
        poses = np.stack([np.asarray(d.pose, np.float64) for d in decoded])
        if self.pose_output is not None:   # None: the network's own pose, uncorrected (pose-study's baseline)
            network = np.stack([rotation_from_euler(*p) for p in poses])
            poses = euler_from_rotation(self.pose_output.rotations(points, network))
        results = []
        for i, (dec, pts, vis) in enumerate(zip(decoded, points, visible)):
            results.append(AlignmentResult(
                landmarks=pts[N_MESH:].copy(), visible=vis, mesh=pts[:N_MESH].copy(),
                pose=poses[i], dense=dec.dense,
                dense_faces=self.dense_faces if dec.dense is not None else None, method=self.name,
                shape_frontal=frontal.get(i)))
        t4 = time.perf_counter()
        n = len(crops)
        # the network stages (a chained method's first network, then its own graph; input conversion counted in
        # the last) sum to t1 - t0
        stages = {k: v / n for k, v in network_ms.items()}
        stages["network"] += ((t1 - t0) * 1e3 - sum(network_ms.values())) / n
        timings = {**stages, "decode": ((t2 - t1) + (t4 - t3)) * 1e3 / n,
                   "visibility": (t3 - t2) * 1e3 / n, "total": (t4 - t0) * 1e3 / n}
        for r in results:
            r.timings = dict(timings)
        return results
