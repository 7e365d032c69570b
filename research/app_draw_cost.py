"""What the window's drawing costs, former way against the present one in the same process (A/B, medians):

    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m research.app_draw_cost

- ``to_qimage`` of a 900x506 frame (the single view's size at the default window): the former RGB888 through a
  reversed numpy view (holding the GIL) against OpenCV's BGRA conversion into 32-bit RGB; and what the GUI thread
  then pays in ``QPixmap.fromImage`` for each format;
- the mesh pane's redraw (``MeshView.set_mesh`` and a repaint) with VisPy's per-mesh shader rebuild (the former
  behaviour) and with ``keep_shader_program``.
Prints one JSON object.
"""
from __future__ import annotations

import json
import sys
import time

import engine  # noqa: F401  (pins BLAS threads before numpy loads, as main.py does)

import numpy as np  # noqa: E402


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return round(float(np.median(times)), 2)


def main() -> None:
    from app.qt import QtGui, QtWidgets

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    from vispy import app as vispy_app

    vispy_app.use_app("pyside6")
    from app.views import MeshView, to_qimage
    from engine.facemodel import load_face_model

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (506, 900, 3), np.uint8)

    def former_qimage(bgr: np.ndarray) -> QtGui.QImage:
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        h, w = rgb.shape[:2]
        return QtGui.QImage(rgb.data, w, h, 3 * w, QtGui.QImage.Format_RGB888).copy()

    report: dict = {}
    for _ in range(2):  # alternate, twice: the second pass is the one reported
        for name, fn in (("former_rgb888", former_qimage), ("bgra_rgb32", to_qimage)):
            img = fn(frame)
            report[name] = {"to_qimage_ms": median_ms(lambda: fn(frame), 40),
                            "gui_fromImage_ms": median_ms(lambda: QtGui.QPixmap.fromImage(img), 40)}
    same = former_qimage(frame).convertToFormat(QtGui.QImage.Format_RGB32) == to_qimage(frame)
    report["same_pixels"] = bool(same)

    fm = load_face_model()
    mesh = fm.mean[:468].astype(np.float64) * 100 + 200
    image = rng.integers(0, 256, (360, 640, 3), np.uint8)
    views = {}
    for kept in (False, True):
        view = MeshView(fm.triangles)
        if not kept:  # undo the fix on this one: VisPy's own per-mesh colour transform
            del view.mesh._build_color_transform
        view.resize(380, 400)
        view.show()
        view.max_fps = 1e6  # every call draws
        views[kept] = view

    def redraw(view) -> None:
        view.set_mesh(mesh + rng.normal(size=mesh.shape), image)
        view.canvas.native.repaint()
        app.processEvents()

    for view in views.values():
        for _ in range(5):
            redraw(view)
    for _ in range(2):
        for kept, view in views.items():
            report["mesh_redraw_ms_" + ("kept_program" if kept else "rebuilt_program")] = median_ms(
                lambda v=view: redraw(v), 30)
    import os

    report["load_1min"] = round(os.getloadavg()[0], 1)
    print(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
