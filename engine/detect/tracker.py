"""Face tracking from the previous frame's landmarks, with periodic BlazeFace re-detection.

A face turning past the detector's range (profiles) stays tracked: its next crop comes from its own landmarks
(the training crops' policy), not from the detector. Detections that overlap no track start new ones with fresh
ids; a track whose landmarks leave the frame or collapse, or that no detection has confirmed for a while and
whose method failed, is dropped. At most ``max_faces`` faces are tracked (a setting); every ``tile_every``-th
detection also scans the detector's tiles for small faces.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.detect.crop_policy import roi_box_from_detection
from engine.detect.front_end import recrop


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / area) if area > 0 else 0.0


@dataclass
class Track:
    face_id: int
    box: np.ndarray                 # crop box for the next frame (x0, y0, x1, y1)
    age: int = 0
    unconfirmed: int = 0            # re-detections in a row that did not see this face
    landmarks: np.ndarray | None = None
    history: list = field(default_factory=list)
    # the face detector's score for this face at the latest re-detection, 0.0 when that re-detection missed it:
    # the per-face ``confidence`` every output carries (docs/exports.md)
    score: float = 0.0


DEFAULT_MAX_FACES = 4
MAX_FACES_LIMIT = 64   # the settings' upper bound: every face costs one alignment per method per frame


def check_max_faces(max_faces: int) -> int:
    """``max_faces`` as an int in 1..MAX_FACES_LIMIT, or a ValueError saying what is allowed."""
    if isinstance(max_faces, bool) or int(max_faces) != max_faces or not 1 <= int(max_faces) <= MAX_FACES_LIMIT:
        raise ValueError(f"max faces must be a whole number from 1 to {MAX_FACES_LIMIT}, got {max_faces!r}")
    return int(max_faces)


class FaceTracker:
    """Tracks at most ``max_faces`` faces (a setting: the app's "max faces", annotate's ``--max-faces``); faces
    detected beyond the limit are counted in ``over_limit`` (at the last re-detection) so a caller can say so."""

    def __init__(self, detector=None, redetect_every: int = 10, max_faces: int = DEFAULT_MAX_FACES,
                 max_unconfirmed: int = 6, min_size: float = 24.0, tile_every: int = 3,
                 background: bool = False) -> None:
        """``background``: the periodic re-detection of faces already tracked runs on a thread of its own and is
        merged into the first frame after it finishes (a live view: a whole-image detection, about 45 CPU-ms at
        640x360 and twice that with the tiles, made every 10th frame miss the 40 ms frame period and the next
        frame drop). Detections the frame needs now (nothing tracked, stale tracks, a reset) stay synchronous."""
        max_faces = check_max_faces(max_faces)
        if detector is None:
            from engine.detect.face_detector import FaceDetector

            detector = FaceDetector()
        self.detector = detector
        self.redetect_every = redetect_every
        self.max_faces = max_faces
        self.max_unconfirmed = max_unconfirmed
        self.min_size = min_size
        self.tracks: list[Track] = []
        self._next_id = 0
        self._frame = 0
        self.detections_run = 0
        self.over_limit = 0
        # the detector's tiled scan (small faces) costs ~60x its whole-image pass: every tile_every-th detection,
        # the first after a reset included (so a still image is always scanned whole)
        self.tile_every = max(1, int(tile_every))
        self._since_reset = 0
        self.background = background
        self._pool = None       # the background detection's thread (created on first use)
        self._pending = None    # its Future: (K, 5) detector boxes of a frame already passed

    def reset(self) -> None:
        self._drop_pending()
        self.tracks = []
        self._frame = 0
        self.over_limit = 0
        self._since_reset = 0

    def set_max_faces(self, max_faces: int) -> None:
        """Change the limit live; a lower limit drops the newest tracks."""
        self.max_faces = check_max_faces(max_faces)
        self.tracks = self.tracks[:self.max_faces]

    def boxes_for(self, image: np.ndarray, stale: bool = False) -> list[Track]:
        """The tracks to align in this frame (re-detecting when due or when nothing is tracked).

        ``stale``: the tracks' landmarks come from a frame far from this one (frames were dropped, or a seek):
        re-detect now, and a track the detector sees takes the detection's box, since a crop from the old
        landmarks can miss a face that moved or turned meanwhile (the method then fits a face on the cheek)."""
        due = not self.tracks or stale or self._frame % self.redetect_every == 0
        self._frame += 1
        if due and self.background and self.tracks and not stale:
            if self._pending is None:  # else the previous one is still running: it counts for this one
                self.detections_run += 1
                tiled = self._since_reset % self.tile_every == 0
                self._since_reset += 1
                if self._pool is None:
                    from concurrent.futures import ThreadPoolExecutor

                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="facealign-detect")
                self._pending = self._pool.submit(self._detect, image, tiled)
        elif due:
            self._drop_pending()  # the detector is not shared between threads; a newer result is coming
            self.detections_run += 1
            # a stale re-detection looks for the faces already tracked: the whole-image pass, not the tiled scan
            # (about 60x its cost, which would make a slow pipeline slower still)
            refresh = stale and bool(self.tracks)
            tiled = not refresh and self._since_reset % self.tile_every == 0
            self._since_reset += 0 if refresh else 1
            self._merge(self._detect(image, tiled), stale)
        if self._pending is not None and self._pending.done():
            boxes, self._pending = self._pending.result(), None
            self._merge(boxes, stale=False)
        h, w = image.shape[:2]
        self.tracks = [t for t in self.tracks if t.unconfirmed <= self.max_unconfirmed
                       and t.box[2] > 0 and t.box[3] > 0 and t.box[0] < w and t.box[1] < h]
        return list(self.tracks)

    def _detect(self, image: np.ndarray, tiled: bool) -> np.ndarray:
        return self.detector.detect(image, tiles=tiled) if tiled is False else self.detector.detect(image)

    def _drop_pending(self) -> None:
        """Wait for a background detection still running (the detector is then free) and forget its result."""
        if self._pending is not None:
            try:
                self._pending.result()
            except Exception:  # noqa: BLE001 (its result is discarded; a failing detector fails the next call)
                pass
            self._pending = None

    def close(self) -> None:
        """Stop the background detection thread (after its detection), before the detector is closed."""
        self._drop_pending()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _merge(self, boxes: np.ndarray, stale: bool) -> None:
        """Match detector ``boxes`` to the tracks (IoU), confirm or age them, start tracks for the rest."""
        dets = [roi_box_from_detection(d) for d in boxes]
        det_scores = [float(d[4]) for d in boxes]
        used = set()
        for t in self.tracks:
            scores = [iou(t.box, d) for d in dets]
            j = int(np.argmax(scores)) if scores else -1
            if j >= 0 and scores[j] > 0.3 and j not in used:
                used.add(j)
                t.unconfirmed = 0
                t.score = det_scores[j]
                if t.landmarks is None or stale:
                    t.box = dets[j]
            else:
                t.unconfirmed += 1
                t.score = 0.0
        self.over_limit = 0
        for j, d in enumerate(dets):
            if j in used:
                continue
            if len(self.tracks) < self.max_faces:
                self.tracks.append(Track(self._next_id, d, score=det_scores[j]))
                self._next_id += 1
            else:
                self.over_limit += 1

    def update(self, track: Track, landmarks_image: np.ndarray | None) -> None:
        """Feed back the aligned landmarks (image pixels) of a track; None drops it (the method failed)."""
        if landmarks_image is None:
            self.tracks = [t for t in self.tracks if t is not track]
            return
        box = recrop(landmarks_image, track.box)  # the front end's step: one per frame for a tracked face
        if (box[2] - box[0]) < self.min_size:
            self.tracks = [t for t in self.tracks if t is not track]
            return
        track.landmarks = landmarks_image
        track.box = box
        track.age += 1


VIDEO_REDETECT_EVERY = 10   # video and camera: re-detect every 10th frame, track from landmarks in between


def tracker_for_source(kind: str, detector=None, max_faces: int = DEFAULT_MAX_FACES) -> FaceTracker:
    """The tracker every offline front end (annotate, the stream command, ``engine.FaceAligner``) uses for a
    source of this ``kind`` ("images", "video", "camera"): unrelated images are detected afresh, each with the
    tiled scan (the caller also ``reset()``s it before every image); video re-detects every
    ``VIDEO_REDETECT_EVERY`` frames."""
    per_image = kind == "images"
    return FaceTracker(detector=detector, redetect_every=1 if per_image else VIDEO_REDETECT_EVERY,
                       max_faces=max_faces)
