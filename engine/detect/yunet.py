"""YuNet (libfacedetection, BSD-3) through the ``yuface`` wheel: a second detector that finds profile faces.

BlazeFace is trained on near-frontal faces and misses a share of large poses; YuNet's training set (WIDER FACE)
holds many profiles. Its weights are compiled into the wheel's shared library, so nothing is downloaded at run
time. Its boxes frame a face differently from BlazeFace's (forehead and more of the head), so they are mapped into
BlazeFace's framing through each detector's own crop calibration (both measured on the training crops, see
``calibrate``): every caller downstream keeps one box convention.
"""
from __future__ import annotations

import json
from functools import lru_cache

import cv2
import numpy as np

from engine.paths import weights_path

CALIBRATION_FILE = "crop_policy_yunet.json"
# YuNet's cost grows with the pixels it sees (about 30 CPU-ms for 640x360, 170 for 1280x720, measured with
# time.process_time here); faces the app aligns are far larger than its 10-px minimum at this size.
DEFAULT_MAX_SIDE = 640
# On aflw2000_dev the annotated subjects score 0.74 or more in 99% of images and the two profiles only YuNet finds
# 0.69 and 0.87; 7 of the 37 other boxes score under 0.6, all false (corners, hair, flowers). Chosen among 0.5,
# 0.6 and 0.7 (0.7 loses a rescued profile): python -m research.detector_candidates
MIN_SCORE = 0.6


def available() -> bool:
    try:
        import yuface  # noqa: F401
    except ImportError:
        return False
    return True


class YuNetRunner:
    """(K, 5) boxes (x0, y0, x1, y1, score in 0..1) in the input image's pixels, best first."""

    def __init__(self, min_score: float = 0.5, max_side: int = DEFAULT_MAX_SIDE) -> None:
        self._detect = gil_free_detect() or _wheel_detect()
        self.min_score = float(min_score)
        self.max_side = int(max_side)

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        h, w = image_bgr.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        img = image_bgr if s == 1.0 else cv2.resize(image_bgr, (round(w * s), round(h * s)),
                                                    interpolation=cv2.INTER_AREA)
        r = np.asarray(self._detect(np.ascontiguousarray(img, dtype=np.uint8)), np.float64).reshape(-1, 16)[:, :15]
        score = r[:, 0] / 100.0
        keep = score >= self.min_score
        r, score = r[keep], score[keep]
        boxes = np.c_[r[:, 1], r[:, 2], r[:, 1] + r[:, 3], r[:, 2] + r[:, 4]] / s
        out = np.c_[boxes, score]
        return out[np.argsort(-score, kind="stable")]

    def close(self) -> None:
        pass


# libfacedetection's result buffer (its DETECT_BUFFER_SIZE): an int count, then 16 int16 per face (score 0-100,
# x, y, w, h, five landmarks' x and y, one unused)
_RESULT_BYTES = 0x9000


def _wheel_detect():
    from yuface import c_detect  # the raw call: its wrapper casts boxes to uint16 (negative corners wrap)

    return c_detect


@lru_cache(maxsize=1)
def gil_free_detect():
    """libfacedetection's ``facedetect_cnn`` called through ctypes, which lets go of the GIL while it runs; None
    when the wheel's library or symbol is not there (then the wheel's own call is used).

    The wheel's pybind11 call holds the GIL for the whole detection (about 36 CPU-ms on a 640x360 frame): in the
    app the GUI thread and the other methods' threads stood still meanwhile (a Python loop in another thread saw
    168 ms gaps, 32 ms with this call at the same load). Same library, same input, same numbers: the wheel's
    16th column is uninitialised memory, which nothing reads (tests/detect/test_yunet_gil.py)."""
    import ctypes
    from pathlib import Path

    try:
        import yuface

        lib = ctypes.CDLL(str(Path(yuface.__file__).with_name("libfacedetection.so")))
        fn = lib._Z14facedetect_cnnPhS_iii  # facedetect_cnn(unsigned char*, unsigned char*, int, int, int)
    except (ImportError, OSError, AttributeError):
        return None
    fn.restype = ctypes.POINTER(ctypes.c_int)
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]

    def detect(image_bgr: np.ndarray) -> np.ndarray:
        img = np.ascontiguousarray(image_bgr, dtype=np.uint8)
        buffer = np.zeros(_RESULT_BYTES, np.uint8)  # one per call: detections may run in several threads
        p = fn(buffer.ctypes.data, img.ctypes.data, img.shape[1], img.shape[0], int(img.strides[0]))
        n = int(p[0]) if p else 0
        return np.frombuffer(buffer, np.int16, count=16 * n, offset=4).reshape(n, 16).copy()

    return detect


@lru_cache(maxsize=1)
def calibration() -> dict[str, float]:
    p = weights_path(CALIBRATION_FILE)
    if not p.exists():
        raise FileNotFoundError(f"{p} missing; run `python main.py calibrate-crop --detector yunet`")
    return json.loads(p.read_text())


def to_blazeface_frame(boxes: np.ndarray) -> np.ndarray:
    """YuNet boxes -> the BlazeFace boxes that give the same training-policy crops (YuNet's calibration, then
    BlazeFace's inverted), so the two detectors' boxes of one face overlap and merge."""
    from engine.detect.crop_policy import detection_for_crop

    y = calibration()
    out = np.array(boxes, np.float64).reshape(-1, 5).copy()
    for row in out:
        w, h = row[2] - row[0], row[3] - row[1]
        cx, cy = (row[0] + row[2]) / 2 + y["dx"] * w, (row[1] + row[3]) / 2 + y["dy"] * h
        side = y["scale"] * (w + h) / 2
        row[:4] = detection_for_crop(np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]))
    return out


def calibrate(n_images: int = 1000, pad: float = 0.5, seed: int = 0, log=print) -> dict[str, float]:
    """YuNet's crop policy (crop_policy.fit_crop_policy, as BlazeFace's), written to its own file."""
    from engine.detect.crop_policy import fit_crop_policy

    out = fit_crop_policy(YuNetRunner(min_score=0.5), n_images, pad, seed)
    weights_path(CALIBRATION_FILE).write_text(json.dumps(out, indent=1))
    calibration.cache_clear()
    log(f"YuNet crop policy from {out['n']}/{out['of']} detections: {out}")
    return out
