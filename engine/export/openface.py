"""OpenFace 2.x CSV semantics: a pinhole camera, camera-space millimetres, OpenFace's rigid parameters.

OpenFace's frame (its RecorderCSV / GetPose / GetShape): the camera at the origin, x right, y down, z away from
the camera (so every face has Z > 0), lengths in millimetres. Its default intrinsics, when none are given
(SequenceCapture::SetCameraIntrinsics): cx, cy = the image centre; fx = fy = the mean of 500 * width / 640 and
500 * height / 480.

The engine's points are in image pixels (x right, y down, z toward the camera on x's scale): a scaled-orthographic
view of the face. This module turns one face's 68 such points into OpenFace's quantities (docs/exports.md):

- ``p_scale, p_rx, p_ry, p_rz, p_tx, p_ty``: the best similarity (least squares, Umeyama) taking the face model's
  mean 68 landmarks, in millimetres, onto the method's 68 points: image pixels per millimetre, the rotation as
  OpenFace's Euler angles (R = Rx Ry Rz, radians), and the image position of the model's origin (the landmarks'
  centroid) -- OpenFace's weak-perspective ``params_global``.
- ``pose_Tx, pose_Ty, pose_Tz``: the camera-frame position (mm) of the landmarks' centroid: the translation whose
  pinhole projection of the method's posed 3D points (centred, scaled to mm by 1 / p_scale) best fits its 2D
  landmarks (linear least squares; OpenFace refines its weak-perspective guess fx / p_scale with solvePnP, here
  the shape and its orientation stay the method's and only the translation is solved).
- ``X_i, Y_i, Z_i``: OpenFace's GetShape: Z_i = pose_Tz + the landmark's own depth (mm) relative to the centroid,
  X_i, Y_i = the 2D landmark back-projected through the camera at that depth.
- ``pose_Rx, pose_Ry, pose_Rz``: the method's head pose (the JSON's yaw, pitch, roll), re-expressed in OpenFace's
  frame and Euler convention (``openface_rotation``: the one place that converts pose for the CSV).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from engine.geometry.head_pose import (TO_CAMERA_AXES, csv_pose_radians, openface_euler_to_rotation,  # noqa: F401
                                       rotation_to_openface_euler)
from engine.geometry.rotation import best_similarity, euler_to_matrix

# the face model's coordinates are the Basel Face Model's micrometres (its mean's outer eye corners lie 86 mm apart)
MODEL_UNITS_PER_MM = 1000.0
# the engine's pixel frame (x right, y down, z toward the camera) needs only its depth turned around to be
# OpenFace's camera axes (the model frame's turn, TO_CAMERA_AXES, is in engine/geometry/head_pose.py)
PIXELS_TO_CAMERA_AXES = np.diag([1.0, 1.0, -1.0])


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels."""
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def for_image(cls, width: int, height: int, fx: float | None = None, fy: float | None = None,
                  cx: float | None = None, cy: float | None = None) -> "Camera":
        """The given intrinsics, OpenFace's defaults for what is not given (fy = fx when only fx is given)."""
        if fx is None and fy is None:
            fx = fy = (500.0 * width / 640.0 + 500.0 * height / 480.0) / 2.0
        elif fy is None:
            fy = fx
        elif fx is None:
            fx = fy
        cam = cls(float(fx), float(fy), float(width / 2.0 if cx is None else cx),
                  float(height / 2.0 if cy is None else cy))
        if not (cam.fx > 0 and cam.fy > 0):
            raise ValueError(f"focal lengths must be positive pixels, got fx={cam.fx}, fy={cam.fy}")
        return cam


@dataclass(frozen=True)
class OpenFaceGeometry:
    """One face in OpenFace's terms (see the module docstring)."""
    pose_t: np.ndarray        # (3,) mm, camera frame
    pose_r: np.ndarray        # (3,) rad: Rx, Ry, Rz
    points_mm: np.ndarray     # (68, 3) X, Y, Z: mm, camera frame
    p_scale: float            # image pixels per mm
    p_r: np.ndarray           # (3,) rad: the similarity's rotation, Rx, Ry, Rz
    p_t: np.ndarray           # (2,) image pixels of the model origin


@lru_cache(maxsize=1)
def model_landmarks_mm() -> np.ndarray:
    """(68, 3) the face model's mean landmarks in mm, camera axes, centred on their centroid."""
    from engine.facemodel import N_MESH, load_face_model

    lm = load_face_model().mean[N_MESH:].astype(np.float64) / MODEL_UNITS_PER_MM
    lm = lm @ TO_CAMERA_AXES
    return lm - lm.mean(0)


def openface_rotation(pose_deg: np.ndarray) -> np.ndarray:
    """The method's (yaw, pitch, roll) degrees (the engine's convention, engine/geometry/rotation.py) as OpenFace's
    pose_Rx, pose_Ry, pose_Rz radians: the same head rotation, in OpenFace's camera axes."""
    return np.array(csv_pose_radians(euler_to_matrix(*np.asarray(pose_deg, np.float64))))


def openface_geometry(landmarks_px: np.ndarray, pose_deg: np.ndarray, camera: Camera) -> OpenFaceGeometry:
    """OpenFace's CSV quantities of one face from its (68, 3) image-pixel landmarks and its pose (degrees)."""
    pts = np.asarray(landmarks_px, np.float64)
    cam_axes = pts @ PIXELS_TO_CAMERA_AXES             # x right, y down, z away; still pixels
    s, rot, t = best_similarity(model_landmarks_mm(), cam_axes)
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"cannot scale the landmarks to millimetres (scale {s})")
    q = (cam_axes - cam_axes.mean(0)) / s              # the posed face in mm around its centroid
    u, v = pts[:, 0] - camera.cx, pts[:, 1] - camera.cy
    zeros, ones = np.zeros_like(u), np.ones_like(u)
    # pinhole: fx (Qx + tx) = u (Qz + tz) and fy (Qy + ty) = v (Qz + tz), linear in t
    a = np.concatenate([np.stack([camera.fx * ones, zeros, -u], 1), np.stack([zeros, camera.fy * ones, -v], 1)])
    b = np.concatenate([u * q[:, 2] - camera.fx * q[:, 0], v * q[:, 2] - camera.fy * q[:, 1]])
    trans = np.linalg.lstsq(a, b, rcond=None)[0]
    z = trans[2] + q[:, 2]
    points_mm = np.stack([z * u / camera.fx, z * v / camera.fy, z], 1)
    return OpenFaceGeometry(pose_t=trans, pose_r=openface_rotation(pose_deg), points_mm=points_mm, p_scale=s,
                            p_r=rotation_to_openface_euler(rot), p_t=t[:2])
