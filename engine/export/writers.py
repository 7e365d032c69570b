"""Annotation writers: OpenFace-2.0-style CSV, JSON, 300VW .pts, Wavefront .obj, overlay mp4.

Every writer is crash-safe: CSV rows stream into a hidden .part file (flushed per frame) that ``close()`` renames
into place; JSON, .pts and .obj are written whole under a temporary name and renamed; the video is encoded to a
temporary name and renamed once the container is closed. ``close()`` runs on success, cancel and error alike, so
what was processed is always a valid file.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np

from engine.export.atomic import atomic_write_text
from engine.geometry.head_pose import POSE_CONVENTION, csv_pose_radians, pose_record
from engine.pipeline import FrameResult
from engine.render import draw_result, label

CSV_HEAD = ["frame", "face_id", "timestamp", "confidence", "success", "pose_Tx", "pose_Ty", "pose_Tz",
            "pose_Rx", "pose_Ry", "pose_Rz"]


def csv_columns() -> list[str]:
    cols = list(CSV_HEAD)
    for axis in ("x", "y", "X", "Y", "Z", "v"):
        cols += [f"{axis}_{i}" for i in range(68)]
    return cols + ["method"]


def face_row(frame: FrameResult, face_id: int, method: str, r) -> list:
    """One CSV row. Pose: T = face centre in image pixels (x, y) and mean depth (z, pixels, relative); R = pitch,
    yaw, roll in radians (OpenFace's Rx, Ry, Rz order) of the result's rotation, the convention of
    engine/geometry/head_pose.py (``csv_pose_radians``; docs/head-pose.md)."""
    pitch, yaw, roll = csv_pose_radians(r.rotation)
    centre = r.mesh.mean(0)
    lm = r.landmarks
    row = [frame.index, face_id, f"{frame.timestamp:.4f}", f"{r.confidence:.3f}", 1,
           *(f"{v:.3f}" for v in centre), f"{pitch:.5f}", f"{yaw:.5f}", f"{roll:.5f}"]
    row += [f"{v:.3f}" for v in lm[:, 0]] + [f"{v:.3f}" for v in lm[:, 1]]
    row += [f"{v:.3f}" for v in lm[:, 0]] + [f"{v:.3f}" for v in lm[:, 1]] + [f"{v:.3f}" for v in lm[:, 2]]
    row += [int(v) for v in r.visible] + [method]
    return row


class CsvWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.part")
        self.f = open(self.tmp, "w", newline="", encoding="utf-8")
        self.w = csv.writer(self.f)
        self.w.writerow(csv_columns())

    def add(self, frame: FrameResult) -> None:
        for face in frame.faces:
            for method, r in face.results.items():
                self.w.writerow(face_row(frame, face.face_id, method, r))
        self.f.flush()

    def close(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)


class JsonWriter:
    def __init__(self, path: Path, metadata: dict) -> None:
        self.path = path
        self.doc = {"metadata": {**metadata, "pose_convention": POSE_CONVENTION}, "frames": []}
        self.complete = True  # False: cancelled or failed part-way; the file says it is partial

    def add(self, frame: FrameResult) -> None:
        faces = []
        for face in frame.faces:
            for method, r in face.results.items():
                faces.append({
                    "face_id": face.face_id, "method": method, "confidence": round(float(r.confidence), 4),
                    "box": [round(float(v), 2) for v in face.box],
                    "pose": pose_record(r.rotation),   # units and convention in the key names and metadata
                    "landmarks": np.round(r.landmarks, 3).tolist(),
                    "visible": [bool(v) for v in r.visible],
                    "timings_ms": {k: round(float(v), 3) for k, v in r.timings.items()},
                })
        self.doc["frames"].append({"frame": frame.index, "timestamp": round(frame.timestamp, 4),
                                   "name": frame.name, "faces": faces})

    def close(self) -> None:
        self.doc["metadata"]["frames_written"] = len(self.doc["frames"])
        self.doc["metadata"]["partial"] = not self.complete
        atomic_write_text(self.path, json.dumps(self.doc))


# 300-W/300VW .pts coordinates are 1-based: the centre of the top-left pixel is (1, 1) (the iBUG annotations'
# convention; menpo, for one, subtracts 1 on import). The engine's pixel centres are 0-based.
PTS_ORIGIN = 1.0


def pts_text(lm: np.ndarray) -> str:
    """A 300-W .pts file of (N, 2+) 0-based image-pixel points, written 1-based as the format expects."""
    xy = np.asarray(lm, np.float64)[:, :2] + PTS_ORIGIN
    lines = ["version: 1", f"n_points: {len(xy)}", "{"] + [f"{x:.3f} {y:.3f}" for x, y in xy] + ["}"]
    return "\n".join(lines) + "\n"


def read_pts(path: str | Path) -> np.ndarray:
    """(N, 2) 0-based image-pixel x, y of a 300-W .pts file (the inverse of ``pts_text``)."""
    text = Path(path).read_text(encoding="utf-8")
    if "{" not in text or "}" not in text:
        raise ValueError(f"{path}: not a .pts file (no {{ ... }} block)")
    body = text[text.index("{") + 1:text.rindex("}")].split()
    return np.array(body, np.float64).reshape(-1, 2) - PTS_ORIGIN


def obj_text(verts: np.ndarray, tris: np.ndarray) -> str:
    out = [f"v {x:.3f} {-y:.3f} {z:.3f}" for x, y, z in verts]  # OBJ is y-up
    out += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in tris]
    return "\n".join(out) + "\n"


class PerFrameFiles:
    """300VW-style .pts (and optionally .obj) per frame, face and method: DIR/pts/METHOD/000012_0.pts."""

    def __init__(self, root: Path, kind: str, triangles: np.ndarray | None = None) -> None:
        self.root = root / kind
        self.kind = kind
        self.triangles = triangles

    def add(self, frame: FrameResult) -> None:
        for face in frame.faces:
            for method, r in face.results.items():
                d = self.root / method
                d.mkdir(parents=True, exist_ok=True)
                name = f"{frame.index:06d}_{face.face_id}.{self.kind}"
                if self.kind == "pts":
                    text = pts_text(r.landmarks)
                elif r.dense is not None and r.dense_faces is not None:  # the densest surface (prnet's map)
                    text = obj_text(r.dense, r.dense_faces)
                else:
                    text = obj_text(r.mesh, self.triangles)
                atomic_write_text(d / name, text)

    def close(self) -> None:
        pass


class VideoWriter:
    def __init__(self, path: Path, fps: float, triangles: np.ndarray | None = None) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        self.fps = fps if fps and fps > 0 else 10.0
        self.triangles = triangles
        self.w: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None

    def add(self, frame: FrameResult) -> None:
        img = frame.image.copy()
        for face in frame.faces:
            for r in face.results.values():
                draw_result(img, r, face.box, face.face_id, wireframe=False, triangles=self.triangles)
        label(img, f"frame {frame.index}")
        if self.w is None:
            h, w = img.shape[:2]
            self.size = (w - w % 2, h - h % 2)
            self.w = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.w.isOpened():
                raise OSError(f"cannot encode video to {self.path}")
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        self.w.write(img)

    def close(self) -> None:
        if self.w is not None:
            self.w.release()
            os.replace(self.tmp, self.path)
