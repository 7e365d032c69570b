"""The app's one door into the engine: starts/stops the live pipeline and re-emits its callbacks as Qt signals
(queued into the GUI thread, so the GUI never blocks on the engine)."""
from __future__ import annotations

from app.qt import QtCore
from engine.detect.tracker import DEFAULT_MAX_FACES
from engine.pipeline import LivePipeline
from engine.sources import Source, SourceError, open_source


class EngineBridge(QtCore.QObject):
    result = QtCore.Signal(object, object)   # FrameResult, {method: fps, "pipeline": fps}
    error = QtCore.Signal(str)
    finished = QtCore.Signal()
    started = QtCore.Signal(str)            # source description

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.pipeline: LivePipeline | None = None
        self.source: Source | None = None
        self.smoothing = False
        self.max_faces = DEFAULT_MAX_FACES

    @staticmethod
    def available_methods() -> list[tuple[str, str, bool]]:
        """(name, description, weights present) for every registered method."""
        from engine.methods.base import registry
        from engine.paths import weights_path

        return [(n, i.description, weights_path(i.weights).exists()) for n, i in sorted(registry().items())]

    @staticmethod
    def providers() -> str:
        from engine.runtime import preferred_providers

        return preferred_providers()[0]

    def start(self, spec: str, methods: list[str], loop: bool = True, max_frames: int | None = None,
              resolution: tuple[int, int] | None = None) -> bool:
        self.stop()
        try:
            self.source = open_source(spec, loop=loop, resolution=resolution)
        except SourceError as e:
            self.error.emit(str(e))
            return False
        self.pipeline = LivePipeline(self.source, methods, self.result.emit, self.error.emit, self.finished.emit,
                                     smoothing=self.smoothing, max_frames=max_frames, frontalize=True,
                                     max_faces=self.max_faces)
        self.pipeline.start()
        self.started.emit(self.source.description)
        return True

    def method_providers(self) -> dict[str, str]:
        proc = self.pipeline.processor if self.pipeline else None
        return {n: m.provider for n, m in proc.methods.items()} if proc else {}

    def set_paused(self, paused: bool) -> None:
        if self.pipeline:
            (self.pipeline.paused.set if paused else self.pipeline.paused.clear)()

    def set_smoothing(self, on: bool) -> None:
        self.smoothing = on
        if self.pipeline:
            self.pipeline.set_smoothing(on)

    def set_max_faces(self, n: int) -> None:
        """How many faces the tracker follows; applies to the running pipeline from its next frame."""
        self.max_faces = int(n)
        if self.pipeline:
            self.pipeline.set_max_faces(self.max_faces)

    def length(self) -> int | None:
        return getattr(self.source, "length", None) if self.source is not None else None

    def seek(self, index: int) -> None:
        if self.source is not None and hasattr(self.source, "seek"):
            self.source.seek(index)

    def stop(self) -> None:
        if self.pipeline:
            self.pipeline.stop()
            self.pipeline = None
        if self.source:
            self.source.close()
            self.source = None

    @property
    def running(self) -> bool:
        return bool(self.pipeline and self.pipeline.running)
