"""Compare tiles: the region of the frame every tile shows (the faces with a margin, the same in every tile so the
methods line up), fitting a frame to a tile, and a label sized to the tile. Pure numpy/OpenCV: runs in the
pipeline's worker thread with the rest of the drawing."""
from __future__ import annotations

import cv2
import numpy as np

# margin around the faces' crop boxes, as a fraction of the boxes' size on each side: the whole head and some
# shoulder, so a turned head's far cheek and a mesh that misses the face are both in the tile
FACE_MARGIN = 0.35


def face_region(boxes: list[np.ndarray], image_shape: tuple[int, ...], aspect: float,
                margin: float = FACE_MARGIN) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the part of the image to show in a tile of width/height ``aspect``: the union of the
    faces' boxes grown by ``margin``, widened to the tile's aspect, kept inside the image; the whole image when
    there is no face or the faces fill it."""
    h, w = image_shape[:2]
    if not boxes or aspect <= 0:
        return 0, 0, w, h
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0 = b[:, 0].min(), b[:, 1].min()
    x1, y1 = b[:, 2].max(), b[:, 3].max()
    pad = margin * max(x1 - x0, y1 - y0)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    rw, rh = x1 - x0, y1 - y0
    if rw / rh < aspect:
        rw = rh * aspect
    else:
        rh = rw / aspect
    # no larger than the frame: a side that does not fit is the frame's (the tile letterboxes the rest; shrinking
    # both sides instead would cut the face in a wide, short tile)
    rw, rh = min(rw, w), min(rh, h)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    x0 = float(np.clip(cx - rw / 2, 0, w - rw))
    y0 = float(np.clip(cy - rh / 2, 0, h - rh))
    return int(round(x0)), int(round(y0)), int(round(x0 + rw)), int(round(y0 + rh))


def ease_region(previous: tuple[int, int, int, int] | None, target: tuple[int, int, int, int],
                rate: float = 0.35) -> tuple[int, int, int, int]:
    """Move a shown region part of the way to ``target``, so the zoom follows the head without shaking with
    every box; a jump of more than half the region's size (a cut, a seek) is taken at once."""
    if previous is None:
        return target
    p, t = np.asarray(previous, np.float64), np.asarray(target, np.float64)
    size = max(t[2] - t[0], t[3] - t[1])
    if np.abs(p - t).max() > 0.5 * size:
        return target
    return tuple(int(round(v)) for v in p + rate * (t - p))


def grid_columns(n: int, width: int, height: int, aspect: float = 1.0) -> int:
    """Columns for ``n`` tiles in a width x height area that show a region of width/height ``aspect`` largest
    (seven tiles in two columns were 443x135 px: a face about 60 px tall)."""
    best, best_scale = 1, 0.0
    for cols in range(1, n + 1):
        rows = -(-n // cols)
        tw, th = width / cols, height / rows
        scale = min(tw / aspect, th)
        if scale > best_scale + 1e-9:
            best, best_scale = cols, scale
    return best


def fit(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``bgr`` scaled to fit ``size`` (w, h) keeping its aspect ratio."""
    h, w = bgr.shape[:2]
    if size[0] <= 1 or size[1] <= 1:
        return bgr
    s = min(size[0] / w, size[1] / h)
    if abs(s - 1) < 1e-3:
        return bgr
    return cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))),
                      interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def label_scale(texts: list[str], width: int, min_scale: float = 0.45, max_scale: float = 0.7) -> float:
    """One text size for several tiles' labels (the same size in every tile): the largest at which the longest
    fits ``width``, but at least ``min_scale``."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    widest = max((cv2.getTextSize(t, font, 1.0, 1)[0][0] for t in texts), default=1)
    return float(np.clip((width - 12) / max(1, widest), min_scale, max_scale))


def tile_label(img: np.ndarray, text: str, min_scale: float = 0.45, max_scale: float = 0.7,
               scale: float | None = None) -> np.ndarray:
    """White text on a dark band along the tile's top, its size chosen to fit the tile's width (at least
    ``min_scale``: about 10 px capitals, readable; longer text is cut with an ellipsis), or ``scale``."""
    h, w = img.shape[:2]
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = max_scale if scale is None else scale
    (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    if tw > w - 12:
        scale = max(min_scale, scale * (w - 12) / tw)
        while len(text) > 3 and cv2.getTextSize(text, font, scale, 1)[0][0] > w - 12:
            text = text[:-4] + "..."
        (tw, th), _ = cv2.getTextSize(text, font, scale, 1)
    band = th + 12
    img[:min(band, h)] = (img[:min(band, h)] * 0.35).astype(np.uint8)
    cv2.putText(img, text, (6, th + 5), font, scale, (255, 255, 255), 1 if scale < 0.6 else 2, cv2.LINE_AA)
    return img
