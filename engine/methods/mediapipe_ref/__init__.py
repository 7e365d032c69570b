"""`mediapipe`: MediaPipe Face Mesh (mediapipe 0.10.21's bundled model) as the reference method.

Its 468 vertices are the face-model topology as they are. Its 68 landmarks come from a sparse linear map learned
on the training set (weights/mediapipe_lm68.npz, ``python main.py fit-mediapipe-map``): each landmark is an affine
combination (weights summing to 1) of its 24 nearest mesh vertices, so it moves with the mesh under any affine
transform.
"""
from __future__ import annotations

import time

import numpy as np

from engine.facemodel import load_face_model
from engine.geometry.head_pose import euler_from_rotation, rotation_from_euler
from engine.methods.base import Method, MethodInfo, NoFaceError, check_crop, finish_from_points, pose_from_points
from engine.paths import weights_path
from engine.result import AlignmentResult
from engine.visibility_model import load_visibility_model

MAP_FILE = "mediapipe_lm68.npz"


def apply_map(mesh: np.ndarray, neighbours: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(468, 3) mesh -> (68, 3) landmarks."""
    return np.einsum("lk,lkc->lc", weights, mesh[neighbours])


class MediaPipeMethod(Method):
    backend = "mediapipe (TFLite, CPU)"
    provider = "TFLite XNNPACK (CPU)"

    def __init__(self, **_: object) -> None:
        from engine.mp_runtime import FaceMeshRunner

        self.fm = load_face_model()
        z = np.load(weights_path(MAP_FILE))
        self.neighbours, self.map_weights = z["neighbours"], z["weights"]
        self.runner = FaceMeshRunner()
        self.visibility_model = load_visibility_model(METHOD.name)
        from engine.methods.pose_output import PoseOutput

        self.pose_output: PoseOutput | None = PoseOutput(self.name, self.info.pose_source,
                                                         weights_path(MAP_FILE), self.fm.mean)

    def align(self, crop_bgr: np.ndarray) -> AlignmentResult:
        check_crop(crop_bgr)
        t0 = time.perf_counter()
        mesh = self.runner(crop_bgr)
        t1 = time.perf_counter()
        timings = {"network": (t1 - t0) * 1e3}
        if mesh is None:
            raise NoFaceError("Face Mesh found no face in the crop")
        points = np.concatenate([mesh, apply_map(mesh, self.neighbours, self.map_weights)])
        pose = pose_from_points(self.fm, points)   # its "network" rotation: Face Mesh has no pose output
        if self.pose_output is not None:
            pose = euler_from_rotation(self.pose_output.rotations(points[None], rotation_from_euler(*pose)[None])[0])
        timings["decode"] = (time.perf_counter() - t1) * 1e3
        return finish_from_points(self.fm, points, pose, t0, timings, self.name,
                                  visibility_model=self.visibility_model, crop=crop_bgr)

    def close(self) -> None:
        self.runner.close()


# no training recipe: the map is fitted by `main.py fit-mediapipe-map`, the network is MediaPipe's own
METHOD = MethodInfo("mediapipe", "MediaPipe Face Mesh 0.10.21 (reference; 68 points by a learned linear map)",
                    MediaPipeMethod, weights=MAP_FILE, obtain="python main.py fit-mediapipe-map",
                    pose_source="landmarks")   # chosen on aflw_train by `python main.py pose-study`
