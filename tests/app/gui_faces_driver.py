"""Drives the real window on a looping many-face clip (run by tests/app/test_gui_faces.py in its own process):
the toolbar's "max faces" control must limit the tracked faces live, say so in the status bar, and be kept in the
settings. Writes report.json and screenshots."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gui_common import start_app, wait_until  # noqa: E402
from app.qt import QtCore  # noqa: E402


def main(video: str, out_dir: str) -> None:
    out = Path(out_dir)
    app, MainWindow = start_app()

    faces: list[int] = []
    report: dict = {}
    win = MainWindow(source=video, method="baseline")
    win.show()
    win.bridge.result.connect(lambda res, fps: faces.append(len(res.faces)))
    report["default_limit"] = win.max_faces.value()
    wait_until(app, lambda: False, 0.5)
    report["control_visible"] = win.max_faces.isVisible()  # not hidden in a toolbar's overflow menu
    report["first"] = wait_until(app, lambda: len(faces) >= 5, 120)
    report["faces_at_default"] = max(faces) if faces else 0
    win.max_faces.setValue(2)
    faces.clear()
    wait_until(app, lambda: len(faces) >= 15, 120)
    report["faces_at_2"] = sorted(set(faces[3:]))
    report["status_at_2"] = win.status_label.text()
    win.grab().save(str(out / "limit2.png"))
    win.max_faces.setValue(20)
    faces.clear()
    wait_until(app, lambda: len(faces) >= 60 and max(faces) >= 15, 180)
    report["faces_at_20"] = max(faces) if faces else 0
    win.grab().save(str(out / "limit20.png"))
    win.close()
    app.processEvents()
    s = QtCore.QSettings("FaceAlign", "FaceAlign Studio")
    report["saved_limit"] = int(s.value("max_faces", -1))
    m = re.search(r"limit (\d+): (\d+) more detected", report["status_at_2"])
    report["status_says_limit"] = bool(m and m.group(1) == "2" and int(m.group(2)) > 0)
    (out / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
