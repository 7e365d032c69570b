"""Overlays drawn with OpenCV (no Qt): shared by the app's video view, overlay videos and compare grids."""
from __future__ import annotations

import cv2
import numpy as np

from engine.geometry.rotation import euler_to_matrix
from engine.result import AlignmentResult

VISIBLE = (80, 220, 60)     # BGR green
HIDDEN = (60, 60, 235)      # BGR red
MESH = (200, 200, 200)


def draw_result(img: np.ndarray, r: AlignmentResult, box: np.ndarray | None = None, face_id: int | None = None,
                wireframe: bool = False, axes: bool = True, triangles: np.ndarray | None = None) -> np.ndarray:
    """Draw one face's result (image pixels) in place; returns img."""
    scale = max(1.0, (np.ptp(r.landmarks[:, 0]) + np.ptp(r.landmarks[:, 1])) / 300.0)
    if wireframe and triangles is not None:
        pts = np.round(r.mesh[:, :2]).astype(np.int32)
        cv2.polylines(img, [pts[t] for t in triangles], True, MESH, 1, cv2.LINE_AA)
    rad = max(1, int(round(1.5 * scale)))
    for (x, y, _), v in zip(r.landmarks, r.visible):
        cv2.circle(img, (int(round(x)), int(round(y))), rad, VISIBLE if v else HIDDEN, -1, cv2.LINE_AA)
    if axes:
        c = r.landmarks[30, :2]
        rm = euler_to_matrix(*r.pose)
        length = 0.35 * np.ptp(r.landmarks[:, 0]) + 10
        for k, col in enumerate(((0, 0, 255), (0, 255, 0), (255, 0, 0))):
            d = rm[:, k] * np.array([1, -1, 1])  # model y up -> image y down
            end = c + length * d[:2]
            cv2.arrowedLine(img, tuple(np.round(c).astype(int)), tuple(np.round(end).astype(int)), col, 2,
                            cv2.LINE_AA, tipLength=0.15)
    if box is not None:
        x0, y0, x1, y1 = [int(round(v)) for v in box[:4]]
        cv2.rectangle(img, (x0, y0), (x1, y1), (255, 200, 0), 1)
        if face_id is not None:
            cv2.putText(img, f"#{face_id}", (x0 + 3, y0 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 200, 0), 2)
    return img


def label(img: np.ndarray, text: str, pos: tuple[int, int] = (8, 26)) -> np.ndarray:
    cv2.putText(img, text, pos, cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(img, text, pos, cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    return img


def grid(tiles: list[np.ndarray], cols: int | None = None) -> np.ndarray:
    """Tile equally sized images into a grid (blank tiles fill the last row)."""
    n = len(tiles)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w = tiles[0].shape[:2]
    out = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = t
    return out
