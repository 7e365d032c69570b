"""Drives the real window on a video (run by tests/app/test_gui.py in its own process, on Xvfb or offscreen Qt):
plays it, grabs each pane, switches method, turns on compare mode, closes, and reports what it saw as JSON."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app, wait_until  # noqa: E402


def main(video: str, out_dir: str) -> None:
    out = Path(out_dir)
    app, MainWindow = start_app()

    report: dict = {}
    win = MainWindow(source=video, method="mediapipe")
    win.show()
    seen_methods: list[set] = []
    win.bridge.result.connect(lambda res, fps: seen_methods.append(set(res.method_ms)))
    report["played"] = wait_until(app, lambda: win.frames_shown >= 40, 120)
    report["frames_shown"] = win.frames_shown
    report["tracked"] = win.tracked_frames
    report["fps_has_data"] = win.fps_panel.has_data()
    report["table_rows"] = win.fps_panel.table.rowCount()
    win.bridge.set_paused(True)
    wait_until(app, lambda: False, 0.3)
    win.grab().save(str(out / "window.png"))
    win.video.grab().save(str(out / "video.png"))
    win.frontal.grab().save(str(out / "frontal.png"))
    win.fps_panel.grab().save(str(out / "fps.png"))
    import cv2

    mesh = win.mesh_view.canvas.render()
    cv2.imwrite(str(out / "mesh.png"), cv2.cvtColor(mesh, cv2.COLOR_RGBA2BGR))
    report["mesh_frames"] = win.mesh_view.frames_drawn

    # switch method
    present = [n for n, _, p in win.methods if p]
    other = next((n for n in present if n != "mediapipe"), None)
    report["other_method"] = other
    if other:
        win.bridge.set_paused(False)
        seen_methods.clear()
        win.method_box.setCurrentIndex(win.method_box.findData(other))
        report["switched"] = wait_until(app, lambda: any(s == {other} for s in seen_methods), 60)
        # compare mode with both
        for n, a in win.compare_actions.items():
            a.setChecked(n in ("mediapipe", other))
        seen_methods.clear()
        win.act_compare.setChecked(True)
        win.restart()
        report["compared"] = wait_until(app, lambda: any(s == {"mediapipe", other} for s in seen_methods), 60)
        report["grid_views"] = sorted(win.grid_views)
        wait_until(app, lambda: all(v.has_image for v in win.grid_views.values()), 30)
        report["grid_filled"] = all(v.has_image for v in win.grid_views.values())
        win.grab().save(str(out / "compare.png"))
        # export from the GUI, cancelled halfway through the progress dialog
        ticks = []
        worker = win.export("annotate", out=str(out / "export"), formats=["csv", "json"])
        worker.progress.connect(lambda i, n: (ticks.append(i), worker.dialog.cancel() if i >= 10 else None))
        messages = []
        worker.done.connect(messages.append)
        worker.failed.connect(messages.append)
        report["export_finished"] = wait_until(app, lambda: bool(messages), 120)
        report["export_message"] = messages[0] if messages else ""
    win.close()
    wait_until(app, lambda: not win.bridge.running, 10)
    time.sleep(0.5)
    report["threads_left"] = [t.name for t in threading.enumerate() if t.name.startswith("facealign")]
    (out / "report.json").write_text(json.dumps(report))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (C-extension finalisers can abort; see app/main_window.run)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
