"""Drives the real window through issue 10's points in one launch (run by tests/app/test_gui.py on Xvfb): default
method, keys with the focus anywhere and after a dialog, folder browsing and export, the video's real length, no
stale state, grid order and labels, export feedback, the compare report pausing the live view, and the key
response in compare mode. Writes what it saw as JSON plus screenshots."""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app, wait_until as _wait_until  # noqa: E402
from app.qt import QtCore, QtWidgets  # noqa: E402


def wait_until(app, cond, timeout: float) -> bool:
    return _wait_until(app, cond, timeout, poll=0.005)


def post_key(app, key) -> None:
    """A key press as the window system delivers it: to whatever widget has the focus, through the event queue
    (so it waits behind whatever the GUI thread has queued, as a real key press does)."""
    target = app.focusWidget() or app.activeWindow()
    for kind in (QtCore.QEvent.KeyPress, QtCore.QEvent.KeyRelease):
        from PySide6.QtTest import QTest

        if kind == QtCore.QEvent.KeyPress:
            QTest.keyPress(target, key)
        else:
            QTest.keyRelease(target, key)


KEY_EVENT = QtCore.QEvent.Type(QtCore.QEvent.registerEventType())


class KeyPresser(QtCore.QObject):
    """Presses ``key`` on the focused widget when its posted event comes up in the GUI thread's queue: the
    measured delay includes any backlog of queued results, as a real key press would wait behind them."""

    def __init__(self, app, key) -> None:
        super().__init__()
        self.app, self.key = app, key

    def event(self, ev) -> bool:
        if ev.type() == KEY_EVENT:
            from PySide6.QtTest import QTest

            QTest.keyClick(self.app.focusWidget() or self.app.activeWindow(), self.key)
            return True
        return super().event(ev)


def main(video: str, folder: str, out_dir: str) -> None:
    out = Path(out_dir)
    app, MainWindow = start_app()

    rep: dict = {}
    seen: list = []
    win = MainWindow(source=video)  # no method given, fresh settings: the default method
    win.bridge.result.connect(lambda res, fps: seen.append((res.index, tuple(res.method_ms), res.name)))
    win.show()
    win.activateWindow()
    rep["default_method"] = win.method_box.currentData()
    rep["played"] = wait_until(app, lambda: win.frames_shown >= 5, 60)
    rep["video_slider_max"] = win.seek_slider.maximum()

    # ---- 11: toolbar at the default width ---------------------------------------------------------------------
    rep["window_width"] = win.width()
    tb2 = win.toolbars[1]
    w = tb2.widgetForAction(win.act_export_compare)
    rep["export_compare_visible"] = bool(w and w.isVisible() and w.geometry().right() <= tb2.width())

    # ---- 2: keys with the focus in the camera spin box, and after a dialog ------------------------------------
    win.camera_index.setFocus()
    wait_until(app, lambda: False, 0.2)
    rep["focus_at_start"] = type(app.focusWidget()).__name__
    keys = {}
    for name, key, act in (("space", QtCore.Qt.Key_Space, win.act_pause), ("s", QtCore.Qt.Key_S, win.act_smooth),
                           ("w", QtCore.Qt.Key_W, win.act_wire)):
        before = act.isChecked()
        post_key(app, key)
        wait_until(app, lambda: act.isChecked() != before, 2)
        keys[name] = act.isChecked() != before
        post_key(app, key)  # and back
        wait_until(app, lambda: act.isChecked() == before, 2)
    rep["keys_in_spinbox"] = keys
    # a dialog opens and closes (Cancel): the keys still work, and the cancellation is shown
    QtCore.QTimer.singleShot(300, lambda: win.export_dialog.reject())
    win.export("annotate")
    wait_until(app, lambda: False, 0.2)
    rep["focus_after_dialog"] = type(app.focusWidget()).__name__ if app.focusWidget() else None
    before = win.act_wire.isChecked()
    post_key(app, QtCore.Qt.Key_W)
    rep["key_after_dialog"] = wait_until(app, lambda: win.act_wire.isChecked() != before, 2)
    post_key(app, QtCore.Qt.Key_W)
    rep["cancel_notice"] = win.notice.text() if win.notice.isVisible() else ""
    # empty folder field: the dialog says so and stays open
    def press_ok_empty():
        dlg = win.export_dialog
        dlg.folder.setText("")
        dlg.findChild(QtWidgets.QDialogButtonBox).button(QtWidgets.QDialogButtonBox.Ok).click()
        rep["empty_folder_dialog_open"] = dlg.isVisible()
        rep["empty_folder_message"] = dlg.problem.text() if dlg.problem.isVisible() else ""
        dlg.grab().save(str(out / "export_dialog_empty.png"))
        dlg.reject()

    QtCore.QTimer.singleShot(300, press_ok_empty)
    win.export("annotate")

    # ---- 4: the video's real length: seek past a third keeps playing; export progress reaches the end ------
    seen.clear()
    win.seek_slider.setValue(40)
    rep["after_seek_indices"] = wait_until(app, lambda: any(i >= 45 for i, _, _ in seen), 20) and \
        wait_until(app, lambda: any(i < 10 for i, _, _ in seen[-5:]), 20)  # on to the end, then loops to 0
    ticks: list = []
    msgs: list = []
    worker = win.export("annotate", out=str(out / "video_export"), formats=["json"])
    worker.progress.connect(lambda i, n: ticks.append((i, n)))
    worker.done.connect(msgs.append)
    worker.failed.connect(msgs.append)
    rep["progress_dialog_visible_at_start"] = worker.dialog.isVisible()
    wait_until(app, lambda: bool(msgs), 120)
    rep["video_export_last_progress"] = ticks[-1] if ticks else None
    rep["video_export_message"] = msgs[0] if msgs else ""
    rep["dialog_max_value"] = [worker.dialog.maximum(), worker.dialog.value()]
    wait_until(app, lambda: False, 1.0)  # frames keep coming: the notice must survive them
    rep["notice_after_frames"] = win.notice.text() if win.notice.isVisible() else ""
    # again without "overwrite": the message names the checkbox
    msgs.clear()
    worker = win.export("annotate", out=str(out / "video_export"), formats=["json"])
    worker.done.connect(msgs.append)
    worker.failed.connect(msgs.append)
    wait_until(app, lambda: bool(msgs), 120)
    rep["overwrite_message"] = msgs[0] if msgs else ""

    # ---- 11 + 7: compare in a given order, then back to one method ----------------------------------------
    present = [n for n, _, p in win.methods if p]
    order = sorted(present, reverse=True)[:3] if len(present) >= 2 else present
    rep["compare_order_given"] = order
    for n, a in win.compare_actions.items():
        a.blockSignals(True)
        a.setChecked(n in order)
        a.blockSignals(False)
    win.compare_order = order
    seen.clear()
    win.act_compare.setChecked(True)
    win.restart()
    wait_until(app, lambda: all(v.has_image for v in win.grid_views.values()) and len(seen) > 3, 60)
    grid = []
    for i in range(len(order)):
        item = win.grid.itemAtPosition(i // win.grid_cols, i % win.grid_cols)
        grid.append(item.widget().toolTip() or [m for m, v in win.grid_views.items() if v is item.widget()][0])
    rep["grid_order"] = grid
    rep["mesh_label"] = win.mesh_label.text()
    rep["frontal_label"] = win.frontal_label.text()
    rep["legend_compare"] = win.fps_panel.legend_names()
    rep["speed_headers"] = [win.fps_panel.table.horizontalHeaderItem(c).text() for c in range(3)]
    rep["speed_rates"] = win.fps_panel.rates.text()
    win.grab().save(str(out / "compare.png"))

    # ---- 9: key response in compare mode (every method): a posted key's effect, time until it shows -------
    for n, a in win.compare_actions.items():
        a.blockSignals(True)
        a.setChecked(a.isEnabled())
        a.blockSignals(False)
    win.compare_order = []
    win.restart()
    wait_until(app, lambda: win.frames_shown >= 10, 60)
    lat = []
    presser = KeyPresser(app, QtCore.Qt.Key_W)
    for k in range(12):
        wait_until(app, lambda: False, 0.15 + 0.05 * (k % 3))
        before = win.act_wire.isChecked()
        t0 = time.perf_counter()
        app.postEvent(presser, QtCore.QEvent(KEY_EVENT))  # queued behind whatever results are pending
        # the effect is shown once the GUI thread has handled the key and repainted: wait for the toggle
        while win.act_wire.isChecked() == before and time.perf_counter() - t0 < 3:
            app.processEvents(QtCore.QEventLoop.AllEvents, 5)
        lat.append((time.perf_counter() - t0) * 1000)
    rep["key_latency_ms"] = lat
    rep["key_latency_median_ms"] = statistics.median(lat)
    rep["compare_methods_for_latency"] = list(win.grid_views)

    # ---- 11: the compare report does not time methods while the live view runs -----------------------------
    msgs.clear()
    paused_during = []
    worker = win.export("compare", out=str(out / "compare_report"), formats=[])
    worker.progress.connect(lambda i, n: paused_during.append(win.bridge.paused))
    worker.done.connect(msgs.append)
    worker.failed.connect(msgs.append)
    wait_until(app, lambda: bool(msgs), 300)
    rep["compare_export_message"] = msgs[0] if msgs else ""
    rep["live_paused_during_compare_export"] = bool(paused_during) and all(paused_during)
    rep["live_resumed_after"] = not win.bridge.paused

    # ---- 7: leave compare mode: the legend names only the method now shown ---------------------------------
    win.act_compare.setChecked(False)
    seen.clear()
    win.restart()
    wait_until(app, lambda: len(seen) > 8, 60)
    rep["legend_single"] = win.fps_panel.legend_names()
    rep["single_method"] = win.method_box.currentData()
    # switch method: nothing of the old pipeline arrives afterwards
    other = next(n for n in present if n != win.method_box.currentData())
    seen.clear()
    statuses = []
    orig_status = win.status
    win.status = lambda text: (statuses.append(text), orig_status(text))
    win.method_box.setCurrentIndex(win.method_box.findData(other))
    wait_until(app, lambda: len(seen) > 5, 60)
    rep["after_switch_methods"] = sorted({m for _, ms, _ in seen for m in ms})
    rep["after_switch_statuses_old"] = [t for t in statuses if "finished" in t]
    win.status = orig_status

    # ---- 3: a folder is browsed -------------------------------------------------------------------------------
    opened = []
    orig = QtWidgets.QFileDialog.getExistingDirectory
    QtWidgets.QFileDialog.getExistingDirectory = staticmethod(lambda *a, **k: (opened.append(True), folder)[1])
    seen.clear()
    win.open_folder_button.click()  # the start screen's folder button picks a folder
    QtWidgets.QFileDialog.getExistingDirectory = orig
    rep["folder_dialog_used"] = bool(opened)
    n_images = len([f for f in os.listdir(folder) if f.endswith(".jpg") or f.endswith(".png")])
    rep["folder_images"] = n_images
    wait_until(app, lambda: len(seen) >= 1, 60)
    wait_until(app, lambda: False, 1.0)
    rep["folder_first"] = [i for i, _, _ in seen]
    rep["folder_paused"] = win.act_pause.isChecked()
    rep["folder_slider"] = [win.seek_slider.isEnabled(), win.seek_slider.maximum()]
    seen.clear()
    post_key(app, QtCore.Qt.Key_Right)
    wait_until(app, lambda: bool(seen), 20)
    rep["after_next"] = [i for i, _, _ in seen]
    seen.clear()
    win.seek_slider.setValue(n_images - 3)
    wait_until(app, lambda: bool(seen), 20)
    rep["after_slider"] = [i for i, _, _ in seen]
    seen.clear()
    post_key(app, QtCore.Qt.Key_Left)
    wait_until(app, lambda: bool(seen), 20)
    rep["after_prev"] = [i for i, _, _ in seen]
    # the last image has no face: the side panes must not keep the previous face
    seen.clear()
    win.seek_slider.setValue(n_images - 1)
    wait_until(app, lambda: bool(seen), 20)
    wait_until(app, lambda: False, 0.3)
    rep["noface_index"] = [i for i, _, _ in seen]
    rep["noface_mesh_visible"] = bool(win.mesh_view.mesh.visible)
    rep["noface_frontal_has_image"] = win.frontal.has_image
    win.grab().save(str(out / "folder_noface.png"))
    # play: every image from the start is processed and shown, in order, and it stays on the last
    win.seek_slider.setValue(0)
    wait_until(app, lambda: False, 1.0)
    seen.clear()
    post_key(app, QtCore.Qt.Key_Space)
    wait_until(app, lambda: any(i == n_images - 1 for i, _, _ in seen), 120)
    wait_until(app, lambda: False, 1.0)
    rep["played_indices"] = [i for i, _, _ in seen]
    rep["still_running_at_end"] = win.bridge.running
    win.grab().save(str(out / "folder.png"))
    msgs.clear()
    worker = win.export("annotate", out=str(out / "folder_export"), formats=["json", "csv"])
    worker.done.connect(msgs.append)
    worker.failed.connect(msgs.append)
    wait_until(app, lambda: bool(msgs), 120)
    rep["folder_export_message"] = msgs[0] if msgs else ""

    # ---- 7: a failed open clears the previous frame ------------------------------------------------------------
    win.open_source(str(out / "missing.mp4"))
    wait_until(app, lambda: False, 0.3)
    rep["failed_open_banner"] = win.banner.text() if win.banner.isVisible() else ""
    rep["failed_open_has_image"] = win.video.has_image or any(v.has_image for v in win.grid_views.values())
    win.grab().save(str(out / "failed_open.png"))

    win.close()
    wait_until(app, lambda: not win.bridge.running, 10)
    (out / "checks.json").write_text(json.dumps(rep, indent=1))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
