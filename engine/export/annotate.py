"""`main.py annotate`: run methods over a video or image folder and write annotations in several formats."""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.export.atomic import check_writable
from engine.export.writers import CsvWriter, JsonWriter, PerFrameFiles, VideoWriter
from engine.facemodel import load_face_model
from engine.methods.base import Method
from engine.pipeline import FrameProcessor, FrameResult
from engine.sources import open_source
from engine.version import package_version

FORMATS = ("csv", "json", "pts", "obj", "video")


@dataclass
class AnnotateSummary:
    frames: int = 0
    frames_with_face: int = 0
    faces: int = 0
    skipped: int = 0
    cancelled: bool = False
    seconds: float = 0.0
    frames_over_limit: int = 0   # frames where more faces were detected than max_faces allowed to track
    outputs: tuple[str, ...] = ()


def output_paths(out: Path, formats: list[str]) -> dict[str, Path]:
    names = {"csv": "annotations.csv", "json": "annotations.json", "pts": "pts", "obj": "obj",
             "video": "overlay.mp4"}
    return {f: out / names[f] for f in formats}


def weights_hash(methods) -> dict[str, str]:
    from engine.paths import weights_path

    out = {}
    for m in methods.values():
        p = weights_path(m.weights)
        out[m.name] = hashlib.sha256(p.read_bytes()).hexdigest()[:16] if p.exists() else "n/a"
    return out


def annotate(source_spec: str, methods: list[str] | list[Method], out_dir: str | Path, formats: list[str],
             force: bool = False,
             progress: Callable[[int, int | None], None] | None = None,
             cancelled: Callable[[], bool] | None = None,
             on_frame: Callable[[FrameResult], None] | None = None,
             detector=None, max_faces: int | None = None,
             camera: dict[str, float | None] | None = None, flip: bool = False) -> AnnotateSummary:
    """Annotate one video or image folder into ``out_dir``. ``methods`` are names, or loaded methods (and
    ``detector`` a loaded FaceDetector) that a caller reuses across inputs (annotate-batch's workers): what this
    call did not load, it does not close. ``camera``: the CSV's pinhole intrinsics {fx, fy, cx, cy} in pixels,
    any of them None or missing for OpenFace's default (engine/export/openface.py). ``flip``: every method
    flip-averaged (engine/methods/flip.py)."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if not methods:
        raise ValueError("no method given")
    from engine.detect.tracker import DEFAULT_MAX_FACES, check_max_faces

    max_faces = check_max_faces(DEFAULT_MAX_FACES if max_faces is None else max_faces)  # before anything opens
    camera = {k: v for k, v in (camera or {}).items() if v is not None}
    unknown = set(camera) - {"fx", "fy", "cx", "cy"}
    if unknown:
        raise ValueError(f"unknown camera intrinsic(s) {', '.join(sorted(unknown))}; use fx, fy, cx, cy")
    bad_focal = [f"{k}={v}" for k, v in camera.items() if k in ("fx", "fy") and not float(v) > 0]
    if bad_focal:
        raise ValueError(f"focal lengths must be positive pixels, got {', '.join(bad_focal)}")
    out = Path(out_dir)
    targets = output_paths(out, formats)
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} already exist; use --force to overwrite")
    source = open_source(source_spec)
    check_writable(out)
    from engine.detect.tracker import tracker_for_source

    per_image = source.kind == "images"
    tracker = tracker_for_source(source.kind, detector, max_faces)
    processor = FrameProcessor(methods, tracker=tracker, flip=flip)
    meta = {"methods": list(processor.methods), "weights_sha256": weights_hash(processor.methods),
            "providers": {n: m.provider for n, m in processor.methods.items()}, "source": str(source_spec),
            "flip_averaged": {n: m.flip for n, m in processor.methods.items()},
            "fps": source.fps, "max_faces": max_faces, "version": package_version(),
            "coordinates": "image pixels; z toward the camera, relative", "camera": camera or "OpenFace default"}
    tris = load_face_model().triangles
    writers = []
    summary = AnnotateSummary(outputs=tuple(str(p) for p in targets.values()))
    t0 = time.perf_counter()
    try:
        for f in formats:
            if f == "csv":
                writers.append(CsvWriter(targets[f], list(processor.methods), camera, image_input=per_image))
            elif f == "json":
                writers.append(JsonWriter(targets[f], meta, image_input=per_image))
            elif f in ("pts", "obj"):
                writers.append(PerFrameFiles(out, f, tris, image_input=per_image))
            elif f == "video":
                writers.append(VideoWriter(targets[f], source.fps, tris,
                                           audio_source=str(source_spec) if source.kind == "video" else None))
        for frame in source.frames():
            if cancelled and cancelled():
                summary.cancelled = True
                break
            if per_image:
                tracker.reset()
            res = processor.process(frame)
            for w in writers:
                w.add(res)
            summary.frames += 1
            summary.frames_with_face += bool(res.faces)
            summary.faces += len(res.faces)
            summary.frames_over_limit += res.faces_over_limit > 0
            if on_frame:
                on_frame(res)
            if progress:
                progress(summary.frames, source.length)
    finally:
        # on success, cancel or error alike: what was processed becomes valid files; the JSON says whether it is
        # the whole source or a part (cancelled, or stopped by an error)
        complete = not summary.cancelled and sys.exc_info()[0] is None
        for w in writers:
            if isinstance(w, JsonWriter):
                w.complete = complete
            w.close()
        for name, m in processor.methods.items():
            if name in methods:  # loaded here from its name
                m.close()
        if detector is None:
            tracker.detector.close()
        source.close()
        summary.skipped = source.skipped
        summary.seconds = time.perf_counter() - t0
    return summary
