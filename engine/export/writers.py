"""Annotation writers: OpenFace 2.x CSV (OpenFace's columns with OpenFace's meanings), versioned JSON, 300-W .pts,
textured Wavefront .obj, H.264 overlay video (docs/exports.md).

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

from engine.export.atomic import atomic_write_bytes, atomic_write_text
from engine.export.openface import Camera, openface_geometry, openface_rotation
from engine.geometry.head_pose import POSE_CONVENTION, pose_record
from engine.pipeline import FrameResult
from engine.render import draw_result, label

CSV_HEAD = ["frame", "face_id", "timestamp", "confidence", "success", "pose_Tx", "pose_Ty", "pose_Tz",
            "pose_Rx", "pose_Ry", "pose_Rz"]
RIGID_PARAMS = ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"]
CSV_EXTRA = ["file", "method"]


def csv_columns() -> list[str]:
    """OpenFace 2.x's columns in its order (pose, 2D landmarks, 3D landmarks, rigid parameters), then this app's
    own: visibility ``v_i``, the image ``file`` and the ``method``."""
    cols = list(CSV_HEAD)
    for axis in ("x", "y", "X", "Y", "Z"):
        cols += [f"{axis}_{i}" for i in range(68)]
    cols += RIGID_PARAMS + [f"v_{i}" for i in range(68)]
    return cols + CSV_EXTRA


def _fmt(values, digits: int) -> list[str]:
    return [f"{v:.{digits}f}" for v in values]


def face_row(frame: FrameResult, face_id: int, method: str, r, camera: Camera, image_input: bool) -> list:
    """One CSV row with OpenFace's meanings (engine/export/openface.py, docs/exports.md)."""
    lm = r.landmarks
    try:
        g = openface_geometry(lm, r.pose, camera)
    except ValueError:  # collapsed landmarks have no scale: keep the pixels, leave the millimetres empty
        g = None
    row = [frame.index, face_id, _timestamp(frame, image_input), f"{r.confidence:.3f}", 1]
    row += [""] * 3 + _fmt(openface_rotation(r.pose), 5) if g is None else [*_fmt(g.pose_t, 1), *_fmt(g.pose_r, 5)]
    row += _fmt(lm[:, 0], 3) + _fmt(lm[:, 1], 3)
    if g is None:
        row += [""] * (3 * 68 + len(RIGID_PARAMS))
    else:
        row += _fmt(g.points_mm[:, 0], 2) + _fmt(g.points_mm[:, 1], 2) + _fmt(g.points_mm[:, 2], 2)
        row += [f"{g.p_scale:.5f}", *_fmt(g.p_r, 5), *_fmt(g.p_t, 3)]
    row += [int(v) for v in r.visible] + [frame.name, method]
    return row


def _timestamp(frame: FrameResult, image_input: bool) -> str:
    # OpenFace writes 0 for every image of a folder: unrelated pictures have no time
    return "0.000" if image_input else f"{frame.timestamp:.4f}"


def no_face_row(frame: FrameResult, method: str, image_input: bool) -> list:
    """OpenFace's row for a frame without a face: success 0, confidence 0; the measurements left empty (NaN in
    pandas) rather than OpenFace's zeros, which read as a face at the image's corner."""
    n_values = len(csv_columns()) - len(CSV_HEAD) - len(CSV_EXTRA) + 6   # 6 pose values of CSV_HEAD
    return [frame.index, 0, _timestamp(frame, image_input), "0.000", 0] + [""] * n_values + [frame.name, method]


class CsvWriter:
    """OpenFace-compatible CSV. ``intrinsics``: fx, fy, cx, cy in pixels (any may be None: OpenFace's default for
    that image size); ``image_input``: the source is a folder of unrelated images (timestamps 0)."""

    def __init__(self, path: Path, methods: list[str] | None = None, intrinsics: dict | None = None,
                 image_input: bool = False) -> None:
        self.path = path
        self.methods = list(methods or [])
        self.intrinsics = {k: v for k, v in (intrinsics or {}).items() if v is not None}
        self.image_input = image_input
        self.tmp = path.with_name(f".{path.name}.part")
        self.f = open(self.tmp, "w", newline="", encoding="utf-8")
        self.w = csv.writer(self.f)
        self.w.writerow(csv_columns())

    def camera(self, frame: FrameResult) -> Camera:
        h, w = frame.image.shape[:2]
        return Camera.for_image(w, h, **self.intrinsics)

    def add(self, frame: FrameResult) -> None:
        camera = self.camera(frame)
        written = set()
        for face in frame.faces:
            for method, r in face.results.items():
                self.w.writerow(face_row(frame, face.face_id, method, r, camera, self.image_input))
                written.add(method)
        for method in self.methods:
            if method not in written:
                self.w.writerow(no_face_row(frame, method, self.image_input))
        self.f.flush()

    def close(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)


# annotations.json's layout version (docs/annotation.schema.json): bump it when a field changes meaning or goes
JSON_FORMAT = "facealign-annotations"
JSON_FORMAT_VERSION = 2
JSON_UNITS = {"landmarks": "image pixels, 0-based pixel centres; x right, y down, z toward the camera on x's scale "
                           "(relative depth)",
              "box": "image pixels (x0, y0, x1, y1)", "pose": "degrees", "timestamp": "seconds (0 for image folders)",
              "timings_ms": "milliseconds", "confidence": "0..1, the face detector's score (docs/exports.md)"}



class JsonWriter:
    def __init__(self, path: Path, metadata: dict, image_input: bool = False) -> None:
        self.path = path
        self.image_input = image_input   # a folder of unrelated images: every timestamp is 0
        self.doc = {"format": JSON_FORMAT, "format_version": JSON_FORMAT_VERSION, "units": dict(JSON_UNITS),
                    "metadata": {**metadata, "pose_convention": POSE_CONVENTION}, "frames": []}
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
        timestamp = 0.0 if self.image_input else round(frame.timestamp, 4)
        self.doc["frames"].append({"frame": frame.index, "timestamp": timestamp,
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
    """An untextured .obj (y-up), triangles wound consistently (engine/export/obj_export.py)."""
    from engine.export.obj_export import orient_triangles

    flipped = np.asarray(verts, np.float64) * np.array([1.0, -1.0, 1.0])  # OBJ is y-up
    out = [f"v {x:.3f} {y:.3f} {z:.3f}" for x, y, z in flipped]
    out += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in orient_triangles(flipped, tris)]
    return "\n".join(out) + "\n"


def per_frame_stems(frame: FrameResult, image_input: bool) -> list[str]:
    """File stems of a frame's faces, in ``frame.faces`` order. Image inputs: the image's own name (``name``, then
    ``name_1``, ``name_2`` ... for more faces), so menpo and other 300-W readers pair each image with its .pts;
    videos: ``FRAME_FACEID`` (``000012_0``)."""
    if image_input and frame.name:
        stem = Path(frame.name).stem
        return [stem if k == 0 else f"{stem}_{k}" for k in range(len(frame.faces))]
    return [f"{frame.index:06d}_{face.face_id}" for face in frame.faces]


class PerFrameFiles:
    """Per frame, face and method: 300-W .pts (DIR/pts/METHOD/STEM.pts) or a textured .obj with its .mtl and .png
    (DIR/obj/METHOD/STEM.obj); STEM from ``per_frame_stems``."""

    def __init__(self, root: Path, kind: str, triangles: np.ndarray | None = None, image_input: bool = False) -> None:
        self.root = root / kind
        self.kind = kind
        self.triangles = triangles
        self.image_input = image_input

    def add(self, frame: FrameResult) -> None:
        from engine.export.obj_export import textured_obj

        for face, stem in zip(frame.faces, per_frame_stems(frame, self.image_input)):
            for method, r in face.results.items():
                d = self.root / method
                d.mkdir(parents=True, exist_ok=True)
                if self.kind == "pts":
                    atomic_write_text(d / f"{stem}.pts", pts_text(r.landmarks))
                    continue
                if r.dense is not None and r.dense_faces is not None:  # the densest surface (prnet's map)
                    verts, tris = r.dense, r.dense_faces
                else:
                    verts, tris = r.mesh, self.triangles
                obj, mtl, png = textured_obj(verts, tris, frame.image, stem)
                atomic_write_bytes(d / f"{stem}.png", png)
                atomic_write_text(d / f"{stem}.mtl", mtl)
                atomic_write_text(d / f"{stem}.obj", obj)   # last: an .obj on disk has its texture

    def close(self) -> None:
        pass


H264_ENCODERS = ("libx264", "libopenh264")   # PyAV's wheels carry FFmpeg with libx264
# audio codecs FFmpeg's MP4 muxer takes as they are; any other track (PCM from .mov/.avi, Vorbis...) becomes AAC
MP4_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "opus", "alac", "flac"}


def h264_encoder() -> str | None:
    """The first H.264 encoder PyAV's FFmpeg has, or None (no PyAV, or a build without one)."""
    try:
        import av
    except ImportError:
        return None
    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: BLE001  (PyAV raises its own UnknownCodecError / ValueError by version)
            continue
    return None


class VideoWriter:
    """The overlay video: H.264 (yuv420p, MP4) through PyAV with the source video's audio copied in (re-encoded to
    AAC when the MP4 container cannot hold its codec), up to the last frame written; without PyAV or an H.264
    encoder, OpenCV's MPEG-4 Part 2 (mp4v) and no audio. ``codec`` says which was used."""

    def __init__(self, path: Path, fps: float, triangles: np.ndarray | None = None,
                 audio_source: str | None = None) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.stem}.part{path.suffix}")
        self.fps = fps if fps and fps > 0 else 10.0
        self.triangles = triangles
        self.audio_source = audio_source
        self.encoder = h264_encoder()
        self.codec = "h264" if self.encoder else "mp4v"
        self.audio = False          # whether the file got the source's audio
        self.w: cv2.VideoWriter | None = None
        self._av = None             # (container, video stream) when encoding with PyAV
        self._frames = 0
        self._audio = None          # (source container, its audio stream, the output's, re-encode?) when copying
        self.size: tuple[int, int] | None = None

    def add(self, frame: FrameResult) -> None:
        img = frame.image.copy()
        for face in frame.faces:
            for r in face.results.values():
                draw_result(img, r, face.box, face.face_id, wireframe=False, triangles=self.triangles)
        label(img, f"frame {frame.index}")
        self.write(img)

    def write(self, img: np.ndarray) -> None:
        if self.size is None:
            h, w = img.shape[:2]
            self.size = (w - w % 2, h - h % 2)   # yuv420p needs even sides
            self._open()
        if (img.shape[1], img.shape[0]) != self.size:
            img = cv2.resize(img, self.size)
        if self._av is not None:
            import av

            container, stream = self._av
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            vf.pts = self._frames
            for packet in stream.encode(vf):
                container.mux(packet)
        else:
            self.w.write(img)
        self._frames += 1

    def _open(self) -> None:
        if self.encoder:
            from fractions import Fraction

            import av

            container = av.open(str(self.tmp), mode="w", format="mp4")
            rate = Fraction(self.fps).limit_denominator(1001)
            stream = container.add_stream(self.encoder, rate=rate)
            stream.width, stream.height = self.size
            stream.pix_fmt = "yuv420p"
            stream.time_base = 1 / rate
            # annotate-batch's workers run one thread each (FACEALIGN_THREADS=1, engine/export/batch.py): x264's own
            # pool would fight the other workers for the cores; 0 lets x264 choose
            stream.codec_context.thread_count = int(os.environ.get("FACEALIGN_THREADS", "0") or 0)
            self._av = (container, stream)
            if self.audio_source:
                self._add_audio_stream(container)
            return
        self.w = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self.w.isOpened():
            raise OSError(f"cannot encode video to {self.path}")

    def _add_audio_stream(self, container) -> None:
        """Declare the source's first audio track on the output (streams must exist before the first packet):
        copied as it is when MP4 can hold its codec, else re-encoded to AAC."""
        import av

        try:
            src = av.open(self.audio_source)
        except (av.FFmpegError, OSError):
            return
        if not src.streams.audio:
            src.close()
            return
        a_in = src.streams.audio[0]
        if a_in.codec_context.name in MP4_AUDIO_CODECS:
            a_out, transcode = container.add_stream_from_template(a_in), False
        else:
            a_out, transcode = container.add_stream("aac", rate=a_in.rate or 48000), True
        self._audio = (src, a_in, a_out, transcode)

    def _copy_audio(self, container) -> None:
        """The source's audio, up to the end of the last frame written."""
        src, a_in, a_out, transcode = self._audio
        end_s = self._frames / self.fps
        try:
            for packet in src.demux(a_in):
                if packet.pts is not None and float(packet.pts * a_in.time_base) >= end_s:
                    break
                if transcode:
                    for af in packet.decode():
                        af.pts = None
                        for out_packet in a_out.encode(af):
                            container.mux(out_packet)
                elif packet.dts is not None:
                    packet.stream = a_out
                    container.mux(packet)
            if transcode:
                for out_packet in a_out.encode(None):
                    container.mux(out_packet)
            self.audio = True
        finally:
            src.close()

    def close(self) -> None:
        if self._av is not None:
            container, stream = self._av
            try:
                for packet in stream.encode(None):
                    container.mux(packet)
                if self._audio is not None:
                    self._copy_audio(container)
            finally:
                container.close()
            os.replace(self.tmp, self.path)
        elif self.w is not None:
            self.w.release()
            os.replace(self.tmp, self.path)
