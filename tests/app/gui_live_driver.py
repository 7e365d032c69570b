"""Drives the real window through issue 27's compare-mode points in one launch (run by tests/app/test_gui_live.py on
Xvfb): tiles zoomed to the faces and the whole-frame toggle, a method switch that keeps the frame and the pause,
the method box naming the first tile, the provider label, exports with the toolbar's max faces and a cancelled
compare report, max faces redoing a paused frame, the toolbar at 1024x700, the compare menu staying open, and
settings kept between runs. Writes what it saw as JSON plus screenshots."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app, wait_until  # noqa: E402
from app.qt import QtCore, QtWidgets  # noqa: E402


def main(clip: str, out_dir: str, first: str, second: str) -> None:
    out = Path(out_dir)
    app, MainWindow = start_app()
    rep: dict = {}
    win = MainWindow(source=clip, compare=[first, second])
    win.show()
    last: dict = {}
    results: list = []

    def record(res, fps) -> None:
        last["res"] = res
        results.append((res.index, tuple(res.method_ms)))

    win.bridge.result.connect(record)
    rep["played"] = wait_until(app, lambda: win.frames_shown >= 8 and all(v.has_image for v in win.grid_views.values())
                               and "res" in last and last["res"].faces, 120)
    wait_until(app, lambda: False, 0.5)
    res = last["res"]
    h, w = res.image.shape[:2]
    rep["frame_size"] = [w, h]
    rep["region"] = list(res.display.get("region", ()))
    rep["face_boxes"] = [f.box.tolist() for f in res.faces]
    rep["tile_sizes"] = {m: [v.pixmap().width(), v.pixmap().height()] for m, v in win.grid_views.items()}
    rep["view_sizes"] = {m: [v.width(), v.height()] for m, v in win.grid_views.items()}
    rep["compare_label"] = win.compare_label.text()
    rep["method_box"] = win.method_box.currentData()
    win.grab().save(str(out / "compare_zoomed.png"))
    win.grid_views[first].grab().save(str(out / "tile_zoomed.png"))
    win.grid_views[second].grab().save(str(out / "tile_zoomed_second.png"))

    # the whole-frame toggle
    n = len(results)
    win.act_whole.trigger()
    wait_until(app, lambda: len(results) >= n + 3, 30)
    rep["region_whole"] = list(last["res"].display.get("region", ()))
    win.grid_views[first].grab().save(str(out / "tile_whole.png"))
    win.act_whole.trigger()

    # pause, go to a frame, switch the method: same frame, still paused
    win.act_pause.trigger()
    wait_until(app, lambda: win.bridge.paused, 5)
    def chart_end() -> float:
        return max((xs[-1] for xs, _ in win.fps_panel.data.values() if xs), default=0.0)

    x_paused = chart_end()
    wait_until(app, lambda: False, 1.5)
    win.seek_slider.setValue(20)
    rep["at_20"] = wait_until(app, lambda: results and results[-1][0] == 20, 30)
    rep["chart_advance_while_paused_s"] = chart_end() - x_paused
    results.clear()
    win.method_box.setCurrentIndex(win.method_box.findData(second))
    rep["after_switch_shown"] = wait_until(app, lambda: bool(results), 60)
    wait_until(app, lambda: False, 1.5)
    rep["after_switch_indices"] = sorted({i for i, _ in results})
    rep["after_switch_paused"] = [win.bridge.paused, win.act_pause.isChecked()]
    rep["after_switch_grid"] = list(win.grid_views)
    rep["after_switch_mesh_label"] = win.mesh_label.text()
    rep["after_switch_method_box"] = win.method_box.currentData()

    # max faces while paused: the frame is redone
    results.clear()
    win.max_faces.setValue(1)
    rep["max_faces_redone"] = wait_until(app, lambda: bool(results), 30) and results[-1][0] == 20

    # leave compare mode: same frame, still paused, one method; the provider label names its runtime
    results.clear()
    win.act_compare.setChecked(False)
    win.restart()
    wait_until(app, lambda: bool(results), 60)
    wait_until(app, lambda: False, 1.0)
    rep["single_indices"] = sorted({i for i, _ in results})
    rep["single_methods"] = sorted({m for _, ms in results for m in ms})
    rep["single_paused"] = win.bridge.paused
    rep["provider_label"] = win.provider_label.text()

    # exports: the toolbar's max faces; "Export compare" outside compare mode compares the ticked methods and a
    # cancelled one says it is partial
    msgs: list = []
    worker = win.export("annotate", out=str(out / "export"), formats=["json"], force=True)
    worker.progress.connect(lambda i, k: worker.dialog.cancel() if i >= 3 else None)
    worker.done.connect(msgs.append)
    worker.failed.connect(msgs.append)
    wait_until(app, lambda: bool(msgs), 300)
    rep["annotate_message"] = msgs[0] if msgs else ""
    # the same export again without "overwrite": a banner, and no open-file buttons over a playing view
    msgs.clear()
    worker = win.export("annotate", out=str(out / "export"), formats=["json"])
    worker.done.connect(msgs.append)
    worker.failed.connect(msgs.append)
    wait_until(app, lambda: bool(msgs), 180)
    wait_until(app, lambda: False, 0.3)
    rep["exists_message"] = msgs[0] if msgs else ""
    rep["exists_banner_and_buttons"] = [win.banner.isVisible(), win.open_button.isVisible()]
    msgs.clear()
    worker = win.export("compare", out=str(out / "compare_report"), formats=[], force=True)
    rep["compare_export_methods"] = list(worker.methods)
    worker.progress.connect(lambda i, k: worker.dialog.cancel() if i >= 3 else None)
    worker.done.connect(msgs.append)
    worker.failed.connect(msgs.append)
    wait_until(app, lambda: bool(msgs), 300)
    rep["compare_message"] = msgs[0] if msgs else ""

    # 1024x700: the view toggles are on screen, not in an overflow menu
    win.resize(1024, 700)
    wait_until(app, lambda: False, 0.5)
    visible = {}
    for name, act in (("smoothing", win.act_smooth), ("wireframe", win.act_wire), ("texture", win.act_texture),
                      ("whole", win.act_whole)):
        tb = next(t for t in win.toolbars if act in t.actions())
        wdg = tb.widgetForAction(act)
        visible[name] = bool(wdg and wdg.isVisible() and wdg.geometry().right() <= tb.width())
    rep["toggles_visible_1024"] = visible
    rep["window_size_1024"] = [win.width(), win.height()]
    win.grab().save(str(out / "window_1024.png"))

    # the compare menu stays open while methods are ticked
    from PySide6.QtTest import QTest

    btn = next(wdg for wdg in win.toolbars[0].findChildren(QtWidgets.QToolButton) if wdg.menu() is win.compare_menu)
    win.compare_menu.popup(btn.mapToGlobal(btn.rect().bottomLeft()))
    wait_until(app, lambda: win.compare_menu.isVisible(), 5)
    act = next(a for n, a in win.compare_actions.items() if a.isEnabled() and n not in (first, second))
    before = act.isChecked()
    QTest.mouseClick(win.compare_menu, QtCore.Qt.LeftButton, QtCore.Qt.NoModifier,
                     win.compare_menu.actionGeometry(act).center())
    wait_until(app, lambda: False, 0.3)
    rep["menu_open_after_tick"] = win.compare_menu.isVisible()
    rep["menu_ticked"] = act.isChecked() != before
    win.compare_menu.hide()

    # a still image: the overlay names the method and its time, no "shown FPS"
    import cv2

    cap = cv2.VideoCapture(clip)
    _, still = cap.read()
    cap.release()
    cv2.imwrite(str(out / "still.png"), still)
    results.clear()
    win.open_source(str(out / "still.png"))
    wait_until(app, lambda: bool(results) and "label" in last["res"].display, 60)
    rep["still_label"] = last["res"].display.get("label", "")
    win.video.grab().save(str(out / "still_view.png"))

    # settings kept between runs: texture off, the compare selection
    win.act_texture.setChecked(False)
    ticked = sorted(n for n, a in win.compare_actions.items() if a.isChecked())
    rep["ticked_before_close"] = ticked
    win.close()
    wait_until(app, lambda: not win.bridge.running, 10)
    win2 = MainWindow(source=str(out / "no_such_file.mp4"))
    rep["texture_after_reopen"] = win2.act_texture.isChecked()
    rep["ticked_after_reopen"] = sorted(n for n, a in win2.compare_actions.items() if a.isChecked())
    win2.close()
    (out / "live.json").write_text(json.dumps(rep))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(*sys.argv[1:])
