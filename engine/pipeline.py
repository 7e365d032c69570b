"""Frame processing and the threaded live pipeline.

``FrameProcessor`` turns one frame into a ``FrameResult`` (track faces, align each with every selected method,
map to image pixels, optional smoothing); the offline commands call it on every frame. ``LivePipeline`` runs a
capture thread and a worker thread with a latest-frame hand-off: the worker always takes the newest frame and
older ones are dropped, so latency never queues up behind a slow method.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from engine.detect.crop_policy import crop_image
from engine.methods.base import LANDMARK_STAGE, Method
from engine.methods.factory import create
from engine.result import AlignmentResult
from engine.smoothing import OneEuroFilter
from engine.sources import Frame, Source


# the live pipeline (frames dropped to keep up) re-detects tracked faces on the tracker's own thread
# (FaceTracker's ``background``); research/app_speed.py turns it off for an A/B
LIVE_BACKGROUND_DETECTION = True

# a frame further than this from the previous one processed (seconds of the source's own time) has stale tracks:
# 3 frames at 25 fps. A live view that keeps up never reaches it; one that drops frames re-detects each frame
STALE_AFTER_S = 0.13


@dataclass
class FaceResult:
    face_id: int
    box: np.ndarray                                   # crop box in image pixels
    results: dict[str, AlignmentResult]               # method -> result in image pixels


@dataclass
class FrameResult:
    index: int
    timestamp: float
    image: np.ndarray
    faces: list[FaceResult]
    timings: dict[str, float] = field(default_factory=dict)   # stage -> ms for this frame
    method_ms: dict[str, float] = field(default_factory=dict)  # method -> ms for all its faces in this frame
    name: str = ""
    frontal: np.ndarray | None = None  # frontalized first face (primary method), when asked for
    faces_over_limit: int = 0          # faces detected beyond the tracker's max_faces (at its last re-detection)
    faces_tracked: int = 0             # crops handed to the methods (0: the detector found no face)
    # filled by a front end in the worker thread (the GUI draws and scales its views there, off its own thread)
    display: dict = field(default_factory=dict)


class FrameProcessor:
    def __init__(self, methods: list[str] | list[Method], tracker=None, smoothing: bool = False,
                 frontalize: bool = False, max_faces: int | None = None, workers: int = 1,
                 flip: bool = False, background_detection: bool = False,
                 crop_ensemble: int | None = None) -> None:
        """``workers`` > 1: the methods of one frame run side by side on that many threads (compare mode on a
        multi-core machine; ONNX Runtime and most of the tails release the GIL). Each method's ms stays its own
        wall time, so with one thread per session it is comparable with `main.py bench`'s one-thread figure.
        ``flip``: flip-average every method (engine/methods/flip.py); loaded methods are wrapped, not reloaded.
        ``background_detection``: the default tracker re-detects tracked faces on a thread of its own (a live
        view; FaceTracker's ``background``); offline runs keep every detection in its frame.
        ``crop_ensemble``: crops per face where a face was just found (engine/methods/crop_ensemble.py; None: its
        ``ENSEMBLE_CROPS``, 1: the settled crop alone); a tracked face in video aligns at one crop per frame."""
        from engine.methods.crop_ensemble import ENSEMBLE_CROPS, ensemble_boxes

        self.crop_ensemble = ENSEMBLE_CROPS if crop_ensemble is None else int(crop_ensemble)
        ensemble_boxes(np.zeros(4), self.crop_ensemble)  # a size out of range fails here, not on the first face
        from engine.methods.flip import with_flip

        self.methods: dict[str, Method] = {}
        for m in methods:
            inst = create(m, flip=flip) if isinstance(m, str) else (with_flip(m, True) if flip else m)
            self.methods[inst.name] = inst
        if tracker is None:
            from engine.detect.tracker import FaceTracker

            tracker = FaceTracker(background=background_detection)
        if max_faces is not None:
            tracker.set_max_faces(max_faces)
        self.tracker = tracker
        self.smoothing = smoothing
        self._filters: dict[tuple[int, str], OneEuroFilter] = {}
        self.primary = next(iter(self.methods))
        self.frontalize = frontalize
        self._sampler = None
        self._last_t: float | None = None
        self._pool = None
        if workers > 1 and len(self.methods) > 1:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(min(workers, len(self.methods)), thread_name_prefix="facealign-method")
        self._last_ms: dict[str, float] = {}

    def process(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        # frames far apart (dropped by a slow pipeline, a seek, a loop): the tracks' crops are stale
        stale = self._last_t is not None and not 0 < frame.timestamp - self._last_t <= STALE_AFTER_S
        self._last_t = frame.timestamp
        tracks = self.tracker.boxes_for(frame.image, stale=stale) if stale else self.tracker.boxes_for(frame.image)
        t_det = time.perf_counter()
        # a face the detector just found: settle its crop onto the training crops' framing (the primary method's
        # landmark re-crop, repeated until the box stops moving); tracked faces re-crop once per frame instead
        fresh = [tr for tr in tracks if getattr(tr, "landmarks", None) is None]
        if fresh:
            from engine.detect.front_end import settle_boxes

            for tr, settled in zip(fresh, settle_boxes(self.methods[self.primary], frame.image,
                                                       [tr.box for tr in fresh])):
                tr.box = settled.box
        t_settle = time.perf_counter()
        faces, method_ms = [], {n: 0.0 for n in self.methods}
        stage = {"detect": (t_det - t0) * 1e3, "settle crop": (t_settle - t_det) * 1e3, "align": 0.0,
                 "visibility": 0.0}
        # a face just found is aligned at a crop ensemble around its settled box (averaged in image pixels); a
        # tracked face at its one box
        from engine.methods.crop_ensemble import average_results, ensemble_boxes

        fresh_ids = {id(tr) for tr in fresh}
        member_boxes = [ensemble_boxes(tr.box, self.crop_ensemble) if id(tr) in fresh_ids else [tr.box]
                        for tr in tracks]
        owner = [k for k, boxes in enumerate(member_boxes) for _ in boxes]
        flat_boxes = [b for boxes in member_boxes for b in boxes]
        crops = [crop_image(frame.image, b) for b in flat_boxes]
        # each method aligns every face of the frame in one batch (one network call, one vectorised tail)
        batch: dict[str, list[AlignmentResult | None]] = {}
        if self._pool is not None and crops:
            # the slowest first, so the others fill the remaining cores while it runs
            order = sorted(self.methods, key=lambda n: -self._last_ms.get(n, 0.0))
            futures = {n: self._pool.submit(_timed_batch, self.methods[n], crops) for n in order}
            for name in self.methods:
                batch[name], method_ms[name] = futures[name].result()
        else:
            for name, m in self.methods.items():
                batch[name], method_ms[name] = _timed_batch(m, crops)
        self._last_ms.update(method_ms)
        per_track: dict[str, list[list[AlignmentResult]]] = {name: [[] for _ in tracks] for name in self.methods}
        for name in self.methods:
            for r, k, b in zip(batch[name], owner, flat_boxes):
                if r is not None:  # None: the method found no face in this crop
                    per_track[name][k].append(r.to_image(b))
        for k, tr in enumerate(tracks):
            out: dict[str, AlignmentResult] = {}
            raw_primary = None
            for name in self.methods:
                members = per_track[name][k]
                if not members:  # the method found no face in this face's crops
                    continue
                r = average_results(members)
                stage["align"] += r.timings.get("network", 0.0) + r.timings.get("decode", 0.0)
                stage["visibility"] += r.timings.get("visibility", 0.0)
                if "flip" in r.timings:  # flip averaging's extra cost: the mirrored pass and the averaging
                    stage["flip"] = stage.get("flip", 0.0) + r.timings["flip"]
                if LANDMARK_STAGE in r.timings:  # a chained method's first network (CPRFA's CPR-H: mtcnn3d)
                    stage[LANDMARK_STAGE] = stage.get(LANDMARK_STAGE, 0.0) + r.timings[LANDMARK_STAGE]
                r.confidence = tr.score  # the detector's score for this face (docs/exports.md)
                if name == self.primary:  # the next crop follows the face as found, not as smoothed (lagging)
                    raw_primary = r.landmarks.copy()
                if self.smoothing:
                    r = self._smooth(tr.face_id, name, r, frame.timestamp)
                out[name] = r
            self.tracker.update(tr, raw_primary if self.primary in out else None)
            if out:
                faces.append(FaceResult(tr.face_id, tr.box.copy(), out))
        frontal = None
        if self.frontalize and faces and self.primary in faces[0].results:
            tf = time.perf_counter()
            frontal = self._frontal(frame.image, faces[0].results[self.primary])
            stage["frontalize"] = (time.perf_counter() - tf) * 1e3
        stage["total"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(frame.index, frame.timestamp, frame.image, faces, stage, method_ms, frame.name, frontal,
                           faces_over_limit=getattr(self.tracker, "over_limit", 0), faces_tracked=len(tracks))

    def set_flip(self, on: bool) -> None:
        """Flip averaging on or off for every method, from the next frame, keeping the loaded models."""
        from engine.methods.flip import with_flip

        # one assignment: a frame in progress keeps iterating the dict it started with
        self.methods = {n: with_flip(m, on) for n, m in self.methods.items()}

    def _frontal(self, image: np.ndarray, result: AlignmentResult) -> np.ndarray:
        """The face seen from the front, through the mean shape's frontal raster for every method: the sampling
        map depends only on the topology, so it is built once and each frame is one remap (about 1 ms; a method's
        own frontal shape, rasterised per frame, cost 13-37 ms)."""
        if self._sampler is None:
            from engine.facemodel import load_face_model
            from engine.geometry.frontalize import FrontalSampler, frontal_raster

            fm = load_face_model()
            raster = frontal_raster(fm.mean[:468] * np.array([1.0, -1.0, 1.0]), fm.triangles)
            self._sampler = FrontalSampler(raster, fm.triangles, 468)
        return self._sampler(image, result.mesh)

    def _smooth(self, face_id: int, name: str, r: AlignmentResult, t: float) -> AlignmentResult:
        f = self._filters.setdefault((face_id, name), OneEuroFilter())
        stacked = f(np.concatenate([r.landmarks, r.mesh]), t)
        r.landmarks, r.mesh = stacked[:68], stacked[68:]
        return r

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        stop = getattr(self.tracker, "close", None)
        if stop:  # its background detection first: it uses the detector closed below
            stop()
        for m in self.methods.values():
            m.close()
        close = getattr(self.tracker.detector, "close", None)
        if close:
            close()


def _timed_batch(method: Method, crops: list[np.ndarray]) -> tuple[list[AlignmentResult | None], float]:
    """One method on every crop of a frame, and its wall time in ms."""
    t0 = time.perf_counter()
    out = method.align_batch(crops) if crops else []
    return out, (time.perf_counter() - t0) * 1e3


class FpsMeter:
    """Frames per second over a sliding window of completion times."""

    def __init__(self, window: int = 30) -> None:
        self.times: deque[float] = deque(maxlen=window)

    def tick(self, t: float | None = None) -> None:
        self.times.append(time.perf_counter() if t is None else t)

    @property
    def fps(self) -> float:
        if len(self.times) < 2:
            return 0.0
        span = self.times[-1] - self.times[0]
        return (len(self.times) - 1) / span if span > 0 else 0.0


class LivePipeline:
    """Capture thread + worker thread. ``on_result(FrameResult, fps: dict)`` is called from the worker thread
    (the GUI re-emits it as a Qt signal); ``on_error(str)`` for failures; ``on_finished()`` at the end."""

    def __init__(self, source: Source, methods: list[str], on_result: Callable, on_error: Callable | None = None,
                 on_finished: Callable | None = None, smoothing: bool = False, max_frames: int | None = None,
                 realtime: bool = True, frontalize: bool = False, drop_frames: bool = True,
                 max_faces: int | None = None, workers: int = 1, flip: bool = False) -> None:
        self.source = source
        self.flip = flip
        self.workers = workers  # methods of one frame side by side (FrameProcessor's ``workers``)
        self.max_faces = max_faces  # None: the tracker's default
        self.method_names = methods
        self.on_result = on_result
        self.on_error = on_error or (lambda msg: None)
        self.on_finished = on_finished or (lambda: None)
        self.smoothing = smoothing
        self.max_frames = max_frames
        self.realtime = realtime  # pace video files at their frame rate, as a player would
        self.frontalize = frontalize
        # False: the capture waits for the worker instead of replacing its pending frame (benchmarks: the clip is
        # decoded exactly as fast as it is processed, no CPU spent decoding frames that are then dropped)
        self.drop_frames = drop_frames
        self.paused = threading.Event()
        self._step = threading.Event()  # let one frame through while paused (a folder's next image, a seek)
        self._latest: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._capture_done = False
        self.frames_captured = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        # per method: ms per face over the last 30 frames with a face; its latency (the mean) and throughput
        # alone (1000 / the mean) come from this one window so they always agree. The pipeline's delivered frame
        # rate is separate (in compare mode every method shares it)
        self._method_ms: dict[str, deque] = {m: deque(maxlen=30) for m in methods}
        self.pipeline_fps = FpsMeter()
        self.processor: FrameProcessor | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._capture, name="facealign-capture", daemon=True),
                         threading.Thread(target=self._work, name="facealign-worker", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        wake = getattr(self.source, "wake", None)
        if wake:  # a browsed folder waits at its last image
            wake()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def method_fps(self) -> dict[str, float]:
        """Faces per second each method would align on its own: 1000 / its mean ms per face (30-frame window)."""
        return {n: (1000.0 / float(np.mean(d)) if d else 0.0) for n, d in self._method_ms.items()}

    def method_latency_ms(self) -> dict[str, float]:
        """Mean ms per face of each method over the same 30-frame window as ``method_fps``."""
        return {n: (float(np.mean(d)) if d else 0.0) for n, d in self._method_ms.items()}

    def step(self) -> None:
        """While paused, let the next frame (or a seek's target) through."""
        self._step.set()

    def set_smoothing(self, on: bool) -> None:
        self.smoothing = on
        if self.processor:
            self.processor.smoothing = on

    def set_flip(self, on: bool) -> None:
        """Flip averaging on or off, live (the next frame uses it; the speed window restarts)."""
        self.flip = on
        if self.processor:
            self.processor.set_flip(on)
        for d in self._method_ms.values():  # the latency shown must be one mode's, not a mix of both
            d.clear()

    def set_max_faces(self, max_faces: int) -> None:
        """Change how many faces are tracked, live (the next frame uses it)."""
        from engine.detect.tracker import check_max_faces

        self.max_faces = check_max_faces(max_faces)
        if self.processor:
            self.processor.tracker.set_max_faces(self.max_faces)

    def _capture(self) -> None:
        t_start = time.perf_counter()
        last_index = -1
        try:
            for frame in self.source.frames():
                if frame.index != last_index + 1:  # a seek or a loop: restart the clock at this frame
                    t_start = time.perf_counter() - frame.timestamp
                last_index = frame.index
                while self.paused.is_set() and not self._stop.is_set() and not self._step.is_set():
                    if getattr(self.source, "seek_pending", False):
                        break
                    self._stop.wait(0.05)
                    t_start = time.perf_counter() - frame.timestamp
                if self._stop.is_set():
                    break
                if getattr(self.source, "seek_pending", False):
                    continue  # this frame was read before the seek: the generator now goes to the target
                self._step.clear()
                if self.realtime and self.source.kind == "video" and self.source.fps > 0:
                    wait = frame.timestamp - (time.perf_counter() - t_start)
                    if wait > 0:
                        self._stop.wait(wait)
                with self._cond:
                    while not self.drop_frames and self._latest is not None and not self._stop.is_set():
                        self._cond.wait(0.05)
                    if self._latest is not None:
                        self.frames_dropped += 1
                    self._latest = frame
                    self.frames_captured += 1
                    self._cond.notify_all()
                if self.max_frames and self.frames_captured >= self.max_frames:
                    break
        except Exception as e:  # a decoder failure mid-stream: report, keep the app alive
            self.on_error(f"reading {self.source.description} failed: {e}")
        finally:
            with self._cond:
                self._capture_done = True
                self._cond.notify_all()

    def _work(self) -> None:
        try:
            # a live view (frames dropped to keep up) re-detects in the background: a frame that waited for a
            # whole-image detection missed the frame period and dropped the next one
            self.processor = FrameProcessor(self.method_names, smoothing=self.smoothing, frontalize=self.frontalize,
                                            max_faces=self.max_faces, workers=self.workers, flip=self.flip,
                                            background_detection=(LIVE_BACKGROUND_DETECTION and self.drop_frames
                                                                  and self.source.kind != "images"))
        except Exception as e:
            self.on_error(f"cannot start the methods: {e}")
            self._stop.set()
            self.on_finished()
            return
        try:
            while not self._stop.is_set():
                with self._cond:
                    while self._latest is None and not self._capture_done and not self._stop.is_set():
                        self._cond.wait(0.1)
                    frame, self._latest = self._latest, None
                    self._cond.notify_all()
                    if frame is None:
                        if self._capture_done or self._stop.is_set():
                            break
                        continue
                if self.source.kind == "images":  # unrelated pictures: detect afresh, never track across them
                    self.processor.tracker.reset()
                res = self.processor.process(frame)
                self.pipeline_fps.tick()
                for name, ms in res.method_ms.items():
                    if res.faces:
                        self._method_ms.setdefault(name, deque(maxlen=30)).append(ms / len(res.faces))
                self.frames_processed += 1
                self.on_result(res, self.method_fps() | {"pipeline": self.pipeline_fps.fps})
        except Exception as e:
            self.on_error(f"processing failed: {e}")
        finally:
            self.processor.close()
            self.on_finished()
