"""The app's one door into the engine: starts/stops the live pipeline and re-emits its callbacks as Qt signals
(queued into the GUI thread, so the GUI never blocks on the engine).

Two rules keep the window responsive and honest:
- every pipeline gets a generation number, and anything an older pipeline still had queued (a result, an error,
  "finished") is dropped, so a restarted view never shows the previous method's frames or messages;
- video and camera results are coalesced: the GUI thread only ever has the newest result waiting, never a backlog
  that a key press would queue behind. A browsed folder delivers every image's result.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable

from app.qt import QtCore
from engine.detect.tracker import DEFAULT_MAX_FACES
from engine.pipeline import LivePipeline
from engine.runtime import SessionPolicy, set_session_policy
from engine.sources import Source, SourceError, open_source

# Sessions the app creates: one intra-op thread each, no spin-waiting, and the methods of a frame side by side on
# the cores instead (research/app_speed.py --policy off measures ONNX Runtime's defaults for comparison). With one
# thread per session the in-app ms per face is the figure `main.py bench` measures on one thread.
APP_THREAD_POLICY: SessionPolicy | None = SessionPolicy(threads=1, spinning=False)


def method_workers() -> int:
    """Threads that run one frame's methods side by side: one per core under the app's policy."""
    import os

    return max(1, os.cpu_count() or 1) if APP_THREAD_POLICY is not None else 1


class EngineBridge(QtCore.QObject):
    result = QtCore.Signal(object, object)   # FrameResult, {method: faces/s alone, "pipeline": fps}
    error = QtCore.Signal(str)
    finished = QtCore.Signal()
    started = QtCore.Signal(str)            # source description
    _posted = QtCore.Signal(int)
    _failed = QtCore.Signal(int, str)
    _ended = QtCore.Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.pipeline: LivePipeline | None = None
        self.source: Source | None = None
        self.smoothing = False
        self.flip = False
        self.max_faces = DEFAULT_MAX_FACES
        self.generation = 0
        # runs in the worker thread on each result before it is queued (the window's drawing and scaling)
        self.prepare: Callable | None = None
        self.latency: dict[str, float] = {}
        # engine.stream.OscStreamer or None, swapped by the GUI thread (app/stream_controls.py), used by the worker
        self.stream = None
        self._lock = threading.Lock()
        self._pending: deque = deque(maxlen=1)
        self._post_queued = False
        self._posted.connect(self._deliver, QtCore.Qt.QueuedConnection)
        self._failed.connect(lambda g, msg: self.error.emit(msg) if g == self.generation else None,
                             QtCore.Qt.QueuedConnection)
        self._ended.connect(lambda g: self.finished.emit() if g == self.generation else None,
                            QtCore.Qt.QueuedConnection)

    @staticmethod
    def available_methods() -> list[tuple[str, str, bool]]:
        """(name, description, weights present) for every registered method; a method without weights is
        described by why it cannot run and how to make its weights (the method box shows it disabled)."""
        from engine.methods.base import registry

        return [(n, i.description if i.available else f"{i.description}. {i.unavailable_reason()}", i.available)
                for n, i in sorted(registry().items())]

    @staticmethod
    def providers() -> str:
        from engine.runtime import preferred_providers

        return preferred_providers()[0]

    def start(self, spec: str, methods: list[str], loop: bool = True, max_frames: int | None = None,
              resolution: tuple[int, int] | None = None, start_index: int = 0, paused: bool = False) -> bool:
        """Play ``spec`` with ``methods`` from frame/image ``start_index`` (a seekable source), or show that one
        frame and wait (``paused``)."""
        self.stop()
        try:
            self.source = open_source(spec, loop=loop, resolution=resolution, browse=True)
        except SourceError as e:
            self.error.emit(str(e))
            return False
        gen = self.generation
        browse = self.source.kind == "images"
        if APP_THREAD_POLICY is not None:
            set_session_policy(APP_THREAD_POLICY)
            # OpenCV's own pool (remap, resize in the worker) likewise: one thread, so no stage waits for a
            # straggler thread of its own pool while the cores run other stages
            import cv2

            cv2.setNumThreads(1)
        with self._lock:
            self._pending = deque() if browse else deque(maxlen=1)
            self._post_queued = False
        self.pipeline = LivePipeline(self.source, methods, lambda r, f: self._on_result(gen, r, f),
                                     lambda msg: self._failed.emit(gen, msg), lambda: self._ended.emit(gen),
                                     smoothing=self.smoothing, max_frames=max_frames, frontalize=True, max_faces=self.max_faces,
                                     drop_frames=not browse, workers=method_workers(), flip=self.flip)
        if start_index and hasattr(self.source, "seek"):
            self.source.seek(start_index)
        if browse or paused:  # a folder opens on its image and waits for next/previous/play
            self.pipeline.paused.set()
            self.pipeline.step()
        self.pipeline.start()
        self.started.emit(self.source.description)
        return True

    def _on_result(self, gen: int, res, fps: dict) -> None:  # worker thread
        pipe = self.pipeline
        if gen != self.generation or pipe is None:
            return
        stream = self.stream
        if stream is not None:  # first, before drawing: the stream's latency is the pipeline's own
            try:
                stream.send_frame(res, pipe.method_names[0])  # never blocks; network trouble is only counted
            except Exception as e:  # a bug in the stream must not stop the pipeline; show it
                self._failed.emit(gen, f"streaming failed: {e}")
        if self.prepare is not None:
            try:
                self.prepare(res, fps)
            except Exception as e:  # a drawing bug must not stop the pipeline; show it
                self._failed.emit(gen, f"drawing failed: {e}")
        latency = pipe.method_latency_ms()
        with self._lock:
            self._pending.append((gen, res, fps, latency))
            if self._post_queued:
                return
            self._post_queued = True
        self._posted.emit(gen)

    def _deliver(self, _gen: int) -> None:  # GUI thread
        while True:
            with self._lock:
                if not self._pending:
                    self._post_queued = False
                    return
                gen, res, fps, latency = self._pending.popleft()
            if gen == self.generation:
                self.latency = latency
                self.result.emit(res, fps)

    def method_providers(self) -> dict[str, str]:
        proc = self.pipeline.processor if self.pipeline else None
        # the speed panel's provider column says when a method's latency includes flip averaging's mirrored pass
        return {n: m.provider + (" · flip avg" if m.flip else "") for n, m in proc.methods.items()} if proc else {}

    def set_paused(self, paused: bool) -> None:
        if self.pipeline:
            (self.pipeline.paused.set if paused else self.pipeline.paused.clear)()

    @property
    def paused(self) -> bool:
        return bool(self.pipeline and self.pipeline.paused.is_set())

    def set_smoothing(self, on: bool) -> None:
        self.smoothing = on
        if self.pipeline:
            self.pipeline.set_smoothing(on)

    def set_flip(self, on: bool) -> None:
        """Flip averaging (each crop and its mirror, averaged) for every method, from the running pipeline's next
        frame; its cost shows as the ``flip`` stage and in each method's latency."""
        self.flip = bool(on)
        if self.pipeline:
            self.pipeline.set_flip(self.flip)

    def set_max_faces(self, n: int) -> None:
        """How many faces the tracker follows; applies to the running pipeline from its next frame."""
        self.max_faces = int(n)
        if self.pipeline:
            self.pipeline.set_max_faces(self.max_faces)

    def length(self) -> int | None:
        return getattr(self.source, "length", None) if self.source is not None else None

    def seek(self, index: int) -> None:
        """Go to frame/image ``index``; while paused it is still processed and shown."""
        if self.source is not None and hasattr(self.source, "seek"):
            self.source.seek(index)
            if self.pipeline and self.pipeline.paused.is_set():
                self.pipeline.step()

    def stop(self) -> None:
        self.generation += 1
        if self.pipeline:
            self.pipeline.stop()
            self.pipeline = None
        if self.source:
            self.source.close()
            self.source = None
        with self._lock:
            self._pending.clear()

    @property
    def running(self) -> bool:
        return bool(self.pipeline and self.pipeline.running)
