"""The one-call library API: every face of a whole image, or of each frame of a video, in image pixels.

    from engine import FaceAligner
    faces = FaceAligner("mtcnn3d")(image)            # uint8 BGR (H, W, 3); color="rgb" for RGB arrays
    for faces in FaceAligner("mtcnn3d").track(frames): ...

It runs the app's own path, not a copy of it: the BlazeFace detector and the tracker policy of ``annotate``
(``tracker_for_source``), the shared crop policy and ``FrameProcessor`` (batched alignment, results mapped to image
pixels). So its landmarks equal ``python main.py annotate``'s for the same input and method.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from engine.detect.tracker import DEFAULT_MAX_FACES, check_max_faces, tracker_for_source
from engine.methods.base import Method
from engine.methods.factory import create
from engine.pipeline import FrameProcessor, FrameResult
from engine.result import AlignmentResult
from engine.sources import MIN_SIDE, Frame, open_source, read_image

COLORS = ("bgr", "rgb")


@dataclass
class Face:
    """One aligned face, everything in the input image's pixels (x right, y down; z toward the camera, relative,
    same scale as x and y)."""
    face_id: int              # stable across the frames of one ``track`` (the tracker's id)
    box: np.ndarray           # (4,) x0, y0, x1, y1: the crop box the method saw
    landmarks: np.ndarray     # (68, 3)
    visible: np.ndarray       # (68,) bool: False = self-occluded
    pose: np.ndarray          # (3,) yaw, pitch, roll in degrees
    mesh: np.ndarray          # (468, 3) vertices in the face-model topology
    confidence: float
    result: AlignmentResult   # the method's full result (dense surface, timings, ...)


def check_image(image: np.ndarray, color: str = "bgr") -> np.ndarray:
    """A contiguous uint8 BGR (H, W, 3) copy-or-view of ``image``, or a TypeError / ValueError that says what is
    wrong. Accepted: uint8 (H, W) grey, (H, W, 1), (H, W, 3) and (H, W, 4) in ``color`` order ("bgr" as OpenCV
    reads files, "rgb" as PIL, imageio and matplotlib do)."""
    if color not in COLORS:
        raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array (H, W, 3), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8 (0-255), got {image.dtype}; convert it first, e.g. "
                        f"(img * 255).clip(0, 255).astype(np.uint8) for floats in 0-1")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) (or (H, W) grey, (H, W, 4) with alpha), got shape "
                         f"{image.shape}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, too small to hold a face")
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGR if color == "rgb" else cv2.COLOR_BGRA2BGR)
    elif color == "rgb":
        image = image[..., ::-1]
    return np.ascontiguousarray(image)


def faces_of(res: FrameResult, method: str) -> list[Face]:
    """The faces of one processed frame that ``method`` aligned."""
    out = []
    for f in res.faces:
        r = f.results.get(method)
        if r is not None:
            out.append(Face(f.face_id, f.box, r.landmarks, r.visible, r.pose, r.mesh, float(r.confidence), r))
    return out


class FaceAligner:
    """Aligns every face of whole images with one method (a name from ``python main.py methods``, or a loaded
    ``Method``). ``color``: the channel order of the arrays you pass ("bgr" or "rgb"); ``max_faces``: faces
    tracked per image (1-64, as annotate's ``--max-faces``); ``flip``: average each crop with its mirror
    (engine/methods/flip.py, about twice the network cost). Close it (or use ``with``) to free the models."""

    def __init__(self, method: str | Method = "mtcnn3d", color: str = "bgr", max_faces: int = DEFAULT_MAX_FACES,
                 quantized: bool = False, flip: bool = False) -> None:
        if color not in COLORS:
            raise ValueError(f"color must be 'bgr' or 'rgb', got {color!r}")
        self.color = color
        self.flip = flip
        self.max_faces = check_max_faces(max_faces)
        self._owns_method = isinstance(method, str)
        self.method = create(method, quantized=quantized) if isinstance(method, str) else method
        from engine.detect.face_detector import FaceDetector

        self.detector = FaceDetector()  # one detector for every image, video and source this aligner processes

    def _processor(self, kind: str) -> FrameProcessor:
        """A fresh tracker (face ids from 0) in annotate's policy for this kind of source, over the loaded method."""
        return FrameProcessor([self.method], tracker=tracker_for_source(kind, self.detector, self.max_faces),
                              flip=self.flip)

    @property
    def name(self) -> str:
        return self.method.name

    def __call__(self, image: np.ndarray | str | Path, color: str | None = None) -> list[Face]:
        """Every face of one whole image (an array, or an image file's path), detected afresh."""
        if isinstance(image, (str, Path)):
            bgr = read_image(image)  # files decode as BGR whatever ``color`` says
        else:
            bgr = check_image(image, color or self.color)
        return faces_of(self.process_image(bgr), self.name)

    def process_image(self, bgr: np.ndarray, index: int = 0, name: str = "") -> FrameResult:
        """The full ``FrameResult`` of one unrelated image (uint8 BGR), as annotate makes for an image folder."""
        return self._processor("images").process(Frame(index, float(index), bgr, name))

    def track(self, frames: Iterable[np.ndarray], color: str | None = None, fps: float = 25.0
              ) -> Iterator[list[Face]]:
        """The faces of each frame of a video, in order: faces are tracked from frame to frame (the tracker's
        ``face_id`` stays with a face) and re-detected every 10th frame, as annotate does for a video file."""
        processor = self._processor("video")
        for i, image in enumerate(frames):
            bgr = check_image(image, color or self.color)
            yield faces_of(processor.process(Frame(i, i / fps, bgr)), self.name)

    def frames(self, source: str | int) -> Iterator[FrameResult]:
        """Each processed frame of a video file, image folder, image file or camera index, exactly as
        ``python main.py annotate SOURCE`` processes it (same tracker policy per kind of source)."""
        src = open_source(source)
        try:
            processor = self._processor(src.kind)
            for frame in src.frames():
                if src.kind == "images":  # unrelated pictures: detect afresh, never track across them
                    processor.tracker.reset()
                yield processor.process(frame)
        finally:
            src.close()

    def close(self) -> None:
        if self._owns_method:
            self.method.close()
        self.detector.close()

    def __enter__(self) -> "FaceAligner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
