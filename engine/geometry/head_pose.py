"""Head pose: the project's one convention and every conversion the outputs use (docs/head-pose.md states it).

The rotation
    ``R`` (3x3) is camera-from-head: a point ``p`` on the head, in the face model's frame, is seen at ``R @ p``
    (plus a translation) in the camera's frame. Both frames are right-handed with the same axes: x to the image's
    right, y up, z toward the camera (OpenGL's camera axes; the camera looks down -z). The head frame is the face
    model's (engine/facemodel.py): a frontal face has R = I, its nose tip on +z. In the crop's pixel frame (y down)
    the same rotation reads ``F @ R @ F`` with F = diag(1, -1, 1).

Euler angles (degrees)
    R = Rz(roll) @ Ry(-yaw) @ Rx(pitch), the standard right-handed axis rotations (3DDFA's matrix2angle order,
    engine/geometry/rotation.py). Signs, as the face appears in the image: yaw > 0 turns the nose toward the
    image's left (the subject's right), pitch > 0 tips the nose down, roll > 0 turns the face counter-clockwise
    on screen. yaw = asin(R[2, 0]) lies in [-90, 90]; pitch and roll in (-180, 180].

Quaternion
    (x, y, z, w) of the same R, w >= 0 (Hamilton convention, as scipy's ``Rotation.as_quat`` and Unity/ROS order).

The field's protocol (FSA-Net labels, SynergyNet's ``benchmark_FOE``)
    AFLW2000-3D's ``Pose_Para`` = [pitch, yaw, roll] (radians) builds its camera rotation as 3DDFA's
    ``angle2matrix``: R = X(pitch) @ Y(yaw) @ Z(roll) with X(a) = [[1, 0, 0], [0, c, s], [0, -s, c]],
    Y(a) = [[c, 0, -s], [0, 1, 0], [s, 0, c]], Z(a) = [[c, s, 0], [-s, c, 0], [0, 0, 1]] -- the same
    camera-from-head R as above. The protocol decomposes a predicted R as pitch = atan2(R[1, 2], R[2, 2]),
    yaw = asin(R[2, 0]), roll = atan2(R[0, 1], R[0, 0]) (degrees) and compares them with Pose_Para in degrees
    by plain absolute difference, leaving out every image with any |Pose_Para angle| > 99 degrees. On a
    Pose_Para rotation this recovers pitch and roll exactly and yaw up to the order of rotations.
"""
from __future__ import annotations

import numpy as np

from engine.geometry.rotation import euler_to_matrix, matrix_to_euler, matrix_to_euler_batch, nearest_rotation

# what a file that carries poses says about them (the JSON's metadata), in one line
POSE_CONVENTION = ("rotation: camera-from-head, right-handed, x right / y up / z toward the camera in both frames; "
                   "yaw/pitch/roll degrees with R = Rz(roll) Ry(-yaw) Rx(pitch): yaw > 0 nose to the image's left, "
                   "pitch > 0 nose down, roll > 0 counter-clockwise on screen; quaternion (x, y, z, w), w >= 0 "
                   "(docs/head-pose.md)")
# FSA-Net's filter on AFLW2000-3D: images with any |Pose_Para angle| above this (degrees) are left out
PROTOCOL_MAX_ABS_DEG = 99.0
# the pixel frame (y down) <-> the model/camera frame (y up)
FLIP_Y = np.diag([1.0, -1.0, 1.0])


def rotation_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(3, 3) camera-from-head rotation of (yaw, pitch, roll) in degrees, the convention above."""
    return euler_to_matrix(yaw, pitch, roll, degrees=True)


def euler_from_rotation(r: np.ndarray) -> np.ndarray:
    """(3,) yaw, pitch, roll in degrees of a (3, 3) rotation, or (B, 3) of (B, 3, 3) rotations."""
    r = np.asarray(r, np.float64)
    return matrix_to_euler(r) if r.ndim == 2 else matrix_to_euler_batch(r)


def quaternion_from_rotation(r: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (x, y, z, w), w >= 0, of a (3, 3) rotation (Shepperd's method: the largest diagonal
    term picks the branch, so no division by a small number)."""
    m = np.asarray(r, np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def rotation_from_quaternion(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of a quaternion (x, y, z, w); any non-zero length (it is normalised)."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def protocol_angles(r: np.ndarray) -> np.ndarray:
    """(..., 3) pitch, yaw, roll in degrees of (..., 3, 3) rotations as the FSA-Net/SynergyNet protocol
    decomposes them (module docstring), in Pose_Para's order, ready to subtract from Pose_Para in degrees."""
    r = np.asarray(r, np.float64)
    pitch = np.arctan2(r[..., 1, 2], r[..., 2, 2])
    yaw = np.arcsin(np.clip(r[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(r[..., 0, 1], r[..., 0, 0])
    return np.rad2deg(np.stack([pitch, yaw, roll], -1))


def rotation_from_pose_para(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """(3, 3) camera-from-head rotation of AFLW2000-3D's Pose_Para angles (radians), 3DDFA's angle2matrix."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    x = np.array([[1, 0, 0], [0, cx, sx], [0, -sx, cx]])
    y = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    z = np.array([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]])
    return x @ y @ z


def protocol_keep(pose_para_deg: np.ndarray) -> np.ndarray:
    """(N,) bool: the images the protocol scores, every |Pose_Para angle| <= 99 degrees (NaN rows: False)."""
    p = np.asarray(pose_para_deg, np.float64)
    with np.errstate(invalid="ignore"):
        return np.all(np.abs(p) <= PROTOCOL_MAX_ABS_DEG, axis=1)


def protocol_mae(rotations: np.ndarray, pose_para_deg: np.ndarray) -> dict[str, float | int | None]:
    """The protocol's pose MAE (degrees) of (N, 3, 3) predicted rotations against (N, 3) Pose_Para angles in
    degrees ([pitch, yaw, roll]). Rows with a NaN prediction (no face) are left out beside the protocol's own
    filter and counted in ``n_missing``. Returns yaw, pitch, roll, mean (of the three), n (images scored)."""
    rot = np.asarray(rotations, np.float64)
    label = np.asarray(pose_para_deg, np.float64)
    keep = protocol_keep(label)
    have = ~np.isnan(rot.reshape(len(rot), -1)).any(1)
    ok = keep & have
    if not ok.any():
        return {"yaw": None, "pitch": None, "roll": None, "mean": None, "n": 0, "n_missing": int((keep & ~have).sum())}
    err = np.abs(protocol_angles(rot[ok]) - label[ok]).mean(0)
    return {"yaw": float(err[1]), "pitch": float(err[0]), "roll": float(err[2]), "mean": float(err.mean()),
            "n": int(ok.sum()), "n_missing": int((keep & ~have).sum())}


def pose_record(r: np.ndarray) -> dict[str, object]:
    """The pose fields every JSON-like output carries for a camera-from-head rotation: Euler angles in degrees,
    the quaternion and the matrix, each key naming its unit or convention."""
    r = np.asarray(r, np.float64)
    yaw, pitch, roll = euler_from_rotation(r)
    # 1e-4 degrees and 1e-6 per entry: far below any method's accuracy, short in a per-frame file
    return {"yaw_deg": round(float(yaw), 4), "pitch_deg": round(float(pitch), 4), "roll_deg": round(float(roll), 4),
            "quaternion_xyzw": [round(float(v), 6) for v in quaternion_from_rotation(r)],
            "rotation_matrix": [[round(float(v), 6) for v in row] for row in r]}


def rotation_from_record(rec: dict) -> np.ndarray:
    """Inverse of ``pose_record``: the rotation a reader rebuilds (from the matrix when present, else the
    quaternion, else the Euler angles)."""
    if "rotation_matrix" in rec:
        # the nearest rotation to the rounded entries, so a reader gets an orthonormal matrix
        return nearest_rotation(rec["rotation_matrix"])
    if "quaternion_xyzw" in rec:
        return rotation_from_quaternion(np.asarray(rec["quaternion_xyzw"]))
    return rotation_from_euler(rec["yaw_deg"], rec["pitch_deg"], rec["roll_deg"])


# the model frame (x right, y up, z toward the camera) onto OpenFace's camera axes (x right, y down, z away): a
# proper rotation, 180 degrees about x
TO_CAMERA_AXES = np.diag([1.0, -1.0, -1.0])


def rotation_to_openface_euler(r: np.ndarray) -> np.ndarray:
    """(Rx, Ry, Rz) radians with R = Rx(a) Ry(b) Rz(c), right-handed elementary rotations: OpenFace's
    Euler2RotationMatrix / RotationMatrix2Euler convention (pitch, yaw, roll)."""
    r = np.asarray(r, np.float64)
    b = np.arcsin(np.clip(r[0, 2], -1.0, 1.0))
    if abs(r[0, 2]) < 1.0 - 1e-9:
        a = np.arctan2(-r[1, 2], r[2, 2])
        c = np.arctan2(-r[0, 1], r[0, 0])
    else:  # gimbal lock (|yaw| = 90): a and c share one axis; put it all in a
        a = np.arctan2(r[2, 1], r[1, 1])
        c = 0.0
    return np.array([a, b, c])


def openface_euler_to_rotation(angles: np.ndarray) -> np.ndarray:
    """Inverse of ``rotation_to_openface_euler``."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def csv_pose_radians(r: np.ndarray) -> tuple[float, float, float]:
    """The CSV's pose_Rx, pose_Ry, pose_Rz with OpenFace's meaning: the same camera-from-head rotation expressed in
    OpenFace's camera axes (x right, y down, z away), as R = Rx Ry Rz in radians (engine/export/openface.py)."""
    a, b, c = rotation_to_openface_euler(TO_CAMERA_AXES @ np.asarray(r, np.float64) @ TO_CAMERA_AXES)
    return float(a), float(b), float(c)


def rotation_from_csv_radians(rx: float, ry: float, rz: float) -> np.ndarray:
    """Inverse of ``csv_pose_radians``: the rotation in this module's convention."""
    return TO_CAMERA_AXES @ openface_euler_to_rotation(np.array([rx, ry, rz])) @ TO_CAMERA_AXES


# Where a method's reported rotation comes from (``MethodInfo.pose_source``): its network's own estimate (a camera
# or a regressed pose), or the Procrustes rotation of its predicted points onto the face model's mean shape: the 68
# landmarks, the 468 mesh vertices, or all 536 points. Chosen per method on the training split
# (``python main.py pose-study``, docs/head-pose.md).
POSE_SOURCES = ("network", "landmarks", "mesh", "points")
_SOURCE_ROWS = {"landmarks": slice(468, 536), "mesh": slice(0, 468), "points": slice(0, 536)}


_CENTRED: dict[tuple[int, str], tuple[np.ndarray, np.ndarray]] = {}


def procrustes_rotations(mean_points: np.ndarray, points: np.ndarray, source: str = "points") -> np.ndarray:
    """(B, 3, 3) camera-from-head rotations of the best similarities taking the face model's (536, 3) mean shape
    (model frame) onto (B, 536, 3) predicted points in crop pixels (y down), over the rows ``source`` names.
    One compiled loop (engine/geometry/compiled.py, the same Procrustes as rotation.best_rotations): it runs
    on every face of every frame, where numpy's per-call overhead would be most of its cost."""
    from engine.geometry.compiled import best_rotations_compiled  # numba: imported on first use only
    from engine.geometry.rotation import centred_source

    rows = _SOURCE_ROWS[source]
    key = (id(mean_points), source)
    if key not in _CENTRED:   # the mean shape is fixed per face model: centre it once
        _CENTRED[key] = centred_source(np.asarray(mean_points, np.float64)[rows])
    dst = np.asarray(points, np.float64)[:, rows] * np.array([1.0, -1.0, 1.0])   # to the model's y-up axes
    return best_rotations_compiled(_CENTRED[key], dst)
