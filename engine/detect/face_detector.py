"""BlazeFace (mediapipe 0.10.21; short and full range) returning crop boxes in the shared crop policy."""
from __future__ import annotations

import numpy as np

from engine.detect.crop_policy import roi_box_from_detection


class FaceDetector:
    """Tries the short-range model, then the full-range one (small or distant faces)."""

    def __init__(self, min_score: float = 0.5) -> None:
        from engine.mp_runtime import BlazeFaceRunner

        self.short = BlazeFaceRunner(full_range=False, min_score=min_score)
        self.full = BlazeFaceRunner(full_range=True, min_score=min_score)

    def detect(self, image_bgr: np.ndarray) -> np.ndarray:
        """(K, 5) detector boxes (x0, y0, x1, y1, score), best first."""
        boxes = self.short(image_bgr)
        if len(boxes) == 0:
            boxes = self.full(image_bgr)
        return boxes[np.argsort(-boxes[:, 4])] if len(boxes) else boxes

    def crop_boxes(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        return [roi_box_from_detection(b) for b in self.detect(image_bgr)]

    def best_crop_box(self, image_bgr: np.ndarray) -> np.ndarray | None:
        """The main face: the largest detection (a confident small face in the background is not the subject)."""
        boxes = self.crop_boxes(image_bgr)
        return max(boxes, key=lambda b: b[2] - b[0]) if boxes else None

    def close(self) -> None:
        self.short.close()
        self.full.close()
