"""FaceAlign Studio's main window."""
from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np

from app.bridge import EngineBridge
from app.qt import QtCore, QtGui, QtWidgets
from app.tiles import ease_region, face_region, fit, grid_columns, label_scale, tile_label
from app.views import FpsPanel, ImageView, MeshView, to_qimage
from engine.detect.tracker import DEFAULT_MAX_FACES, MAX_FACES_LIMIT
from engine.facemodel import load_face_model
from engine.pipeline import FpsMeter
from engine.render import draw_result

# single-key shortcuts that must work whenever the main window is active, whatever widget has the focus
WINDOW_KEYS = (QtCore.Qt.Key_Space, QtCore.Qt.Key_C, QtCore.Qt.Key_S, QtCore.Qt.Key_W, QtCore.Qt.Key_Left,
               QtCore.Qt.Key_Right)


def most_accurate_method(present: list[str]) -> str | None:
    """The method with the lowest measured balanced NME (docs/results/NAME_protocol.json, written by
    `main.py eval --json`) among ``present``; None when none has a measured result."""
    import json

    from engine.paths import PROJECT_ROOT

    scores = {}
    for name in present:
        path = PROJECT_ROOT / "docs" / "results" / f"{name}_protocol.json"
        try:
            scores[name] = float(json.loads(path.read_text())["nme"]["balanced"])
        except (OSError, KeyError, TypeError, ValueError):
            continue
    return min(scores, key=scores.get) if scores else None


class StayOpenMenu(QtWidgets.QMenu):
    """A menu of check boxes that stays open while they are ticked (a plain QMenu closes after each one)."""

    def mouseReleaseEvent(self, e) -> None:  # noqa: N802 (Qt naming)
        action = self.activeAction()
        if action is not None and action.isEnabled() and action.isCheckable():
            action.trigger()
            return
        super().mouseReleaseEvent(e)


FILE_FILTER = "Videos and images (*.mp4 *.avi *.mov *.mkv *.webm *.jpg *.jpeg *.png *.bmp *.tif *.tiff);;All files (*)"


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self, source: str | None = None, method: str | None = None, compare: list[str] | None = None,
                 exit_after: int | None = None, screenshot: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("FaceAlign Studio")
        self.setWindowIcon(QtGui.QIcon(str(_icon_path())))
        self.settings = QtCore.QSettings("FaceAlign", "FaceAlign Studio")
        self.bridge = EngineBridge(self)
        self.bridge.prepare = self._prepare_display  # drawing and scaling run in the worker thread
        self.bridge.result.connect(self.on_result)
        self.bridge.error.connect(self.show_error)
        self.bridge.finished.connect(self.on_finished)
        self.bridge.started.connect(lambda d: self.status(f"playing {d}"))
        self.triangles = load_face_model().triangles
        self.exit_after = exit_after
        self.screenshot = screenshot
        self.exit_code = 0
        self.shown_fps = FpsMeter()
        self.compare_order: list[str] = list(compare or [])
        self.frames_shown = 0
        self.tracked_frames = 0
        self.pane_frames: dict[str, int] = {}  # method -> index of the frame its pane shows
        self.current_index = 0                 # the frame/image last shown: a restart goes on from it
        self._paused_total, self._paused_since = 0.0, None  # the speed chart's clock stops while paused
        self.zoom_region: tuple[int, int, int, int] | None = None  # what the compare tiles show (worker thread)
        self._restart_timer = QtCore.QTimer(self)
        self._restart_timer.setSingleShot(True)
        self._restart_timer.timeout.connect(self.restart)
        self.source_spec: str | None = None
        self.providers = {}
        self.methods = self.bridge.available_methods()
        self._build_ui()
        self._restore_settings(method, compare)
        QtWidgets.QApplication.instance().installEventFilter(self)
        QtCore.QTimer.singleShot(0, lambda: self.open_source(source) if source is not None else self._open_default())

    # ---- UI -------------------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        tb = self.addToolBar("main")
        tb.setObjectName("main-toolbar")
        tb.setMovable(False)
        self.act_open = tb.addAction("Open file…", self.choose_file)
        self.act_open.setShortcut(QtGui.QKeySequence.Open)
        self.act_folder = tb.addAction("Open folder…", self.choose_folder)
        self.act_folder.setShortcut("Ctrl+Shift+O")
        self.camera_index = QtWidgets.QSpinBox()
        self.camera_index.setFocusPolicy(QtCore.Qt.ClickFocus)  # the window, not the spin box, starts focused
        self.camera_index.setRange(0, 9)
        self.camera_index.setPrefix("camera ")
        tb.addWidget(self.camera_index)
        self.camera_res = QtWidgets.QComboBox()
        self.camera_res.setFocusPolicy(QtCore.Qt.ClickFocus)
        for text in ("default", "640x480", "1280x720", "1920x1080"):
            self.camera_res.addItem(text)
        tb.addWidget(self.camera_res)
        tb.addAction("Open camera", lambda: self.open_source(str(self.camera_index.value())))
        tb.addSeparator()
        self.act_pause = tb.addAction("Pause", self.toggle_pause)
        self.act_pause.setShortcut("Space")
        self.act_pause.setCheckable(True)
        self.act_prev = tb.addAction("◀", lambda: self.step_by(-1))
        self.act_prev.setToolTip("previous image / frame (Left)")
        self.act_prev.setShortcut(QtCore.Qt.Key_Left)
        self.act_next = tb.addAction("▶", lambda: self.step_by(1))
        self.act_next.setToolTip("next image / frame (Right)")
        self.act_next.setShortcut(QtCore.Qt.Key_Right)
        self.seek_slider = QtWidgets.QSlider(QtCore.Qt.Horizontal)
        self.seek_slider.setMinimumWidth(140)
        self.seek_slider.setEnabled(False)
        self.seek_slider.setToolTip("seek (video files, image folders)")
        self.seek_slider.setFocusPolicy(QtCore.Qt.ClickFocus)
        self.seek_slider.sliderReleased.connect(lambda: self.bridge.seek(self.seek_slider.value()))
        # a click or a key on the slider (not a drag) moves it too
        self.seek_slider.valueChanged.connect(
            lambda v: None if self.seek_slider.isSliderDown() else self.bridge.seek(v))
        tb.addWidget(self.seek_slider)
        tb.addSeparator()
        tb.addWidget(QtWidgets.QLabel(" method "))
        self.method_box = QtWidgets.QComboBox()
        self.method_box.setFocusPolicy(QtCore.Qt.ClickFocus)
        for name, desc, present in self.methods:
            self.method_box.addItem(name if present else f"{name} (no weights)", name)
            idx = self.method_box.count() - 1
            self.method_box.setItemData(idx, desc, QtCore.Qt.ToolTipRole)
            if not present:
                self.method_box.model().item(idx).setEnabled(False)
        self.method_box.currentIndexChanged.connect(lambda _: self._method_chosen())
        tb.addWidget(self.method_box)
        self.act_compare = tb.addAction("Compare", self.restart)
        self.act_compare.setCheckable(True)
        self.act_compare.setShortcut("C")
        self.compare_menu = StayOpenMenu("Compare methods", self)
        self.compare_actions = {}
        for name, _, present in self.methods:
            a = self.compare_menu.addAction(name)
            a.setCheckable(True)
            a.setEnabled(present)
            a.setChecked(present)
            # ticking several methods in the open menu restarts once, after the last tick
            a.toggled.connect(lambda _: self._restart_timer.start(400) if self.act_compare.isChecked() else None)
            self.compare_actions[name] = a
        btn = QtWidgets.QToolButton()
        btn.setText("methods ▾")
        btn.setMenu(self.compare_menu)
        btn.setPopupMode(QtWidgets.QToolButton.InstantPopup)
        tb.addWidget(btn)
        self.compare_label = QtWidgets.QLabel()
        self.compare_label.setToolTip("the methods compare mode shows, in tile order; the first also drives the "
                                      "mesh and frontal panes (choose it in the method box)")
        self.compare_label.hide()  # above the tiles in compare mode (in the toolbar it pushed buttons off)
        # the view toggles on the second row: at 1024 px the first row pushed them into its overflow menu
        self.addToolBarBreak()
        tb2 = self.addToolBar("export")
        tb2.setObjectName("export-toolbar")
        tb2.setMovable(False)
        self.act_smooth = tb2.addAction("Smoothing", lambda: self.bridge.set_smoothing(self.act_smooth.isChecked()))
        self.act_smooth.setCheckable(True)
        self.act_smooth.setShortcut("S")
        self.act_flip = tb2.addAction("Flip avg", lambda: self.bridge.set_flip(self.act_flip.isChecked()))
        self.act_flip.setCheckable(True)
        self.act_flip.setShortcut("M")
        self.act_flip.setToolTip("flip averaging (M, mirror): align each face and its mirror image and average the "
                                 "two (steadier, about twice the cost: the status bar's 'flip' ms)")
        self.act_wire = tb2.addAction("Wireframe")
        self.act_wire.setCheckable(True)
        self.act_wire.setShortcut("W")
        self.act_texture = tb2.addAction("Texture", self._texture_changed)
        self.act_texture.setCheckable(True)
        self.act_texture.setChecked(True)
        self.act_whole = tb2.addAction("Whole frame")
        self.act_whole.setCheckable(True)
        self.act_whole.setShortcut("F")
        self.act_whole.setToolTip("compare tiles: the whole frame instead of the faces (F)")
        tb2.addSeparator()
        self.max_faces = QtWidgets.QSpinBox()
        self.max_faces.setRange(1, MAX_FACES_LIMIT)
        self.max_faces.setValue(DEFAULT_MAX_FACES)
        self.max_faces.setPrefix("max faces ")
        self.max_faces.setToolTip("how many faces are tracked and aligned per frame (each costs one alignment "
                                  "per method); the status bar says when more are detected")
        self.max_faces.setFocusPolicy(QtCore.Qt.ClickFocus)  # never the window's initial focus: keys stay shortcuts
        self.max_faces.valueChanged.connect(self._max_faces_changed)
        # exports on the second toolbar row: on the first they fell into the overflow menu at the default width
        self.act_export = tb2.addAction("Export…", lambda: self.export("annotate"))
        self.act_export_compare = tb2.addAction("Export compare…", lambda: self.export("compare"))
        tb2.addSeparator()
        tb2.addWidget(self.max_faces)  # on the second row: the first one overflows at the default width
        tb2.addSeparator()
        from app.stream_controls import StreamControls

        self.stream_controls = StreamControls(self.bridge, self.settings)  # live OSC output, kept in the settings
        tb2.addWidget(self.stream_controls)
        self.toolbars = (tb, tb2)
        quit_act = QtGui.QAction("Quit", self)
        quit_act.setShortcut(QtGui.QKeySequence.Quit)
        quit_act.triggered.connect(self.close)
        self.addAction(quit_act)

        self.video = ImageView("No source yet")
        self.grid_host = QtWidgets.QWidget()
        self.grid = QtWidgets.QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid_views: dict[str, ImageView] = {}
        self.grid_cols = 1
        self.stack = QtWidgets.QStackedWidget()
        self.stack.addWidget(self.video)
        self.stack.addWidget(self.grid_host)
        self.banner = QtWidgets.QLabel()
        self.banner.setStyleSheet("background:#7a1f1f; color:white; padding:6px;")
        self.banner.setWordWrap(True)
        self.banner.hide()
        self.notice = QtWidgets.QLabel()  # export results: stays until the next open, frames do not overwrite it
        self.notice.setStyleSheet("background:#1f5a2a; color:white; padding:6px;")
        self.notice.setWordWrap(True)
        self.notice.hide()
        self.open_button = QtWidgets.QWidget()
        ob = QtWidgets.QHBoxLayout(self.open_button)
        ob.setContentsMargins(0, 0, 0, 0)
        self.open_file_button = QtWidgets.QPushButton("Open a video or image…")
        self.open_file_button.clicked.connect(self.choose_file)
        self.open_folder_button = QtWidgets.QPushButton("Open an image folder…")
        self.open_folder_button.clicked.connect(self.choose_folder)
        ob.addWidget(self.open_file_button)
        ob.addWidget(self.open_folder_button)
        self.open_button.hide()
        centre = QtWidgets.QWidget()
        lay = QtWidgets.QVBoxLayout(centre)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.banner)
        lay.addWidget(self.notice)
        lay.addWidget(self.open_button)
        lay.addWidget(self.compare_label)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(centre)

        self.mesh_view = MeshView(self.triangles)
        self.frontal = ImageView("frontalized face")
        side = QtWidgets.QWidget()
        sl = QtWidgets.QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        self.mesh_label = QtWidgets.QLabel("3D mesh (drag to turn)")
        self.frontal_label = QtWidgets.QLabel("frontalized")
        sl.addWidget(self.mesh_label)
        sl.addWidget(self.mesh_view, 3)
        sl.addWidget(self.frontal_label)
        sl.addWidget(self.frontal, 2)
        dock = QtWidgets.QDockWidget("Face", self)
        dock.setObjectName("face-dock")
        dock.setWidget(side)
        dock.setFeatures(QtWidgets.QDockWidget.DockWidgetMovable)
        self.addDockWidget(QtCore.Qt.RightDockWidgetArea, dock)
        self.fps_panel = FpsPanel()
        dock2 = QtWidgets.QDockWidget("Speed", self)
        dock2.setObjectName("speed-dock")
        dock2.setWidget(self.fps_panel)
        dock2.setFeatures(QtWidgets.QDockWidget.DockWidgetMovable)
        self.addDockWidget(QtCore.Qt.BottomDockWidgetArea, dock2)
        self.status_label = QtWidgets.QLabel()
        # may shrink below its text (cut at the right) instead of running into the provider label
        self.status_label.setSizePolicy(QtWidgets.QSizePolicy.Ignored, QtWidgets.QSizePolicy.Preferred)
        self.statusBar().addWidget(self.status_label, 1)
        self.provider_label = QtWidgets.QLabel(f"provider: {self.bridge.providers()}")
        self.statusBar().addPermanentWidget(self.provider_label)
        self.resize(1280, 860)
        self.resizeDocks([dock2], [210], QtCore.Qt.Vertical)
        self.resizeDocks([dock], [380], QtCore.Qt.Horizontal)

    def _restore_settings(self, method: str | None, compare: list[str] | None) -> None:
        geo = self.settings.value("geometry")
        if geo is not None:
            self.restoreGeometry(geo)
        name = method or self.settings.value("method", "")
        present = [n for n, _, p in self.methods if p]
        if name not in present:  # first run: the most accurate method by its measured result
            name = most_accurate_method(present) or (present[0] if present else "")
        self.method_box.blockSignals(True)
        self.method_box.setCurrentIndex(max(0, self.method_box.findData(name)))
        self.method_box.blockSignals(False)
        for key, act, default in (("smoothing", self.act_smooth, "false"), ("wireframe", self.act_wire, "false"),
                                  ("texture", self.act_texture, "true"), ("whole_frame", self.act_whole, "false"),
                                  ("flip", self.act_flip, "false")):
            act.setChecked(str(self.settings.value(key, default)).lower() == "true")
        self.mesh_view.textured = self.act_texture.isChecked()
        self.bridge.set_smoothing(self.act_smooth.isChecked())
        self.bridge.set_flip(self.act_flip.isChecked())
        try:
            self.max_faces.setValue(int(self.settings.value("max_faces", DEFAULT_MAX_FACES)))
        except (TypeError, ValueError):  # a hand-edited settings file
            self.max_faces.setValue(DEFAULT_MAX_FACES)
        self.bridge.set_max_faces(self.max_faces.value())
        if not compare:  # the compare selection of the last run (compare mode itself starts off)
            saved = self.settings.value("compare_methods", None)
            if saved is not None:
                names = [n for n in str(saved).split(",") if n]
                for n, a in self.compare_actions.items():
                    a.blockSignals(True)
                    a.setChecked(n in names and a.isEnabled())
                    a.blockSignals(False)
        if compare:
            for n, a in self.compare_actions.items():
                a.blockSignals(True)
                a.setChecked(n in compare and a.isEnabled())
                a.blockSignals(False)
            self.act_compare.setChecked(True)

    def closeEvent(self, e) -> None:  # noqa: N802
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("method", self.method_box.currentData())
        self.settings.setValue("smoothing", self.act_smooth.isChecked())
        self.settings.setValue("wireframe", self.act_wire.isChecked())
        self.settings.setValue("flip", self.act_flip.isChecked())
        self.settings.setValue("texture", self.act_texture.isChecked())
        self.settings.setValue("whole_frame", self.act_whole.isChecked())
        self.settings.setValue("compare_methods", ",".join(n for n, a in self.compare_actions.items() if a.isChecked()))
        self.settings.setValue("max_faces", self.max_faces.value())
        if self.source_spec is not None and not self.source_spec.isdigit():
            self.settings.setValue("last_source", self.source_spec)
        self.bridge.stop()
        super().closeEvent(e)

    # ---- sources and methods ----------------------------------------------------------------------------------
    def selected_methods(self) -> list[str]:
        if self.act_compare.isChecked():
            chosen = [n for n, a in self.compare_actions.items() if a.isChecked() and a.isEnabled()]
            # the order given (--compare b,a) first, then the others ticked in the menu
            chosen = [n for n in self.compare_order if n in chosen] + [n for n in chosen if n not in self.compare_order]
            return chosen or [self.method_box.currentData()]
        return [self.method_box.currentData()]

    def _open_default(self) -> None:
        if not self.open_source("0", quiet=True):
            self.video.setText("No camera found.\nOpen a video file or a folder of images (Ctrl+O).")
            self.open_button.show()
            self.status("no camera available: open a file or folder")

    def open_source(self, spec: str, quiet: bool = False, start_index: int = 0, paused: bool = False) -> bool:
        """Open ``spec`` and play it with the selected methods; a restart (another method, compare selection)
        passes the frame it was on and whether it was paused, and goes on from there."""
        self.source_spec = spec
        methods = self.selected_methods()
        if not methods or methods == [None]:
            self.show_error("no method has weights: train one or install the weights")
            return False
        self.banner.hide()
        self.notice.hide()
        self._setup_views(methods)
        self.fps_panel.reset()
        self.shown_fps = FpsMeter()
        self.frames_shown = 0
        self.tracked_frames = 0
        # nothing from the previous source stays on screen (a failed open must not leave its frame under the banner)
        self.video.clear_image("opening…")
        self.mesh_view.clear()
        self.frontal.clear_image("frontalized face")
        self.mesh_label.setText(f"3D mesh: {methods[0]} (drag to turn)")
        self.frontal_label.setText(f"frontalized: {methods[0]}")
        self.zoom_region = None
        self.current_index = start_index
        if len(methods) > 1:
            self.compare_label.setText(f"comparing: {', '.join(methods)}  ·  mesh and frontal panes: {methods[0]} "
                                       "(the method box)")
            self.compare_label.show()
            # the box names the method of the mesh and frontal panes (the first tile)
            self.method_box.blockSignals(True)
            self.method_box.setCurrentIndex(max(0, self.method_box.findData(methods[0])))
            self.method_box.blockSignals(False)
        else:
            self.compare_label.setText("")
            self.compare_label.hide()
        if quiet:
            # probe without a visible error (the camera may simply be absent)
            from engine.sources import SourceError, open_source

            try:
                open_source(spec).close()
            except SourceError:
                return False
        res = self.camera_res.currentText()
        resolution = tuple(int(v) for v in res.split("x")) if "x" in res else None
        ok = self.bridge.start(spec, methods, resolution=resolution, start_index=start_index, paused=paused)
        if ok:
            self.open_button.hide()
            n = self.bridge.length()
            kind = self.bridge.source.kind
            seekable = bool(n) and n > 1 and kind in ("video", "images")
            self.seek_slider.blockSignals(True)
            self.seek_slider.setEnabled(seekable)
            self.seek_slider.setRange(0, max(0, (n or 1) - 1))
            self.seek_slider.setValue(min(start_index, self.seek_slider.maximum()))
            self.seek_slider.blockSignals(False)
            self.act_prev.setEnabled(seekable)
            self.act_next.setEnabled(seekable)
            # a folder opens paused on its first image; Space plays through every image, ◀ ▶ and the slider browse
            self.act_pause.setChecked(self.bridge.paused)
            self._paused_total = 0.0
            self._paused_since = time.perf_counter() if self.bridge.paused else None
        else:
            self.video.clear_image("could not open the source")
            self.status(f"could not open {spec}")
        return ok

    def step_by(self, delta: int) -> None:
        """Previous/next image of a folder (or frame of a video): shown and processed even while paused."""
        if not self.seek_slider.isEnabled():
            return
        target = min(max(0, self.seek_slider.value() + delta), self.seek_slider.maximum())
        self.seek_slider.blockSignals(True)
        self.seek_slider.setValue(target)
        self.seek_slider.blockSignals(False)
        self.bridge.seek(target)

    def eventFilter(self, obj, ev) -> bool:  # noqa: N802 (Qt naming)
        """Space, C, S and W belong to the window: a focused spin box, combo box or button would otherwise take
        them (ShortcutOverride) and the shortcut would never fire. Dialogs keep their keys."""
        if (ev.type() == QtCore.QEvent.ShortcutOverride and ev.key() in WINDOW_KEYS
                and not (ev.modifiers() & ~QtCore.Qt.KeypadModifier)
                and isinstance(obj, QtWidgets.QWidget) and obj.window() is self):
            ev.ignore()  # not overridden: the shortcut map gets the key
            return True
        return super().eventFilter(obj, ev)

    def restart(self) -> None:
        """Re-open the source with the methods now selected, on the same frame, paused if it was (a camera
        simply goes on)."""
        self._restart_timer.stop()
        if self.source_spec is not None:
            keep = self.seek_slider.isEnabled()
            self.open_source(self.source_spec, start_index=self.current_index if keep else 0,
                             paused=keep and self.act_pause.isChecked())

    def _method_chosen(self) -> None:
        """In compare mode the method box picks the first tile (the one the mesh and frontal panes show)."""
        name = self.method_box.currentData()
        if self.act_compare.isChecked() and name in self.compare_actions:
            self.compare_order = [name] + [n for n in self.selected_methods() if n != name]
            a = self.compare_actions[name]
            a.blockSignals(True)
            a.setChecked(True)
            a.blockSignals(False)
        self.restart()

    def _max_faces_changed(self, n: int) -> None:
        self.bridge.set_max_faces(n)
        if self.bridge.paused:  # a paused frame is redone with the new limit
            self.bridge.seek(self.current_index)

    def choose_file(self) -> None:
        start = str(self.settings.value("last_dir", ""))
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open video or image", start, FILE_FILTER)
        if path:
            self.settings.setValue("last_dir", path.rsplit("/", 1)[0])
            self.open_source(path)

    def choose_folder(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Open image folder", str(self.settings.value("last_dir", "")))
        if path:
            self.open_source(path)

    def paused_seconds(self, now: float) -> float:
        """Seconds spent paused since the source was opened (the current pause included)."""
        return self._paused_total + (now - self._paused_since if self._paused_since is not None else 0.0)

    def toggle_pause(self) -> None:
        now = time.perf_counter()
        if self.act_pause.isChecked() and self._paused_since is None:
            self._paused_since = now
        elif not self.act_pause.isChecked() and self._paused_since is not None:
            self._paused_total += now - self._paused_since
            self._paused_since = None
        self.bridge.set_paused(self.act_pause.isChecked())
        self.status("paused" if self.act_pause.isChecked() else "playing")

    def _texture_changed(self) -> None:
        self.mesh_view.textured = self.act_texture.isChecked()

    def _setup_views(self, methods: list[str]) -> None:
        compare = len(methods) > 1 or self.act_compare.isChecked()
        for v in self.grid_views.values():
            v.setParent(None)
        self.grid_views = {}
        if compare:
            host = self.stack.size()
            cols = grid_columns(len(methods), max(1, host.width()), max(1, host.height()))
            self.grid_cols = cols
            for i, m in enumerate(methods):  # in the order given: first is the primary (mesh, frontal panes)
                v = ImageView(m)
                self.grid.addWidget(v, i // cols, i % cols)
                self.grid_views[m] = v
            self.stack.setCurrentWidget(self.grid_host)
        else:
            self.stack.setCurrentWidget(self.video)

    # ---- results ----------------------------------------------------------------------------------------------
    def _prepare_display(self, res, fps: dict) -> None:
        """Worker thread: draw the overlays and scale each view's image to its size, so the GUI thread only
        swaps pixmaps (compare mode drew and scaled four 1280x720 frames per result in the GUI thread). Compare
        tiles show the faces (one region for every tile, so the methods line up) unless "Whole frame" is on;
        labels are drawn after scaling, at a size the tile can hold."""
        wire = self.act_wire.isChecked()
        views = dict(self.grid_views)
        still = self.bridge.source is not None and self.bridge.source.kind == "images"
        if views:
            size = next(iter(views.values())).view_size
            if self.act_whole.isChecked() or not res.faces:
                region = (0, 0, res.image.shape[1], res.image.shape[0])
            else:
                target = face_region([f.box for f in res.faces], res.image.shape, size[0] / max(1, size[1]))
                region = ease_region(self.zoom_region, target)
            self.zoom_region = region
            res.display["region"] = region
            x0, y0, x1, y1 = region
            shift = np.array([x0, y0, 0.0])
            texts = {m: (f"{m}  {1000.0 / fps[m]:.1f} ms/face" if fps.get(m) else m) for m in views}
            tile_w = min(round((x1 - x0) * min(v.view_size[0] / (x1 - x0), v.view_size[1] / (y1 - y0)))
                         for v in views.values())
            scale = label_scale(list(texts.values()), tile_w)  # one size in every tile
            for m, view in views.items():
                # only the region is copied and drawn on (results moved into its pixels): 7 full frames were
                # copied and drawn per result before
                img = res.image[y0:y1, x0:x1].copy()
                for face in res.faces:
                    if m in face.results:
                        r = face.results[m]
                        moved = replace(r, landmarks=r.landmarks - shift, mesh=r.mesh - shift)
                        draw_result(img, moved, face.box - shift[[0, 1, 0, 1]], face.face_id, wireframe=wire,
                                    triangles=self.triangles)
                tile = fit(img, view.view_size)
                tile_label(tile, texts[m], scale=scale)
                res.display[m] = to_qimage(np.ascontiguousarray(tile))
        else:
            img = res.image.copy()
            for face in res.faces:
                for r in face.results.values():
                    draw_result(img, r, face.box, face.face_id, wireframe=wire, triangles=self.triangles)
            m = next(iter(res.method_ms), "")
            lat = 1000.0 / fps[m] if fps.get(m) else 0.0
            img = np.ascontiguousarray(fit(img, self.video.view_size))
            # "shown FPS" means nothing for a still image: there it names the method and its time only
            text = f"{m}  {lat:.1f} ms/face" if lat else m
            if not still:
                text += f"  |  shown {self.shown_fps.fps:.1f} FPS"
            tile_label(img, text)
            res.display["label"] = text
            res.display["video"] = to_qimage(img)
        if res.frontal is not None:
            res.display["frontal"] = to_qimage(res.frontal, self.frontal.view_size)

    def on_result(self, res, fps: dict) -> None:
        now = time.perf_counter()
        self.current_index = res.index
        self.shown_fps.tick(now)
        if self.grid_views:
            for m, view in self.grid_views.items():
                if m in res.display:
                    view.set_qimage(res.display[m])
                    self.pane_frames[m] = res.index  # each pane shows the frame its results were computed on
        elif "video" in res.display:
            self.video.set_qimage(res.display["video"])
            self.pane_frames = {m: res.index for m in res.method_ms}
        primary = next(iter(res.method_ms), None)
        first = res.faces[0] if res.faces else None
        r = first.results.get(primary) if first is not None and primary else None
        if r is not None:
            self.tracked_frames += 1
            if r.dense is not None and r.dense_faces is not None:  # the densest surface a method offers
                self.mesh_view.set_mesh(r.dense, res.image, r.dense_faces)
            else:
                self.mesh_view.set_mesh(r.mesh, res.image)
        else:  # no face (for the primary method): no stale face in the side panes
            self.mesh_view.clear()
            self.frontal.clear_image("no face in this frame")
        if "frontal" in res.display and r is not None:
            self.frontal.set_qimage(res.display["frontal"])
        providers = self.bridge.method_providers()
        # the provider of what is shown, method by method (mediapipe is not ONNX Runtime's)
        text = "provider: " + ", ".join(sorted(set(providers.values()))) if providers else self.provider_label.text()
        if text != self.provider_label.text():
            self.provider_label.setText(text)
        latency = {m: (1000.0 / v if v else 0.0) for m, v in fps.items() if m != "pipeline"}
        # the chart's time axis is playing time: it stands still while paused (a step adds a point, no gap)
        self.fps_panel.add(now - self.paused_seconds(now), latency, self.shown_fps.fps, fps.get("pipeline", 0.0),
                           providers)
        self.frames_shown += 1
        if self.seek_slider.isEnabled() and not self.seek_slider.isSliderDown():
            self.seek_slider.blockSignals(True)
            self.seek_slider.setValue(res.index)
            self.seek_slider.blockSignals(False)
        stages = "  ".join(f"{k} {v:.1f}" for k, v in res.timings.items() if k != "total")
        name = f"  {res.name}" if res.name else ""
        over = (f" (limit {self.max_faces.value()}: {res.faces_over_limit} more detected)"
                if getattr(res, "faces_over_limit", 0) else "")
        if not res.faces:  # say which stage found nothing: the detector, or the method in the detected crop
            over = (" (the detector found no face)" if not getattr(res, "faces_tracked", 0)
                    else " (the method found no face in the detected crop)")
        self.status(f"frame {res.index}{name}  faces {len(res.faces)}{over}  |  this frame, ms: {stages}  |  "
                    f"shown {self.shown_fps.fps:.1f} FPS, processed {fps.get('pipeline', 0):.1f} FPS")
        if self.exit_after and self.frames_shown >= self.exit_after:
            self.finish_and_exit()

    def on_finished(self) -> None:
        if self.exit_after and self.frames_shown < self.exit_after:
            self.finish_and_exit()
        else:
            self.status(f"finished: {self.frames_shown} frames shown, {self.tracked_frames} with a face")

    def finish_and_exit(self) -> None:
        if getattr(self, "_exiting", False):
            return
        self._exiting = True
        self.bridge.stop()
        if self.screenshot:
            QtWidgets.QApplication.processEvents()
            self.mesh_view.canvas.update()
            QtWidgets.QApplication.processEvents()
            self.grab().save(self.screenshot)
        QtCore.QTimer.singleShot(0, self.close)

    def export(self, kind: str, out: str | None = None, formats: list[str] | None = None, force: bool = False):
        """Annotate the current source (or write a compare report) in the background, with a progress dialog."""
        from app.export_dialog import ExportDialog, run_export

        if self.source_spec is None or self.source_spec.isdigit():
            self.show_error("export needs a video file or an image folder as the source")
            return None
        methods = self.selected_methods()
        if kind == "compare" and len(methods) < 2:
            # outside compare mode: the methods ticked in the compare menu, not a "comparison" of one method
            methods = [n for n, a in self.compare_actions.items() if a.isChecked() and a.isEnabled()] or methods
        if out is None:
            dlg = ExportDialog(kind, methods, self)
            self.export_dialog = dlg  # reachable by tests driving the window
            accepted = dlg.exec() == QtWidgets.QDialog.Accepted
            self.activateWindow()
            if not accepted:
                self.show_notice("export cancelled: nothing written")
                return None
            out, formats, force = dlg.folder.text(), dlg.formats(), dlg.force.isChecked()
        # a compare report times every method: the live view must not compete with it for the CPU
        resume = kind == "compare" and not self.act_pause.isChecked()
        if resume:
            self.act_pause.setChecked(True)
            self.toggle_pause()

        def message(msg: str, error: bool) -> None:
            if resume:
                self.act_pause.setChecked(False)
                self.toggle_pause()
            (self.show_error if error else self.show_notice)(msg)

        self._export_worker = run_export(self, kind, self.source_spec, methods, out, formats or ["csv", "json"],
                                         force, message, max_faces=self.max_faces.value())
        return self._export_worker

    def show_notice(self, msg: str) -> None:
        """A result the user must see (an export finished or was cancelled): kept above the view until the next
        open, where the status bar would be overwritten by the next frame."""
        self.notice.setText(msg)
        self.notice.show()
        self.status(msg)

    def status(self, text: str) -> None:
        self.status_label.setText(text)

    def show_error(self, msg: str) -> None:
        """Errors are messages, never tracebacks: a banner above the video and the status bar. A scripted run
        (--exit-after) that meets one exits non-zero instead of waiting for frames that will never come."""
        self.banner.setText(msg)
        self.banner.show()
        self.status(msg)
        # the open buttons only when nothing is on screen (not with an export's "files already exist")
        showing = self.video.has_image or any(v.has_image for v in self.grid_views.values())
        if self.source_spec is None or not showing:
            self.open_button.show()
        if self.exit_after:
            self.exit_code = 1
            if not self.bridge.running:
                self.finish_and_exit()


def _icon_path():
    from engine.paths import RESOURCES_DIR

    return RESOURCES_DIR / "facealign.svg"


def run(source: str | None = None, method: str | None = None, compare: list[str] | None = None,
        exit_after: int | None = None, screenshot: str | None = None) -> int:
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    app.setApplicationName("FaceAlign Studio")
    from vispy import app as vispy_app

    vispy_app.use_app("pyside6")
    win = MainWindow(source, method, compare, exit_after, screenshot)

    def excepthook(etype, value, tb):  # no tracebacks in the GUI: show the message
        win.show_error(f"{etype.__name__}: {value}")
        sys.__excepthook__(etype, value, tb)

    sys.excepthook = excepthook
    win.show()
    code = app.exec() or win.exit_code
    if win.exit_code:
        print(f"error: {win.banner.text() or win.status_label.text()}", file=sys.stderr)
    win.settings.sync()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: mediapipe's and Qt's C extensions can abort while being torn down
    # ("bool_dealloc" seen here), which would turn a clean exit into a crash.
    import os

    os._exit(code)
