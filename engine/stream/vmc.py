"""The VMC protocol's performer side for one face: head bone and blend values (docs/library-and-stream.md).

VMC (Virtual Motion Capture, OSC over UDP; VSeeFace, VMC-compatible avatars) is one avatar, so only the first
tracked face of a frame drives it. Per frame with a face:
``/VMC/Ext/Bone/Pos "Head" px py pz qx qy qz qw``, then ``/VMC/Ext/Blend/Val NAME value`` for the VRM presets
``Blink_L``, ``Blink_R`` and ``A`` (mouth open), then ``/VMC/Ext/Blend/Apply``.

Axes are Unity's, as VMC's are: x right (image right), y up, z forward (away from the camera), metres.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from engine.geometry.rotation import euler_to_matrix
from engine.result import AlignmentResult

# 68-point (iBUG) indices. Points 36-41 are the subject's right eye (image left for a face looking at the camera):
# outer corner, two upper-lid points, inner corner, two lower-lid points; 42-47 the left eye, inner corner first.
RIGHT_EYE = (36, 37, 38, 39, 40, 41)
LEFT_EYE = (42, 43, 44, 45, 46, 47)
MOUTH_CORNERS = (48, 54)
INNER_LIP_PAIRS = ((61, 67), (62, 66), (63, 65))

# Eye aspect ratio (lid gaps / eye width) on the method's 3D landmarks, so it does not shrink as the head turns.
# Open eyes measure 0.26-0.29 (mtcnn3d, every frame of video/obama.mp4: 5th-95th percentile); at or above
# EAR_OPEN the eye is open (0), at or below EAR_CLOSED shut (1), linear in between.
EAR_OPEN = 0.25
EAR_CLOSED = 0.10
# Inner-lip gap / mouth width: 0.09-0.19 while talking on the same clip; at MOUTH_WIDE the mouth is fully open.
MOUTH_SHUT = 0.05
MOUTH_WIDE = 0.55
# An eye with fewer than half its 6 points visible is hidden: its lids are the model's guess, not seen, so it
# takes the other eye's value (people blink both eyes together), or 0 when both are hidden.
HIDDEN_EYE_VISIBLE = 0.5

INTERPUPILLARY_M = 0.063       # a typical adult's distance between the eye centres, metres (head position scale)
OPENFACE_FX_AT_640 = 500.0     # OpenFace's default focal length in pixels for a 640 px wide image


def pose_to_vmc_quaternion(pose_deg: np.ndarray) -> np.ndarray:
    """(qx, qy, qz, qw) of the head rotation in Unity's axes from AlignmentResult.pose (yaw, pitch, roll degrees,
    the convention of engine/geometry/rotation.py: R = Rz(roll) Ry(-yaw) Rx(pitch) on the model frame x right, y
    up, z toward the camera). The identity is a face looking straight into the camera. The one place that knows
    the pose convention: switch it here if the convention changes."""
    r = euler_to_matrix(*np.asarray(pose_deg, np.float64)[:3])
    flip_z = np.diag([1.0, 1.0, -1.0])   # z toward the camera -> Unity's z forward (away from it)
    return Rotation.from_matrix(flip_z @ r @ flip_z).as_quat()


def head_position(r: AlignmentResult, image_size: tuple[int, int]) -> np.ndarray:
    """(x, y, z) metres of the face centre from a pinhole camera at the image centre with OpenFace's default
    focal length, scaled by a typical interpupillary distance (the 3D distance between the eye centres, so turning
    the head does not move it away)."""
    w, h = image_size
    lm = np.asarray(r.landmarks, np.float64)
    ipd_px = np.linalg.norm(lm[list(RIGHT_EYE)].mean(0) - lm[list(LEFT_EYE)].mean(0))
    metres_per_px = INTERPUPILLARY_M / max(ipd_px, 1e-6)
    centre = np.asarray(r.mesh, np.float64).mean(0)
    fx = OPENFACE_FX_AT_640 * w / 640.0
    return np.array([(centre[0] - w / 2) * metres_per_px, -(centre[1] - h / 2) * metres_per_px, fx * metres_per_px])


def eye_aspect_ratio(lm: np.ndarray, eye: tuple[int, ...]) -> float:
    """(upper-lower lid gaps) / (2 * corner distance) of one eye, in 3D."""
    p = np.asarray(lm, np.float64)[list(eye)]
    width = np.linalg.norm(p[0] - p[3])
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2 * max(width, 1e-6)))


def _ramp(value: float, zero: float, one: float) -> float:
    return float(np.clip((value - zero) / (one - zero), 0.0, 1.0))


def blend_values(r: AlignmentResult) -> dict[str, float]:
    """VRM blend values in 0..1: ``Blink_R`` (the subject's right eye, points 36-41), ``Blink_L`` (42-47) and
    ``A`` (mouth open). A hidden eye copies the visible eye's blink, or is 0 when both are hidden."""
    lm = r.landmarks
    vis = np.asarray(r.visible, bool)
    blink = {name: _ramp(eye_aspect_ratio(lm, eye), EAR_OPEN, EAR_CLOSED)
             for name, eye in (("Blink_R", RIGHT_EYE), ("Blink_L", LEFT_EYE))}
    seen = {"Blink_R": vis[list(RIGHT_EYE)].mean() >= HIDDEN_EYE_VISIBLE,
            "Blink_L": vis[list(LEFT_EYE)].mean() >= HIDDEN_EYE_VISIBLE}
    for name, other in (("Blink_R", "Blink_L"), ("Blink_L", "Blink_R")):
        if not seen[name]:
            blink[name] = blink[other] if seen[other] else 0.0
    p = np.asarray(lm, np.float64)
    gap = np.mean([np.linalg.norm(p[a] - p[b]) for a, b in INNER_LIP_PAIRS])
    width = np.linalg.norm(p[MOUTH_CORNERS[0]] - p[MOUTH_CORNERS[1]])
    return {**blink, "A": _ramp(gap / max(width, 1e-6), MOUTH_SHUT, MOUTH_WIDE)}


def vmc_messages(r: AlignmentResult, image_size: tuple[int, int]) -> list[tuple[str, list]]:
    """The VMC messages of one face (image pixels result; ``image_size`` = (width, height))."""
    pos = head_position(r, image_size)
    q = pose_to_vmc_quaternion(r.pose)
    out = [("/VMC/Ext/Bone/Pos", ["Head", *(float(v) for v in pos), *(float(v) for v in q)])]
    out += [("/VMC/Ext/Blend/Val", [name, float(v)]) for name, v in blend_values(r).items()]
    out.append(("/VMC/Ext/Blend/Apply", []))
    return out
