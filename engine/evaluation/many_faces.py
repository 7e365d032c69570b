"""Many small faces: a mosaic of aflw2000_dev images and how many of its faces a detector finds.

Each tile is one AFLW2000-3D image (one annotated face) scaled to the tile size; the face's ground-truth box is
the bounding box of its 68 official points. A face counts as found when a detection box overlaps it with IoU of at
least ``MATCH_IOU`` (BlazeFace's box is tighter than the 68-point box, forehead excluded, so the bar is 0.3), each
detection matching at most one face. ``python main.py many-faces --grid 4x2 --tile 450`` prints found/total.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.detect.tracker import iou

MATCH_IOU = 0.3


@dataclass
class Mosaic:
    image: np.ndarray          # (rows * tile, cols * tile, 3) BGR
    faces: np.ndarray          # (cols * rows, 4) ground-truth face boxes (x0, y0, x1, y1), image pixels
    names: list[str]


def build_mosaic(dev_dir: str | Path, cols: int, rows: int, tile: int, max_abs_yaw: float = 30.0,
                 seed: int = 0) -> Mosaic:
    """A cols x rows grid of distinct aflw2000_dev images (|yaw| <= max_abs_yaw, drawn with ``seed``), each
    resized to tile x tile pixels."""
    dev_dir = Path(dev_dir)
    lab = np.load(dev_dir / "labels.npz")
    pool = np.nonzero(np.abs(lab["yaw"]) <= max_abs_yaw)[0]
    n = cols * rows
    if n > len(pool):
        raise ValueError(f"a {cols}x{rows} mosaic needs {n} images; aflw2000_dev has {len(pool)} with |yaw| <= "
                         f"{max_abs_yaw}")
    pick = np.random.default_rng(seed).choice(pool, n, replace=False)
    image = np.zeros((rows * tile, cols * tile, 3), np.uint8)
    faces, names = [], []
    for k, i in enumerate(pick):
        name = str(lab["names"][i])
        img = cv2.imread(str(dev_dir / "images" / name))
        if img is None:
            raise FileNotFoundError(dev_dir / "images" / name)
        s = tile / img.shape[1], tile / img.shape[0]
        r, c = divmod(k, cols)
        image[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = cv2.resize(img, (tile, tile),
                                                                             interpolation=cv2.INTER_AREA)
        pts = lab["pts68"][i][:2].T * s
        faces.append([pts[:, 0].min() + c * tile, pts[:, 1].min() + r * tile,
                      pts[:, 0].max() + c * tile, pts[:, 1].max() + r * tile])
        names.append(name)
    return Mosaic(image, np.array(faces), names)


def count_found(faces: np.ndarray, detections: np.ndarray) -> int:
    """Faces matched by a detection (IoU >= MATCH_IOU), greedily by IoU, one detection per face."""
    pairs = sorted(((iou(f, d[:4]), i, j) for i, f in enumerate(faces) for j, d in enumerate(detections)),
                   reverse=True)
    used_f, used_d = set(), set()
    for score, i, j in pairs:
        if score < MATCH_IOU:
            break
        if i not in used_f and j not in used_d:
            used_f.add(i)
            used_d.add(j)
    return len(used_f)
