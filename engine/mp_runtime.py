"""Thin wrappers around mediapipe 0.10.21's bundled Face Mesh and BlazeFace graphs.

Importing cv2 (contrib build, a dependency of mediapipe) points QT_QPA_PLATFORM_PLUGIN_PATH at cv2's own Qt
plugins, which breaks PySide6; we undo that here, once, for every importer.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

os.environ.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _solutions():
    import mediapipe as mp  # imported lazily: it takes ~1 s and is not needed by every command

    os.environ.pop("QT_QPA_PLATFORM_PLUGIN_PATH", None)
    return mp.solutions


def tessellation_edges() -> list[tuple[int, int]]:
    return sorted(tuple(sorted(e)) for e in _solutions().face_mesh.FACEMESH_TESSELATION)


class FaceMeshRunner:
    """Face Mesh on a face crop: returns the 468 vertices in the crop's pixels (z scaled like x), or None.

    The crop is upscaled and padded so the graph's own detector finds a face framed like our 120x120 crops.
    """

    def __init__(self, upscale: int = 2, pad: float = 0.5) -> None:
        self._mesh = _solutions().face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=False, min_detection_confidence=0.3
        )
        self.upscale = upscale
        self.pad = pad

    def __call__(self, crop_bgr: np.ndarray) -> np.ndarray | None:
        h, w = crop_bgr.shape[:2]
        big = cv2.resize(crop_bgr, (w * self.upscale, h * self.upscale), interpolation=cv2.INTER_LINEAR)
        p = int(round(self.pad * big.shape[0]))
        big = cv2.copyMakeBorder(big, p, p, p, p, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        res = self._mesh.process(cv2.cvtColor(big, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            return None
        side = big.shape[1]
        pts = np.array([(q.x, q.y, q.z) for q in res.multi_face_landmarks[0].landmark], dtype=np.float64)
        pts *= side  # normalised -> padded pixels; z is on the x scale already
        pts[:, :2] -= p
        pts /= self.upscale
        pts[:, 2] = -pts[:, 2]  # mediapipe's z grows away from the camera; ours toward it
        return pts

    def close(self) -> None:
        self._mesh.close()


class BlazeFaceRunner:
    """BlazeFace (short range, model 0; full range, model 1). Returns boxes (x0, y0, x1, y1, score) in pixels."""

    def __init__(self, full_range: bool = True, min_score: float = 0.5) -> None:
        self._det = _solutions().face_detection.FaceDetection(
            model_selection=1 if full_range else 0, min_detection_confidence=min_score
        )

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        h, w = image_bgr.shape[:2]
        res = self._det.process(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h, d.score[0]))
        return np.array(out, dtype=np.float64).reshape(-1, 5)

    def close(self) -> None:
        self._det.close()
