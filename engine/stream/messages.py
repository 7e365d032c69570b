"""FaceAlign's OSC address space: one processed frame -> a list of (address, arguments).

For every processed frame ``/facealign/frame`` first, then for every face the method aligned:
``/facealign/landmarks``, ``/facealign/visible`` and ``/facealign/pose`` (docs/library-and-stream.md).
"""
from __future__ import annotations

import numpy as np

from engine.export.openface import Camera, openface_geometry
from engine.pipeline import FrameResult
from engine.result import AlignmentResult

Message = tuple[str, list]


def face_translation(r: AlignmentResult, image_size: tuple[int, int]) -> np.ndarray:
    """(tx, ty, tz) in the annotate CSV's ``pose_T*`` units: the head's position in millimetres in the camera frame
    (x right, y down, z away from the camera), from the same pinhole fit with OpenFace's default intrinsics for an
    image of ``image_size`` (width, height) (engine/export/openface.py). NaN where the landmarks have no scale."""
    try:
        return openface_geometry(r.landmarks, r.pose, Camera.for_image(*image_size)).pose_t
    except ValueError:
        return np.full(3, np.nan)


def frame_messages(res: FrameResult, method: str) -> list[Message]:
    """The messages of one frame for one method's results (faces the method did not align are left out)."""
    faces = [(f.face_id, f.results[method]) for f in res.faces if method in f.results]
    out: list[Message] = [("/facealign/frame", [int(res.index), float(res.timestamp), len(faces)])]
    for face_id, r in faces:
        head = [int(res.index), int(face_id)]
        out.append(("/facealign/landmarks", head + [float(v) for v in np.asarray(r.landmarks)[:, :2].ravel()]))
        out.append(("/facealign/visible", head + [int(bool(v)) for v in r.visible]))
        t = face_translation(r, (res.image.shape[1], res.image.shape[0]))
        out.append(("/facealign/pose", head + [float(v) for v in r.pose] + [float(v) for v in t]))
    return out
