"""The app's 'Flip avg' toggle on the real window under Xvfb (tests/app/gui_flip_driver.py)."""
import json
import os
import subprocess
import sys

import pytest

from engine.paths import PROJECT_ROOT, weights_path


def test_flip_toggle_shows_its_cost(display, dev_dir, tmp_path):
    video = dev_dir.parent / "video" / "obama.mp4"
    if not video.exists():
        pytest.skip(f"{video} missing")
    if not weights_path("baseline.onnx").exists():
        pytest.skip("baseline has no weights")
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "config"), DISPLAY=display, QT_QPA_PLATFORM="xcb")
    p = subprocess.run([sys.executable, "tests/app/gui_flip_driver.py", str(video), "baseline", str(tmp_path)],
                       cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["played"] and rep["plain"]["flip_ms"] is None and "flip" not in rep["status_plain"]
    assert rep["flip_checked"] and rep["flipped"], rep
    # the cost of the mirrored pass: a stage of its own in the frame's timings, the result's and the status bar
    assert rep["flip"]["flip_ms"] > 0 and rep["flip"]["result_flip_ms"] > 0
    assert " flip " in rep["status_flip"]
    # the speed panel says the latency it shows includes flip averaging
    assert any("flip avg" in " ".join(row) for row in rep["panel_rows"]), rep["panel_rows"]
    assert rep["unflipped"] and rep["threads_left"] == []
