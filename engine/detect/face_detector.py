"""BlazeFace (mediapipe 0.10.21; short and full range) returning crop boxes in the shared crop policy.

BlazeFace sees the whole image shrunk to its input (128 px short range, 192 px full range), so a face a fifth of
an 1800x900 image's height is 14-21 px there and is missed. The detector therefore also runs the short-range
model on overlapping square tiles: level L tiles are 1/L of the image's short side, with half a tile of overlap
so every face smaller than half a tile lies whole in one of them. YuNet (engine/detect/yunet.py) runs on the whole
image beside them for the profiles BlazeFace misses. Boxes from every run are merged (non-maximum suppression,
plus dropping a box mostly inside a better one, a tile that sees part of a large face, or centred inside it).
"""
from __future__ import annotations

import cv2
import numpy as np

from engine.detect.crop_policy import roi_box_from_detection

DEFAULT_TILE_LEVELS = (1, 2)
NMS_IOU = 0.4
# Tiles see textures up close: on the test clip the flag's stars score 0.51-0.58 as faces in a tile (never on the
# whole image), while faces of 225 px and more in the aflw2000_dev mosaics score 0.73 and above in 9 of 10 cases.
TILE_MIN_SCORE = 0.65
CONTAINED = 0.6   # a box with this share of its area inside a better box is a part of that face
CENTRE_MARGIN = 0.2  # a smaller box centred within a better box grown by this much a side is that face again
NOTHING_FOUND_PAD = 0.5  # when nothing is found: YuNet again on the image padded by this share of its size a side


def tile_origins(height: int, width: int, side: int) -> list[tuple[int, int]]:
    """Top-left corners of square ``side`` tiles covering the image with half a tile of overlap."""
    def starts(n: int) -> np.ndarray:
        last = max(n - side, 0)
        return np.unique(np.r_[np.arange(0, last + 1, max(side // 2, 1)), last])
    return [(int(x), int(y)) for y in starts(height) for x in starts(width)]


def merge_boxes(boxes: np.ndarray) -> np.ndarray:
    """(K, 5) boxes (x0, y0, x1, y1, score) -> one box per face, best first: greedy non-maximum suppression, and
    where one box lies mostly inside another (a tile saw part of a large face) the larger box with the better
    score."""
    boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept: list[np.ndarray] = []
    for b in boxes:
        area_b = max((b[2] - b[0]) * (b[3] - b[1]), 1e-9)
        for i, k in enumerate(kept):
            area_k = max((k[2] - k[0]) * (k[3] - k[1]), 1e-9)
            inter = max(0.0, min(b[2], k[2]) - max(b[0], k[0])) * max(0.0, min(b[3], k[3]) - max(b[1], k[1]))
            if inter / (area_b + area_k - inter) > NMS_IOU:
                break
            if inter / min(area_b, area_k) > CONTAINED:
                if area_b > area_k:
                    kept[i] = np.r_[b[:4], k[4]]
                break
            # a smaller box centred on a better one (grown by CENTRE_MARGIN a side, about its crop) is a second
            # look at that face: an ear or cheek a tile saw, the other detector's framing of a profile
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            mx, my = CENTRE_MARGIN * (k[2] - k[0]), CENTRE_MARGIN * (k[3] - k[1])
            if area_b <= area_k and k[0] - mx <= cx <= k[2] + mx and k[1] - my <= cy <= k[3] + my:
                break
        else:
            kept.append(b.copy())
    return np.array(kept, np.float64).reshape(-1, 5)


class FaceDetector:
    """Short- and full-range BlazeFace on the whole image, and short range on tiles (small or many faces)."""

    def __init__(self, min_score: float = 0.5, tile_levels: tuple[int, ...] = DEFAULT_TILE_LEVELS,
                 yunet: bool | None = None) -> None:
        """``yunet``: also run YuNet on the whole image and merge its boxes (profiles BlazeFace misses); None: when
        the ``yuface`` wheel is installed."""
        from engine.detect import yunet as yunet_module
        from engine.mp_runtime import BlazeFaceRunner

        if any(int(level) < 1 for level in tile_levels):
            raise ValueError(f"tile levels must be >= 1 (fractions of the short side), got {tile_levels}")
        self.short = BlazeFaceRunner(full_range=False, min_score=min_score)
        self.full = BlazeFaceRunner(full_range=True, min_score=min_score)
        self.tile_levels = tuple(int(level) for level in tile_levels)
        if yunet is None:
            yunet = yunet_module.available()
        self.yunet = yunet_module.YuNetRunner(min_score=max(min_score, yunet_module.MIN_SCORE)) if yunet else None
        self.description = ("blazeface short+full" + (f", short on tiles 1/{','.join(map(str, self.tile_levels))}"
                                                      if self.tile_levels else "")
                            + (" + yunet" if self.yunet is not None else ""))

    def _tiled(self, image_bgr: np.ndarray, side: int) -> list[np.ndarray]:
        h, w = image_bgr.shape[:2]
        out = []
        for x, y in tile_origins(h, w, side):
            d = self.short(np.ascontiguousarray(image_bgr[y:y + side, x:x + side])).copy()
            if len(d) == 0:
                continue
            # a box touching a tile edge inside the image is a cut face: the overlapping tile holds it whole
            m = 2.0
            cut = ((d[:, 0] < m) & (x > 0)) | ((d[:, 1] < m) & (y > 0)) | \
                ((d[:, 2] > side - m) & (x + side < w)) | ((d[:, 3] > side - m) & (y + side < h))
            d = d[~cut & (d[:, 4] >= TILE_MIN_SCORE)]
            d[:, [0, 2]] += x
            d[:, [1, 3]] += y
            out.append(d)
        return out

    def detect(self, image_bgr: np.ndarray, tiles: bool = True) -> np.ndarray:
        """(K, 5) detector boxes (x0, y0, x1, y1, score) in BlazeFace's framing, best first. ``tiles=False``: the
        whole image only (CPU ms per 1280x720 frame: BlazeFace 7, YuNet 25, the tiles 32 more;
        research/detector_candidates.py; the tracker alternates)."""
        runs = [self.short(image_bgr), self.full(image_bgr)]
        if self.yunet is not None:
            from engine.detect.yunet import to_blazeface_frame

            runs.append(to_blazeface_frame(self.yunet(image_bgr)))
        short_side = min(image_bgr.shape[:2])
        for level in self.tile_levels if tiles else ():
            side = short_side // level
            if level > 1 or max(image_bgr.shape[:2]) > side:  # level 1 on a square image is the whole image
                runs += self._tiled(image_bgr, side)
        found = merge_boxes(np.concatenate([r.reshape(-1, 5) for r in runs]))
        if len(found) == 0 and tiles and self.yunet is not None:
            found = self._padded_retry(image_bgr)
        return found

    def _padded_retry(self, image_bgr: np.ndarray) -> np.ndarray:
        """YuNet once more on the image framed by black borders of ``NOTHING_FOUND_PAD`` of its size a side, for an
        image where every pass found nothing: the face is then smaller in YuNet's input and away from its edges,
        and on aflw2000_dev's image04337.jpg (a profile no pass finds, YuNet's best 0.34 on the image) it scores
        0.69. Only with the full scan (still images; every third detection in video), so a video with no face in
        view pays it on those detections only."""
        from engine.detect.yunet import to_blazeface_frame

        h, w = image_bgr.shape[:2]
        py, px = round(NOTHING_FOUND_PAD * h), round(NOTHING_FOUND_PAD * w)
        big = cv2.copyMakeBorder(image_bgr, py, py, px, px, cv2.BORDER_CONSTANT)
        boxes = to_blazeface_frame(self.yunet(big))
        boxes[:, [0, 2]] -= px
        boxes[:, [1, 3]] -= py
        return merge_boxes(boxes)

    def crop_boxes(self, image_bgr: np.ndarray) -> list[np.ndarray]:
        return [roi_box_from_detection(b) for b in self.detect(image_bgr)]

    def close(self) -> None:
        self.short.close()
        self.full.close()
