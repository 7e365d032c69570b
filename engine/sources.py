"""Frame sources: webcam, video file, image folder or single image. All yield (index, timestamp_s, BGR frame).

Images of any depth or channel count (16-bit, grayscale, RGBA) are converted to 8-bit BGR; unreadable frames in
a folder are skipped and counted rather than fatal.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
MIN_SIDE = 16


class SourceError(ValueError):
    """A source that cannot be opened or read; the message is meant for the user."""


@dataclass
class Frame:
    index: int
    timestamp: float
    image: np.ndarray
    name: str = ""


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Any image cv2 can decode -> uint8 BGR (3 channels)."""
    if img.dtype == np.uint16:
        img = (img / 257.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(img)


def read_image(path: str | Path) -> np.ndarray:
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise SourceError(f"{path}: not a readable image")
    img = to_bgr8(img)
    if min(img.shape[:2]) < MIN_SIDE:
        raise SourceError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, too small to hold a face")
    return img


class Source:
    kind = ""
    fps: float = 0.0
    length: int | None = None
    skipped: int = 0

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    @property
    def description(self) -> str:
        return self.kind


class ImageFolderSource(Source):
    """Images in name order. ``browse=True`` (the GUI) holds at the last image instead of ending, until a
    ``seek`` moves the cursor or ``wake`` ends the stream: a folder is browsed, not played once and closed."""

    kind = "images"

    def __init__(self, path: str | Path, browse: bool = False) -> None:
        p = Path(path)
        files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise SourceError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.files = files
        self.length = len(files)
        self.path = p
        self.fps = 0.0
        self.browse = browse
        self._seek: int | None = None
        self._woken = threading.Event()

    def seek(self, index: int) -> None:
        self._seek = min(max(0, int(index)), self.length - 1)
        self._woken.set()

    @property
    def seek_pending(self) -> bool:
        return self._seek is not None

    def wake(self) -> None:
        """Ends a browse that waits at the last image (the pipeline is stopping)."""
        self._woken.set()

    def frames(self) -> Iterator[Frame]:
        i = 0
        while True:
            if self._seek is not None:
                i, self._seek = self._seek, None
            if i >= len(self.files):
                if not self.browse:
                    return
                self._woken.clear()
                if self._seek is None:  # a seek may have arrived between the check above and the clear
                    self._woken.wait()
                if self._seek is None:
                    return
                continue
            f = self.files[i]
            try:
                img = read_image(f)
            except SourceError:
                self.skipped += 1
                i += 1
                continue
            yield Frame(i, float(i), img, f.name)
            i += 1

    @property
    def description(self) -> str:
        return f"{self.path} ({self.length} images)"


class VideoSource(Source):
    kind = "video"

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        p = Path(path)
        if not p.exists():
            raise SourceError(f"{path}: no such file")
        if p.stat().st_size == 0:
            raise SourceError(f"{path}: empty file")
        self.cap = cv2.VideoCapture(str(p))
        ok, first = self.cap.read() if self.cap.isOpened() else (False, None)
        if not ok or first is None:
            self.cap.release()
            raise SourceError(f"{path}: not a readable video")
        self.first = first
        self.path = p
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
        header = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        # headers lie (the test clip's says 158 frames, it holds 55): the length is what the decoder can read
        self.length = self._decodable_length(header) if header > 0 else None
        self.loop = loop
        self._seek: int | None = None

    def _decodable_length(self, header: int) -> int:
        """The number of frames the decoder delivers, found by bisecting on "can frame i be read" (a few seeks,
        not a full decode); leaves the capture just after the first frame."""
        def readable(i: int) -> bool:
            self.cap.set(cv2.CAP_PROP_POS_FRAMES, i)
            return bool(self.cap.grab())

        lo, hi = 0, header  # frame lo is readable (the first was read); frame hi is past the end
        if readable(header - 1):
            lo = header - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if readable(mid) else (lo, mid)
        self.cap.set(cv2.CAP_PROP_POS_FRAMES, 1)
        return lo + 1

    def seek(self, index: int) -> None:
        last = (self.length or index + 1) - 1
        self._seek = min(max(0, int(index)), last)

    @property
    def seek_pending(self) -> bool:
        return self._seek is not None

    def frames(self) -> Iterator[Frame]:
        i = 0
        frame = self.first
        while True:
            if self._seek is not None:
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, self._seek)
                i, self._seek = self._seek, None
                ok, frame = self.cap.read()
                if not ok:
                    return
            ts = self.cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if i else 0.0
            yield Frame(i, ts if ts > 0 or i == 0 else i / self.fps, to_bgr8(frame))
            ok, frame = self.cap.read()
            i += 1
            if not ok or frame is None:
                if self.length is None or i < self.length:  # the decoder ended early: that is the length
                    self.length = i
                if not self.loop:
                    return
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = self.cap.read()
                if not ok:
                    return
                i = 0

    def close(self) -> None:
        self.cap.release()

    @property
    def description(self) -> str:
        return f"{self.path.name} ({self.fps:.0f} fps)"


class CameraSource(Source):
    kind = "camera"

    def __init__(self, index: int = 0, width: int | None = None, height: int | None = None) -> None:
        self.cap = cv2.VideoCapture(index)
        if not self.cap.isOpened():
            raise SourceError(f"camera {index}: not available (no camera, or in use by another program)")
        if width:
            self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self.index = index
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 30.0)

    def frames(self) -> Iterator[Frame]:
        import time

        t0 = time.perf_counter()
        i = 0
        while True:
            ok, frame = self.cap.read()
            if not ok:
                return
            yield Frame(i, time.perf_counter() - t0, to_bgr8(frame))
            i += 1

    def close(self) -> None:
        self.cap.release()

    @property
    def description(self) -> str:
        return f"camera {self.index}"


def open_source(spec: str | int, loop: bool = False, resolution: tuple[int, int] | None = None,
                browse: bool = False) -> Source:
    """A camera index ("0", optionally at ``resolution``), a video file, an image file or a folder of images
    (``browse``: see ``ImageFolderSource``)."""
    if isinstance(spec, int) or (isinstance(spec, str) and spec.isdigit()):
        w, h = resolution or (None, None)
        return CameraSource(int(spec), w, h)
    p = Path(os.path.expanduser(str(spec)))
    if p.is_dir():
        return ImageFolderSource(p, browse=browse)
    if not p.exists():
        raise SourceError(f"{spec}: no such file or folder")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        read_image(p)  # fail now, with the reason, rather than yield nothing
        return ImageFolderSource(p, browse=browse)
    return VideoSource(p, loop=loop)
