"""The one result type every method returns."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from engine.geometry.projection import crop_to_image


@dataclass
class AlignmentResult:
    landmarks: np.ndarray            # (68, 3) x, y, z in pixels (crop or image, see ``frame``)
    visible: np.ndarray              # (68,) bool: False = self-occluded
    mesh: np.ndarray                 # (468, 3) vertices in the face-model topology, same frame
    pose: np.ndarray                 # (3,) yaw, pitch, roll in degrees (engine/geometry/head_pose.py's convention)
    confidence: float = 1.0
    timings: dict[str, float] = field(default_factory=dict)  # stage -> milliseconds
    dense: np.ndarray | None = None  # optional denser surface (e.g. PRNet's position map), (M, 3)
    dense_faces: np.ndarray | None = None  # (F, 3) triangles over ``dense``
    method: str = ""
    frame: str = "crop"              # "crop" (120x120 input) or "image"
    # (468, 3) the subject's own pose-free 3D shape (y down, any scale) where the method models one (3DSTN's
    # TPS-warped face): the frontalized view renders it instead of the mean shape
    shape_frontal: np.ndarray | None = None
    # (68,) N_c . N_i, the z of each landmark's unit normal on the method's final shape, where the method's paper
    # defines visibility by it (MT-CNN 3D: visible when > 0); ``visible`` stays the shared normals + z-buffer test
    normal_visibility: np.ndarray | None = None

    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) camera-from-head rotation, x right / y up / z toward the camera in both frames (the convention
        of engine/geometry/head_pose.py and docs/head-pose.md), of ``pose``: the one rotation every writer
        exports. Derived from ``pose`` on every read, so the two never disagree."""
        from engine.geometry.head_pose import rotation_from_euler

        return rotation_from_euler(*self.pose)

    def to_image(self, roi_box: np.ndarray, size: int = 120) -> "AlignmentResult":
        """The same result in the original image's pixels, given the crop box the method saw."""
        if self.frame == "image":
            return self
        return replace(
            self, landmarks=crop_to_image(self.landmarks, roi_box, size), mesh=crop_to_image(self.mesh, roi_box, size),
            dense=None if self.dense is None else crop_to_image(self.dense, roi_box, size), frame="image",
            dense_faces=self.dense_faces,
            timings=dict(self.timings),
        )
