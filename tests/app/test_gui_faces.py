"""The app's face limit (issue 10, point 10): a visible setting that limits, reports and persists."""
import json
import os
import subprocess
import sys

import cv2

from engine.paths import PROJECT_ROOT


def test_max_faces_control_limits_reports_and_persists(display, dev_dir, tmp_path):
    from engine.evaluation.many_faces import build_mosaic

    m = build_mosaic(dev_dir, 6, 3, 300)  # 18 faces of 300 px on 1800x900
    clip = tmp_path / "faces.mp4"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (m.image.shape[1], m.image.shape[0]))
    for _ in range(50):
        w.write(m.image)
    w.release()
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, "tests/app/gui_faces_driver.py", str(clip), str(out)], cwd=PROJECT_ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["first"] and rep["default_limit"] == 4 and rep["faces_at_default"] == 4
    assert rep["control_visible"]
    assert rep["faces_at_2"] == [2] and rep["status_says_limit"], rep
    assert rep["faces_at_20"] >= 16, rep
    assert rep["saved_limit"] == 20
