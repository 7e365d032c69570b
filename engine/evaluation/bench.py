"""`main.py bench`: per-method ms/face on fixed crops at 1 and 2 threads, ms/face with 1, 4 and 16 faces per frame
(one batched call), and end-to-end FPS through the threaded pipeline on the test video (a generated clip when
shared data is absent)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from engine.methods.base import LANDMARK_STAGE, NoFaceError
from engine.methods.factory import create
from engine.paths import data_path


def fixed_crops(n: int = 8) -> list[np.ndarray]:
    from engine.evaluation.aflw2000 import crop_image, load_set

    try:
        ds = load_set(data_path("aflw2000_dev"))
        return [crop_image(cv2.imread(str(ds.image_path(i))), ds.roi_box[i]) for i in range(n)]
    except FileNotFoundError:
        return synthetic_faces(n)


def synthetic_faces(n: int) -> list[np.ndarray]:
    """Plain drawn faces (for timing only, when no real data is present)."""
    out = []
    for k in range(n):
        img = np.full((120, 120, 3), 40 + 10 * k, np.uint8)
        cv2.ellipse(img, (60, 62), (34, 44), 0, 0, 360, (150, 170, 200), -1)
        for x in (46, 74):
            cv2.circle(img, (x, 52), 4, (40, 40, 40), -1)
        cv2.line(img, (60, 56), (58, 72), (90, 110, 140), 2)
        cv2.ellipse(img, (60, 84), (12, 5), 0, 0, 180, (60, 60, 150), 2)
        out.append(img)
    return out


def _create(name: str, threads: int, quantized: bool = False):
    if name == "mediapipe":
        return create(name)
    return create(name, threads=threads, quantized=quantized)


def ms_per_face(name: str, threads: int = 1, repeats: int = 100, warmup: int = 10,
                crops: list[np.ndarray] | None = None, quantized: bool = False) -> dict[str, float]:
    """Median / min / max ms of ``align`` on fixed crops after a warm-up (``quantized``: the INT8 model)."""
    crops = crops or fixed_crops()
    m = _create(name, threads, quantized)
    provider = m.provider
    for k in range(warmup):
        try:
            m.align(crops[k % len(crops)])
        except NoFaceError:
            pass
    times = []
    for k in range(repeats):
        t0 = time.perf_counter()
        try:
            m.align(crops[k % len(crops)])
        except NoFaceError:  # no face in a crop: the time still counts
            pass
        times.append((time.perf_counter() - t0) * 1e3)
    m.close()
    return {"median": float(np.median(times)), "min": float(np.min(times)), "max": float(np.max(times)),
            "provider": provider}


FACES_PER_FRAME = (1, 4, 16)


def ms_per_face_batched(name: str, faces: int, threads: int = 1, repeats: int = 100, warmup: int = 3,
                        crops: list[np.ndarray] | None = None, quantized: bool = False) -> dict[str, float]:
    """Median ms per face when a frame holds ``faces`` faces, all aligned by one ``align_batch`` call, and the
    median per-face split of that call into network and tail (decode + visibility + result)."""
    crops = crops or fixed_crops()
    frame = [crops[k % len(crops)] for k in range(faces)]
    m = _create(name, threads, quantized)
    for _ in range(warmup):
        m.align_batch(frame)
    times, network = [], []
    for _ in range(max(10, repeats * 4 // (faces + 3))):  # ~the same face count at every batch size
        t0 = time.perf_counter()
        res = m.align_batch(frame)
        times.append((time.perf_counter() - t0) * 1e3 / faces)
        # a chained method's networks together (CPRFA's CPR-H: mtcnn3d, then its own graph)
        network.append(next((r.timings["network"] + r.timings.get(LANDMARK_STAGE, 0.0)
                             for r in res if r is not None), np.nan))
    m.close()
    per_face = float(np.median(times))
    return {"ms_per_face": per_face, "network": float(np.nanmedian(network)),
            "tail": per_face - float(np.nanmedian(network))}


def generated_clip(path: Path, frames: int = 40) -> Path:
    faces = synthetic_faces(4)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 360))
    for i in range(frames):
        img = np.zeros((360, 640, 3), np.uint8)
        f = cv2.resize(faces[i % 4], (200, 200))
        x = 100 + 4 * i
        img[80:280, x:x + 200] = f
        w.write(img)
    w.release()
    return path


def pipeline_fps(name: str, video: str | Path | None = None, seconds: float = 5.0,
                 quantized: bool = False) -> dict[str, float]:
    """Frames per second the threaded pipeline delivers on a looping video, the capture thread decoding the next
    frame while the worker aligns the current one (measured for ``seconds`` after the first result, so start-up is
    excluded), and how many of the video's frames have a tracked face when every frame is processed in order."""
    import threading

    from engine.pipeline import FrameProcessor, LivePipeline
    from engine.sources import open_source

    tmp = None
    if video is None:
        v = data_path("video", "obama.mp4")
        if v.exists():
            video = v
        else:
            tmp = tempfile.TemporaryDirectory()
            video = generated_clip(Path(tmp.name) / "clip.mp4")
    first = threading.Event()
    method = create(name, quantized=True) if quantized else name
    pipe = LivePipeline(open_source(str(video), loop=True), [method], lambda res, fps: first.set(), realtime=False,
                        drop_frames=False)
    pipe.start()
    first.wait(120)
    n0, t0 = pipe.frames_processed, time.perf_counter()
    time.sleep(seconds)
    n1, t1 = pipe.frames_processed, time.perf_counter()
    pipe.stop()
    proc = FrameProcessor([create(name, quantized=True) if quantized else name])
    frames = tracked = 0
    for frame in open_source(str(video)).frames():
        frames += 1
        tracked += bool(proc.process(frame).faces)
    proc.close()
    if tmp:
        tmp.cleanup()
    return {"fps": (n1 - n0) / (t1 - t0), "frames": frames, "with_face": tracked, "video": str(video)}


def bench(methods: list[str], repeats: int = 100, quantized: bool = False) -> dict:
    """Every method's numbers; ``quantized``: each ONNX method's INT8 variant too, measured right after the float
    model in the same run, under the key ``NAME:int8``."""
    from engine.methods.base import registry
    from engine.methods.onnx_method import OnnxMethod

    out = {}
    crops = fixed_crops()
    runs = [(name, False) for name in methods]
    if quantized:
        runs = [r for name in methods for r in
                [(name, False)] + ([(name, True)] if issubclass(registry()[name].factory, OnnxMethod) else [])]
    for name, q in runs:
        one = ms_per_face(name, 1, repeats, crops=crops, quantized=q)
        two = ms_per_face(name, 2, repeats, crops=crops, quantized=q)
        batched = {k: ms_per_face_batched(name, k, 1, repeats, crops=crops, quantized=q) for k in FACES_PER_FRAME}
        pipe = pipeline_fps(name, quantized=q)
        out[f"{name}:int8" if q else name] = {"ms_per_face_1t": round(one["median"], 3), "ms_per_face_2t": round(two["median"], 3),
                     # one thread, every face of a frame in one align_batch call: per face, and its split
                     "ms_per_face_by_faces": {str(k): round(v["ms_per_face"], 3) for k, v in batched.items()},
                     "network_ms_by_faces": {str(k): round(v["network"], 3) for k, v in batched.items()},
                     "tail_ms_by_faces": {str(k): round(v["tail"], 3) for k, v in batched.items()},
                     "ms_per_face_1t_min_max": [round(one["min"], 3), round(one["max"], 3)],
                     "ms_per_face_2t_min_max": [round(two["min"], 3), round(two["max"], 3)],
                     "pipeline_fps": round(pipe["fps"], 2), "pipeline_frames": pipe["frames"],
                     "pipeline_frames_with_face": pipe["with_face"], "provider": one["provider"]}
    return {"methods": out}
