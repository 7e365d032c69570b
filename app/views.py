"""Widgets: video view, VisPy 3D mesh view, frontal view, FPS plot + table."""
from __future__ import annotations

import numpy as np

from app.qt import QtCore, QtGui, QtWidgets

PALETTE = ["#4caf50", "#2196f3", "#ff9800", "#e91e63", "#9c27b0", "#00bcd4", "#ffeb3b", "#9e9e9e"]  # one per method


def to_qimage(bgr: np.ndarray, size: tuple[int, int] | None = None) -> QtGui.QImage:
    """BGR -> QImage owning its pixels, scaled to fit ``size`` (w, h) keeping the aspect ratio. Safe in any
    thread (QImage, unlike QPixmap), so the window builds its images in the pipeline's worker thread.

    The image is 32-bit RGB (bytes B, G, R, 255: OpenCV's BGRA), the raster pixmap's own format, so
    ``QPixmap.fromImage`` in the GUI thread converts nothing; OpenCV's conversion runs without the GIL. The former
    RGB888 through a reversed numpy view cost 13 ms per 900x506 image holding the GIL, and the GUI thread converted
    it once more (python -m research.app_draw_cost)."""
    import cv2

    if size is not None and size[0] > 1 and size[1] > 1:
        h, w = bgr.shape[:2]
        s = min(size[0] / w, size[1] / h)
        if abs(s - 1) > 1e-3:
            bgr = cv2.resize(bgr, (max(1, round(w * s)), max(1, round(h * s))),
                             interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    bgra = cv2.cvtColor(np.ascontiguousarray(bgr), cv2.COLOR_BGR2BGRA)
    h, w = bgra.shape[:2]
    return QtGui.QImage(bgra.data, w, h, 4 * w, QtGui.QImage.Format_RGB32).copy()


def to_pixmap(bgr: np.ndarray) -> QtGui.QPixmap:
    return QtGui.QPixmap.fromImage(to_qimage(bgr))


class ImageView(QtWidgets.QLabel):
    """Shows a BGR image scaled to fit, keeping its aspect ratio."""

    def __init__(self, placeholder: str = "", parent=None) -> None:
        super().__init__(parent)
        self.setAlignment(QtCore.Qt.AlignCenter)
        self.setMinimumSize(160, 120)
        self.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Ignored)
        self.setStyleSheet("background:#111; color:#bbb;")
        self.setText(placeholder)
        self._pix: QtGui.QPixmap | None = None
        self.has_image = False
        self.images_set = 0
        self.view_size = (self.width(), self.height())  # read by the worker thread, which scales to it

    def set_image(self, bgr: np.ndarray) -> None:
        self.set_qimage(to_qimage(bgr))

    def set_qimage(self, img: QtGui.QImage) -> None:
        """Show an image; one already scaled to this view is shown as it is (no scaling in the GUI thread)."""
        self._pix = QtGui.QPixmap.fromImage(img)
        self.has_image = True
        self.images_set += 1
        if self._pix.width() == self.width() or self._pix.height() == self.height():
            self.setPixmap(self._pix)
        else:
            self._rescale()

    def clear_image(self, text: str) -> None:
        """Drop the image (a stale face must not stay on screen) and show ``text`` instead."""
        self._pix = None
        self.has_image = False
        self.clear()
        self.setText(text)

    def resizeEvent(self, e) -> None:  # noqa: N802 (Qt naming)
        self.view_size = (self.width(), self.height())
        self._rescale()
        super().resizeEvent(e)

    def _rescale(self) -> None:
        if self._pix is not None:
            self.setPixmap(self._pix.scaled(self.size(), QtCore.Qt.KeepAspectRatio, QtCore.Qt.SmoothTransformation))


def keep_shader_program(mesh_visual) -> None:
    """Stop VisPy (0.17) from rebuilding the mesh's shader program on every ``set_data``.

    MeshVisual._update_data builds a new color-transform Function for every new mesh; a new Function is a changed
    program, so the next draw re-generated and re-parsed the GLSL and relinked it (about 40% of the GUI thread's
    time in the mesh pane under Xvfb, holding the GIL: research/app_draw_cost.py). The pass-through transform
    (every mesh here has RGBA vertex colours or one colour) is the same code each time: one instance is kept, so
    VisPy sees the same value and keeps its program. Other colour kinds (vertex values through a colormap) still
    get a fresh one."""
    build = mesh_visual._build_color_transform
    kept: dict[str, object] = {}

    def color_transform(colors):
        if colors.ndim == 2 and colors.shape[1] == 1:  # values through the colormap: clim-dependent
            return build(colors)
        if "pass" not in kept:
            kept["pass"] = build(colors)
        return kept["pass"]

    mesh_visual._build_color_transform = color_transform


class MeshView(QtWidgets.QWidget):
    """The current face's mesh in a VisPy canvas: shaded, optionally textured from the frame, turntable camera.

    The mesh is shown in the camera's frame, so it turns with the head; it is centred and scaled each frame so it
    stays in view (the camera follows the head). It is redrawn at most ``max_fps`` times a second: under Xvfb (and
    on any machine without a GPU) VisPy renders in software on the GUI thread, and a redraw per frame cost more
    than the frame's alignment; the newest mesh waits for the next slot, so the pane is at most 1/max_fps late."""

    max_fps = 10.0

    def __init__(self, triangles: np.ndarray, parent=None) -> None:
        super().__init__(parent)
        from vispy import scene

        self.canvas = scene.SceneCanvas(keys=None, bgcolor="#1b1b1b", parent=self, size=(320, 320))
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(elevation=0, azimuth=0, fov=30, distance=3.2)
        self.triangles = triangles.astype(np.uint32)
        self.mesh = scene.visuals.Mesh(vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 2]], np.uint32),
                                       color=(0.85, 0.75, 0.68, 1.0), shading="smooth", parent=self.view.scene)
        keep_shader_program(self.mesh)
        self.textured = True
        self.frames_drawn = 0      # meshes put on screen
        self.frames_received = 0   # meshes handed to the view
        self._pending: tuple | None = None
        self._last_draw = -1e9
        self._timer = QtCore.QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._draw_pending)
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas.native)

    def set_mesh(self, mesh_px: np.ndarray, image: np.ndarray | None = None, faces: np.ndarray | None = None) -> None:
        """Show a mesh given in image pixels (now, or at the next redraw slot); ``faces`` default to the face
        model's triangles."""
        import time

        self.frames_received += 1
        self._pending = (mesh_px, image, faces)
        wait = self._last_draw + 1.0 / self.max_fps - time.perf_counter()
        if wait <= 0:
            self._timer.stop()
            self._draw_pending()
        elif not self._timer.isActive():
            self._timer.start(max(1, int(wait * 1000)))

    def _draw_pending(self) -> None:
        import time

        if self._pending is None:
            return
        mesh_px, image, faces = self._pending
        self._pending = None
        self._last_draw = time.perf_counter()
        faces = self.triangles if faces is None else faces.astype(np.uint32)
        v = mesh_px.astype(np.float32).copy()
        centre = v.mean(0)
        scale = np.ptp(v[:, :2], axis=0).max() / 2 + 1e-6
        v = (v - centre) / scale
        # image frame (y down, z toward viewer) -> VisPy turntable at azimuth 0 (x right, z up, -y toward viewer)
        verts = np.stack([v[:, 0], -v[:, 2], -v[:, 1]], 1)
        colors = None
        if self.textured and image is not None:
            h, w = image.shape[:2]
            xs = np.clip(mesh_px[:, 0].round().astype(int), 0, w - 1)
            ys = np.clip(mesh_px[:, 1].round().astype(int), 0, h - 1)
            rgb = image[ys, xs, ::-1].astype(np.float32) / 255.0
            colors = np.concatenate([rgb, np.ones((len(rgb), 1), np.float32)], 1)
        if colors is not None:
            self.mesh.set_data(vertices=verts, faces=faces, vertex_colors=colors)
        else:
            self.mesh.set_data(vertices=verts, faces=faces, color=(0.85, 0.75, 0.68, 1.0))
        self.mesh.visible = True
        self.canvas.update()
        self.frames_drawn += 1

    def clear(self) -> None:
        """No face in this frame: show nothing rather than the previous face."""
        self._pending = None
        self._timer.stop()
        self.mesh.visible = False
        self.canvas.update()


def conditions(methods: int = 1) -> str:
    """What the ms per face were measured under, so they can be set against `main.py bench`'s one-thread figure:
    the app's sessions run one thread each (the bench's 1-thread setting), but a method's ms is wall time, so it
    includes waiting for a core whenever more runnable work than cores competes (other methods side by side in
    compare mode, the decoder, the window, other programs): the machine's load says how much. The bench's figure
    is a median over fixed crops, the table's a mean over the last 30 frames (a spike counts in full)."""
    import os

    from app.bridge import APP_THREAD_POLICY, method_workers

    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on this platform
        load = float("nan")
    threads = (f"{APP_THREAD_POLICY.threads} thread per session (bench: 1t, median)" if APP_THREAD_POLICY is not None
               and APP_THREAD_POLICY.threads else "ONNX Runtime's default threads")
    side = min(methods, method_workers())
    beside = f"{side} methods at a time  ·  " if side > 1 else ""
    busy = ": ms include waiting for a core" if load > cores or side >= cores else ""
    # two short lines, not one wrapped one: a label that re-wraps as its numbers change relays out the window
    return f"ms: mean of 30 frames, {threads}\n{beside}load {load:.1f} on {cores} cores{busy}"


class FpsPanel(QtWidgets.QWidget):
    """Speed, each number labelled with what it measures: per method its latency (mean ms per face) and its
    throughput alone (faces/s = 1000 / that mean), both over the same last 30 frames with a face; and the frame
    rates of the pipeline (frames processed) and of this window (frames shown), which every method shares.
    The plot draws the latency over time."""

    LATENCY = "ms/face, last 30 frames"   # latency: the mean
    THROUGHPUT = "faces/s alone, same 30 frames"  # throughput if this method ran by itself: 1000 / that mean

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        pg.setConfigOptions(antialias=True)
        self.plot = pg.PlotWidget(background="#1b1b1b")
        self.plot.setLabel("left", "ms per face")
        self.plot.setLabel("bottom", "time", units="s")
        self.legend = self.plot.addLegend(offset=(5, 5))
        self.plot.setMinimumHeight(140)
        self.rates = QtWidgets.QLabel()
        self.rates.setToolTip("shown: frames this window displayed per second (what you see); processed: frames "
                              "the pipeline finished per second (all methods together), both over the last 30")
        self.table = QtWidgets.QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["method", self.LATENCY, self.THROUGHPUT, "provider"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.horizontalHeader().setSectionResizeMode(QtWidgets.QHeaderView.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.setMaximumHeight(200)
        right = QtWidgets.QWidget()
        rl = QtWidgets.QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(self.rates)
        rl.addWidget(self.table)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 3)
        lay.addWidget(right, 2)
        self.curves: dict = {}
        self.providers: dict[str, str] = {}
        self.data: dict[str, tuple[list, list]] = {}
        self.t0: float | None = None
        self.last_redraw = 0.0

    def reset(self) -> None:
        self.plot.clear()
        self.legend.clear()  # PlotItem.clear leaves the legend's entries: a stale method list otherwise
        self.curves.clear()
        self.data.clear()
        self.table.setRowCount(0)
        self.rates.setText("")
        self.t0 = None
        self.last_redraw = 0.0

    def legend_names(self) -> list[str]:
        return [lab.text for _, lab in self.legend.items]

    def add(self, t: float, latency_ms: dict[str, float], shown_fps: float, processed_fps: float,
            providers: dict[str, str]) -> None:
        """Record one frame's numbers; the plot and table redraw at most 5 times a second (they are read by a
        person, and redrawing on every frame costs the GUI thread in compare mode)."""
        if self.t0 is None:
            self.t0 = t
        for name, value in latency_ms.items():
            if value <= 0:
                continue
            if name not in self.curves:
                color = PALETTE[len(self.curves) % len(PALETTE)]
                self.curves[name] = self.plot.plot(pen={"color": color, "width": 2}, name=name)
                # one column held four names in the chart's height: the fifth and later were cut off
                self.legend.setColumnCount(1 if len(self.curves) <= 4 else 2)
                self.data[name] = ([], [])
            xs, ys = self.data[name]
            xs.append(t - self.t0)
            ys.append(value)
            del xs[:-300], ys[:-300]
        self.providers.update({k: v for k, v in providers.items() if v})
        import time

        now = time.perf_counter()  # wall time: ``t`` stands still while paused, a paused step still redraws
        if now - self.last_redraw < 0.2:
            return
        self.last_redraw = now
        for name, (xs, ys) in self.data.items():
            self.curves[name].setData(xs, ys)
        self.rates.setText(f"shown {shown_fps:.1f} FPS (this window)  ·  processed {processed_fps:.1f} FPS "
                           f"(pipeline, all methods)\n{conditions(len(self.curves))}")
        names = [n for n, v in latency_ms.items() if v > 0]
        self.table.setRowCount(len(names))
        for row, n in enumerate(names):
            ms = latency_ms[n]
            for col, text in enumerate([n, f"{ms:.1f}", f"{1000.0 / ms:.0f}", self.providers.get(n, "")]):
                self.table.setItem(row, col, QtWidgets.QTableWidgetItem(text))

    def has_data(self) -> bool:
        return any(len(x) > 1 for x, _ in self.data.values())
