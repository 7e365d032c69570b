"""Widgets: video view, VisPy 3D mesh view, frontal view, FPS plot + table."""
from __future__ import annotations

import numpy as np

from app.qt import QtCore, QtGui, QtWidgets

PALETTE = ["#4caf50", "#2196f3", "#ff9800", "#e91e63", "#9c27b0", "#00bcd4"]


def to_pixmap(bgr: np.ndarray) -> QtGui.QPixmap:
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    h, w = rgb.shape[:2]
    img = QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888)
    return QtGui.QPixmap.fromImage(img.copy())


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

    def set_image(self, bgr: np.ndarray) -> None:
        self._pix = to_pixmap(bgr)
        self.has_image = True
        self._rescale()

    def resizeEvent(self, e) -> None:  # noqa: N802 (Qt naming)
        self._rescale()
        super().resizeEvent(e)

    def _rescale(self) -> None:
        if self._pix is not None:
            self.setPixmap(self._pix.scaled(self.size(), QtCore.Qt.KeepAspectRatio, QtCore.Qt.SmoothTransformation))


class MeshView(QtWidgets.QWidget):
    """The current face's mesh in a VisPy canvas: shaded, optionally textured from the frame, turntable camera.

    The mesh is shown in the camera's frame, so it turns with the head; it is centred and scaled each frame so it
    stays in view (the camera follows the head)."""

    def __init__(self, triangles: np.ndarray, parent=None) -> None:
        super().__init__(parent)
        from vispy import scene

        self.canvas = scene.SceneCanvas(keys=None, bgcolor="#1b1b1b", parent=self, size=(320, 320))
        self.view = self.canvas.central_widget.add_view()
        self.view.camera = scene.TurntableCamera(elevation=0, azimuth=0, fov=30, distance=3.2)
        self.triangles = triangles.astype(np.uint32)
        self.mesh = scene.visuals.Mesh(vertices=np.zeros((3, 3), np.float32), faces=np.array([[0, 1, 2]], np.uint32),
                                       color=(0.85, 0.75, 0.68, 1.0), shading="smooth", parent=self.view.scene)
        self.textured = True
        self.frames_drawn = 0
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.canvas.native)

    def set_mesh(self, mesh_px: np.ndarray, image: np.ndarray | None = None, faces: np.ndarray | None = None) -> None:
        """Show a mesh given in image pixels; ``faces`` default to the face model's triangles."""
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
        self.canvas.update()
        self.frames_drawn += 1


class FpsPanel(QtWidgets.QWidget):
    """pyqtgraph plot of FPS per method over time, and a table of ms/face, FPS and provider."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        import pyqtgraph as pg

        pg.setConfigOptions(antialias=True)
        self.plot = pg.PlotWidget(background="#1b1b1b")
        self.plot.setLabel("left", "FPS")
        self.plot.setLabel("bottom", "time", units="s")
        self.plot.addLegend(offset=(5, 5))
        self.plot.setMinimumHeight(140)
        self.table = QtWidgets.QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["method", "ms/face", "FPS", "provider"])
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.NoEditTriggers)
        self.table.setMaximumHeight(200)
        lay = QtWidgets.QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.plot, 3)
        lay.addWidget(self.table, 2)
        self.curves: dict = {}
        self.providers: dict[str, str] = {}
        self.data: dict[str, tuple[list, list]] = {}
        self.t0: float | None = None

    def reset(self) -> None:
        self.plot.clear()
        self.curves.clear()
        self.data.clear()
        self.table.setRowCount(0)
        self.t0 = None

    def add(self, t: float, fps: dict[str, float], ms: dict[str, float], providers: dict[str, str]) -> None:
        if self.t0 is None:
            self.t0 = t
        for name, value in fps.items():
            if name not in self.curves:
                color = PALETTE[len(self.curves) % len(PALETTE)]
                pen = {"color": "#888", "width": 1, "style": QtCore.Qt.DashLine} if name == "pipeline" else \
                    {"color": color, "width": 2}
                self.curves[name] = self.plot.plot(pen=pen, name=name)
                self.data[name] = ([], [])
            xs, ys = self.data[name]
            xs.append(t - self.t0)
            ys.append(value)
            del xs[:-300], ys[:-300]
            self.curves[name].setData(xs, ys)
        self.providers.update({k: v for k, v in providers.items() if v})
        names = [n for n in fps if n != "pipeline"]
        self.table.setRowCount(len(names))
        for row, n in enumerate(names):
            for col, text in enumerate([n, f"{ms.get(n, 0):.1f}", f"{fps[n]:.1f}", self.providers.get(n, "")]):
                self.table.setItem(row, col, QtWidgets.QTableWidgetItem(text))

    def has_data(self) -> bool:
        return any(len(x) > 1 for x, _ in self.data.values())
